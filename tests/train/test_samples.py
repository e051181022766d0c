"""`sample_rows`: the rows `--train.log_samples` writes, against a hand-worked rollout."""

import torch
from rairl.kernels.segments import StepRule

from rairl.airl.layout import action_layout
from rairl.models.batch import collate
from rairl.train.samples import sample_rows

NL = 9  # the step boundary token


class Spelled:
    """A tokenizer whose decode spells the ids (skipping the pad id 0 when asked)."""

    def decode(self, ids, skip_special_tokens=False):
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return " ".join(str(i) for i in ids if not (skip_special_tokens and i == 0))


def test_rows_round_robin_over_groups_with_each_actions_text_reward_and_advantage():
    prompts = [[5, 6], [5, 6], [7], [7]]  # two groups of two samples
    completions = [[1, NL, 2, 3], [4], [2, NL, 3, NL], [8, 8]]
    batch = collate(prompts, completions, pad_id=0)
    layout = action_layout(batch, StepRule("boundary", boundary_ids=[NL]))
    # actions: row 0 "1 9" | "2 3"; row 1 "4"; row 2 "2 9" | "3 9"; row 3 "8 8"
    assert layout.cu_actions.tolist() == [0, 2, 3, 5, 6]
    rewards = torch.tensor([0.5, -1.0, 2.0, 0.25, 0.75, -0.5])
    T = batch.input_ids.shape[1]
    advantages = torch.zeros(4, T)
    advantages[0, 2:4], advantages[0, 4:6] = 1.5, -2.0  # row 0: prompt of 2, then its two actions
    advantages[2, 1:3], advantages[2, 3:5] = 3.0, 4.0  # row 2: prompt of 1
    rows = sample_rows(Spelled(), batch, layout, rewards, advantages, group_size=2, n=3, iteration=7)
    assert [r["prompt"] for r in rows] == ["5 6", "7", "5 6"]  # rows 0, 2, then 1
    assert [r["completion"] for r in rows] == ["1 9 2 3", "2 9 3 9", "4"]
    assert [r["step_texts"] for r in rows] == [["1 9", "2 3"], ["2 9", "3 9"], ["4"]]
    assert [r["step_rewards"] for r in rows] == [[0.5, -1.0], [0.25, 0.75], [2.0]]
    assert [r["step_advantages"] for r in rows] == [[1.5, -2.0], [3.0, 4.0], [0.0]]
    assert [r["reward"] for r in rows] == [-0.5, 1.0, 2.0]
    assert all(r["iteration"] == 7 for r in rows)
    assert len(sample_rows(Spelled(), batch, layout, rewards, advantages, group_size=2, n=10, iteration=7)) == 4
