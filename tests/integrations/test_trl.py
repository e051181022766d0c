"""The R-AIRL reward drives TRL's GRPOTrainer for two steps on a tiny model."""

import pytest
import torch

trl = pytest.importorskip("trl", reason="the trl integration needs: pip install 'rairl[trl]'")
datasets = pytest.importorskip("datasets")

from rairl.integrations.trl import RAIRLReward  # noqa: E402
from rairl.models.reward import RewardModel  # noqa: E402
from rairl.models.tokenizer import format_prompt  # noqa: E402
from rairl.score import RewardScorer, select  # noqa: E402


def test_adapter_scores_the_given_ids(tiny):
    tokenizer, lm = tiny
    scorer = RewardScorer(RewardModel(lm), tokenizer)
    reward = RAIRLReward(scorer, selector="sum")
    prompt = format_prompt("Tom has 3 pens. Tom gets 2 more.")
    ids = [tokenizer("3 + 2 = 5\n#### 5", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id], [9, 10]]
    got = reward(prompts=[prompt, prompt], completions=["ignored", "ignored"], completion_ids=ids)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    want = [select(s, "sum") for s in scorer.score_ids([p_ids, p_ids], ids)]
    assert got == pytest.approx(want) and len(got) == 2 and got[0] != got[1]
    with pytest.raises(ValueError, match="selector"):
        RAIRLReward(scorer, selector="median")


def test_grpo_trainer_runs_two_steps_with_the_reward(tiny, tmp_path):
    tokenizer, lm = tiny
    reward = RAIRLReward(RewardScorer(RewardModel(lm), tokenizer), selector="sum")
    policy = type(lm).from_pretrained(lm.name_or_path)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    questions = ["Tom has 3 pens. Tom gets 2 more.", "Mia has 8 coins. Mia gives away 5.",
                 "Ben has 4 cards. The number of cards doubles.", "Zoe has 9 books. Zoe gets 1 more."]
    dataset = datasets.Dataset.from_dict({"prompt": [format_prompt(q) for q in questions]})
    args = trl.GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_completion_length=12,
        max_steps=2, learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        bf16=False, disable_tqdm=True,
    )
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    logged = [row for row in trainer.state.log_history if "reward" in row]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(row["reward"])) for row in logged)
    assert any(not torch.equal(v, before[k]) for k, v in policy.state_dict().items())
