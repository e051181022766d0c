"""Some arms of one seed again, from the SFT-ES and reward an earlier `rairl compare --protocol scarce|length` built.

    python benchmarks/probes/rerun_arms.py --run runs/tune_d500b --seed 0 --out runs/e1 \
        --methods sft_es,rft_reward,rft_reward_steps,rft_majority

Copies `RUN/seedS/{sft_es/es.json, sft_es/policy, reward, shared.json}` into `OUT/seedS` (a new folder) and
runs the arms there with today's code and RUN's config (`rairl.train.protocol.run_protocol_seed`), changed
by any `rairl compare` option given (`--methods`: the arms, default RUN's; `--scarce.rft.lr 1e-4`: the rounds'
rate, still capped by `arm_lr`): the
shared stages are read back, so only the arms cost time. Prints each arm's pass@1 (T = 1 and V-tuned T).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from rairl.cli import add_config_options, build_config
from rairl.commands.compare import CompareConfig
from rairl.configs import config_from_dict
from rairl.train.protocol import run_protocol_seed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True, help="a new folder")
    add_config_options(ap, CompareConfig)
    ap.set_defaults(config=None)  # build_config's --config file: RUN's config.json is the base instead
    args = ap.parse_args()

    src, dst = Path(args.run) / f"seed{args.seed}", Path(args.out) / f"seed{args.seed}"
    if Path(args.out).exists():
        raise SystemExit(f"--out {args.out}: exists; give a new folder")
    (dst / "sft_es").mkdir(parents=True)
    shutil.copy(src / "sft_es" / "es.json", dst / "sft_es" / "es.json")
    shutil.copytree(src / "sft_es" / "policy", dst / "sft_es" / "policy")
    shutil.copytree(src / "reward", dst / "reward")
    shutil.copy(src / "shared.json", dst / "shared.json")
    cfg = build_config(CompareConfig, config_from_dict(CompareConfig, json.loads((Path(args.run) / "config.json").read_text())), args)
    _, results = run_protocol_seed(cfg.protocol, cfg.scarce, cfg.task, cfg.warm, cfg.eval.problems, cfg.eval.samples, args.seed,
                                   cfg.methods, dst, cfg.torch_device(), cfg.torch_dtype(), progress=True)
    for arm, m in results.items():
        print(f"{arm}: pass@1 {m['pass1']:.4f} at T = 1, {m['pass1_tuned_T']:.4f} at T = {m['tuned_T']} (V-tuned); "
              f"checkpoint {m['train'].get('best_round', m['train'].get('best_step'))}; lr {m['train']['lr']:.2g}; {m['seconds']:.0f} s")


if __name__ == "__main__":
    main()
