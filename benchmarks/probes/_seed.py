"""What the protocol probes read from one seed of a `rairl compare --protocol scarce|length` folder."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rairl.configs import config_from_dict
from rairl.data.protocols import GoldKey, ProtocolData, protocol_data
from rairl.models.batch import encode_prompts
from rairl.models.lm import load_causal_lm
from rairl.models.sampling import sample_completions
from rairl.train.warm_start import WarmStart, load_warm_start


@dataclass
class ProbeSeed:
    seed: int
    cfg: object  # the run's CompareConfig
    data: ProtocolData
    gold: GoldKey  # U's answers: read to measure, never to train
    warm: WarmStart  # the reward trained against SFT-ES
    policy: PreTrainedModel  # SFT-ES
    tok: PreTrainedTokenizerBase
    questions: list[str]  # B unlabelled questions, drawn as the probes draw them
    prompts: list[list[int]]  # their prompt ids

    def sample(self, n: int) -> list[list[list[int]]]:
        """N samples per question (temperature 1), as an rft round draws them."""
        return sample_completions(self.policy, self.prompts, n_samples=n, max_new_tokens=self.cfg.scarce.rft.max_new_tokens,
                                  eos_id=self.tok.eos_token_id, pad_id=self.tok.pad_token_id, seed=self.seed * 1000 + 1, progress=False)


def load_seed(run: str | Path, seed: int, n_questions: int) -> ProbeSeed:
    """SFT-ES, the reward, the sets and `n_questions` of U (drawn by `seed`) of `run`'s seed folder."""
    from rairl.commands.compare import CompareConfig

    cfg = config_from_dict(CompareConfig, json.loads((Path(run) / "config.json").read_text()))
    seed_dir = Path(run) / f"seed{seed}"
    data, gold = protocol_data(cfg.protocol, seed, cfg.scarce.split, cfg.task, cfg.eval.problems)
    warm = load_warm_start(seed_dir / "reward")
    questions = random.Random(seed).sample(list(data.unlabelled), min(n_questions, len(data.unlabelled)))
    return ProbeSeed(seed, cfg, data, gold, warm, load_causal_lm(seed_dir / "sft_es" / "policy"), warm.tokenizer, questions,
                     encode_prompts(warm.tokenizer, questions, cfg.warm.max_prompt_tokens))
