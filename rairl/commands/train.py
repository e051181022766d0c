"""`rairl train`: post-train a policy with the learned reward (or a baseline), on the embedded task or on
your own policy and files (`--policy PATH --demos FILE --prompts FILE [--reward DIR] [--eval_data FILE]`).

    warm start (once, saved under OUT/warm or shared through `--warm DIR`)
    -> `train.method` to the token budget: R-AIRL (`airl`), `frozen` reward, `outcome` GRPO, more `sft`
    -> held-out evaluation: pass@1, pass@k, completion length, format validity

The run itself is `rairl.train.run.post_train`; `--resume DIR` continues a killed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..configs import config_from_dict, load_config_file
from ..models.lm import checked_path
from ..train.run import RunConfig, UserData, post_train, quick_run_config
from ..train.warm_start import check_template


@dataclass(frozen=True)
class TrainRunConfig(RunConfig, UserData):
    """`rairl train`: warm start, one post-training method, evaluation."""

    seed: int = 0  # task splits (or the demonstrations' shuffle), tiny policy initialisation, the warm start's sampling seeds

    def __post_init__(self) -> None:
        RunConfig.__post_init__(self)
        UserData.__post_init__(self)
        if not self.policy:
            check_template(self.warm, None)  # the embedded task's tiny policy (a given one is checked by run_data)


def quick_train_config(method: str = "airl") -> TrainRunConfig:
    """A seconds-long preset for tests: every stage runs, nothing learns much."""
    return TrainRunConfig(**vars(quick_run_config(method)))


def run_train(cfg: TrainRunConfig, out: Path, warm_dir: Path | None = None, resume: bool = False, progress: bool = True,
              overwrite: bool = False) -> dict:
    """`post_train` with the command's seed; writes `out/metrics.json` and returns it. A `warm_dir` given
    must hold a finished warm start (a mistyped one is refused, never built afresh)."""
    if warm_dir is not None:
        checked_path(warm_dir, "--warm", ("warm.json",), "warm start", hub=False)
    run = RunConfig(**{k: getattr(cfg, k) for k in RunConfig.__dataclass_fields__})
    data = UserData(**{k: getattr(cfg, k) for k in UserData.__dataclass_fields__})
    return post_train(run, cfg.seed, out, warm_dir, resume=resume, progress=progress, data=data, overwrite=overwrite)


def resume_config(out: Path) -> TrainRunConfig:
    """The config a run in `out` was started with (its `config.json`, for `--resume`)."""
    path = out / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; is {out} a `rairl train` output directory?")
    try:
        return config_from_dict(TrainRunConfig, load_config_file(path))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a config this rairl can resume ({e}); start a new run in another directory") from e
