"""The `rairl` command. It parses arguments and calls the library; nothing else lives here.

Options come from the config dataclasses (one definition of every default):
`--sft.steps 300` sets `DemoConfig.sft.steps`. `--config FILE.json` loads a
(nested) JSON object of the same fields first; command-line options override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from transformers.utils import logging as hf_logging

from . import commands
from .compare import CompareConfig, quick_compare_config
from .configs import config_from_dict, resolve_types
from .demo import DemoConfig, quick_config, results_table
from .posttrain import TrainRunConfig, quick_run_config


def _flatten(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type if isinstance(f.type, type) else None):
            out += _flatten(f.type, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, f))
    return out


def add_config_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--a.b` option per leaf field of the (nested) config dataclass `cls`."""
    resolve_types(cls)
    group = parser.add_argument_group(f"{cls.__name__} fields (defaults from the dataclass)")
    for name, f in _flatten(cls):
        kind = f.type
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        if kind is bool:
            group.add_argument(*flags, dest=name, type=lambda s: s.lower() in ("1", "true", "yes"), default=None, metavar="BOOL")
        elif kind in (int, float, str):
            group.add_argument(*flags, dest=name, type=kind, default=None)
        elif str(kind).startswith("tuple"):
            group.add_argument(*flags, dest=name, type=lambda s: tuple(s.split(",")), default=None, metavar="A,B,...")


def build_config(cls: type, base: Any, args: argparse.Namespace, config_file: str | None) -> Any:
    """`base` overridden by the JSON config file, then by explicit command-line options."""
    tree = dataclasses.asdict(base)
    if config_file:
        try:
            _merge(tree, json.loads(Path(config_file).read_text()), config_file)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{config_file}:{e.lineno}: not valid JSON: {e.msg}") from e
    for name, _ in _flatten(cls):
        value = getattr(args, name, None)
        if value is not None:
            node = tree
            *parents, leaf = name.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
    return config_from_dict(cls, tree)


def _merge(tree: dict, update: dict, source: str, path: str = "") -> None:
    for k, v in update.items():
        if k not in tree:
            raise SystemExit(f"{source}: unknown field '{path}{k}'")
        if isinstance(tree[k], dict):
            if not isinstance(v, dict):
                raise SystemExit(f"{source}: field '{path}{k}' must be an object")
            _merge(tree[k], v, source, f"{path}{k}.")
        else:
            tree[k] = v


def _demo(args: argparse.Namespace) -> int:
    base = quick_config() if args.quick else DemoConfig()
    cfg = build_config(DemoConfig, base, args, args.config)
    from .demo import run_demo

    metrics = run_demo(cfg, args.out, progress=not args.no_progress)
    print(results_table(metrics))
    print(f"metrics: {Path(args.out) / 'metrics.json'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .posttrain import resume_config, run_train

    if args.resume:
        out = Path(args.resume)
        metrics = run_train(resume_config(out), out, Path(args.warm) if args.warm else None, resume=True, progress=not args.no_progress)
    else:
        base = quick_run_config() if args.quick else TrainRunConfig()
        cfg = build_config(TrainRunConfig, base, args, args.config)
        out = Path(args.out)
        metrics = run_train(cfg, out, Path(args.warm) if args.warm else None, progress=not args.no_progress)
    print(f"{metrics['method']}: pass@1 {metrics['pass1']:.3f}  pass@{metrics['k']} {metrics['passk']:.3f}  "
          f"mean length {metrics['mean_len']:.1f}  format-valid {metrics['format_valid']:.3f}  "
          f"({metrics['tokens_trained']} policy tokens trained on)\nmetrics: {out / 'metrics.json'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .compare import results_markdown, run_compare

    cfg = build_config(CompareConfig, quick_compare_config() if args.quick else CompareConfig(), args, args.config)
    metrics = run_compare(cfg, args.out, progress=not args.no_progress)
    print(results_markdown(metrics))
    print(f"metrics: {Path(args.out) / 'metrics.json'}")
    return 0


def _config_command(sub, name: str, func, cls: type, help: str, out_default: str, out_help: str,
                    quick_help: str) -> argparse.ArgumentParser:
    """A subcommand run from one config dataclass: --out, --quick, --config, --no-progress and
    one option per config field."""
    parser = sub.add_parser(name, help=help)
    parser.add_argument("--out", default=out_default, help=out_help)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--config", help=f"JSON file of {cls.__name__} fields")
    parser.add_argument("--no-progress", action="store_true")
    add_config_options(parser, cls)
    parser.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rairl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    _config_command(sub, "demo", _demo, DemoConfig, "learn a reasoning reward on the embedded task and evaluate it",
                    "runs/demo", "output directory (metrics.json, models)", "a seconds-long smoke run (tests use it)")
    train = _config_command(sub, "train", _train, TrainRunConfig,
                            "post-train the policy with the learned reward (R-AIRL) or a baseline, then evaluate",
                            "runs/train", "output directory (checkpoints, train_log.jsonl, metrics.json)",
                            "a seconds-long smoke run (tests use it)")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint (its config.json)")
    train.add_argument("--warm", metavar="DIR", help="a finished warm start to reuse (default: OUT/warm, made if missing)")
    _config_command(sub, "compare", _compare, CompareConfig,
                    "R-AIRL vs SFT, outcome GRPO and a frozen reward on the embedded task, several seeds",
                    "runs/compare", "output directory (metrics.json, results.md, curves.png, runs)",
                    "a minutes-long smoke run (tests use it)")
    commands.register(sub)
    args = parser.parse_args(argv)
    hf_logging.disable_progress_bar()  # per-file load/save bars would drown the commands' own
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"rairl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
