"""The `rairl` command: all of its argparse. It parses arguments and calls the library; nothing else lives here.

Every subcommand is one frozen config dataclass, and its options are generated from it (one
definition of every default and every help text): `--warm.sft.lr 1e-3` sets
`DemoConfig.warm.sft.lr`. `--config FILE` (JSON, or YAML for .yaml / .yml) loads a nested
object of the same fields first; command-line options override it. A field with no default
is a required option.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.distributed.checkpoint.api import CheckpointException
from transformers.utils import logging as hf_logging

from .commands.compare import CompareConfig, quick_compare_config, results_markdown, run_compare
from .commands.demo import DemoConfig, quick_config, results_table, run_demo
from .commands.files import (
    LocaliseConfig,
    RerankConfig,
    ScoreConfig,
    TrainRewardConfig,
    ViewConfig,
    localise_command,
    plan_command,
    rerank_command,
    score_command,
    train_reward_command,
    view_command,
)
from .commands.train import TrainRunConfig, quick_train_config, resume_config, run_train
from .configs import (
    config_from_dict,
    defaults_tree,
    field_help,
    load_config_file,
    resolve_types,
    typed_value,
)
from .dist import finish_dist
from .plan import PRESETS, PlanConfig
from .plots import RUN_LOGS, plot_dir
from .tracking import REPORT_TO, end_tracking, start_tracking
from .train.folder import RUN_FILE, run_config

BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_bool(text: str) -> bool:
    """`true/false`, `1/0`, `yes/no` (any case); anything else is refused."""
    try:
        return BOOLS[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; use true or false") from None


def _leaves(cls: type, prefix: str = "") -> list[tuple[str, type, str, bool]]:
    """(dotted name, type, help, required) of every leaf field of the (nested) config dataclass `cls`."""
    resolve_types(cls)
    helps, out = field_help(cls), []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type):
            out += _leaves(f.type, f"{prefix}{f.name}.")
        else:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            out.append((prefix + f.name, f.type, helps.get(f.name, ""), required))
    return out


def _parser_type(kind: Any) -> tuple[Callable[[str], Any], str | None]:
    """The argparse `type` and metavar of a field type (bool, int, float, str, tuples, X | None)."""
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) and type(None) in args:  # X | None: the X
        kind = next(a for a in args if a is not type(None))
        args = typing.get_args(kind)
    if kind is bool:
        return parse_bool, "BOOL"
    if kind in (int, float, str):
        return kind, {int: "INT", float: "FLOAT", str: "TEXT"}[kind]
    if typing.get_origin(kind) is tuple:
        item = args[0]
        return (lambda s: tuple(item(x) for x in s.split(","))), "A,B,..."
    raise TypeError(f"config field type {kind} has no command-line form")


def add_config_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--a.b` option per leaf field of `cls`, with the field's comment as its help."""
    group = parser.add_argument_group(f"{cls.__name__} fields (defaults from the dataclass; nested as --a.b)")
    for name, kind, help_text, required in _leaves(cls):
        if not help_text:
            raise TypeError(f"{cls.__name__}.{name} has no comment to serve as its --help text")
        to_value, metavar = _parser_type(kind)
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        group.add_argument(*flags, dest=name, type=to_value, default=None, metavar=metavar,
                           help=help_text.replace("%", "%%") + (" (required)" if required else ""))


def build_config(cls: type, base: Any | None, args: argparse.Namespace) -> Any:
    """`base` (default: the dataclass defaults), overridden by `--config`, then by explicit options."""
    tree = dataclasses.asdict(base) if base is not None else defaults_tree(cls)
    if args.config:
        _merge(tree, load_config_file(args.config), args.config, cls)
        if not [name for name, _, _, required in _leaves(cls) if required and _get(tree, name) is None]:
            config_from_dict(cls, tree, args.config)  # the file's own values checked first: errors name the file
    for name, _, _, _ in _leaves(cls):
        value = getattr(args, name, None)
        if value is not None:
            node = tree
            *parents, leaf = name.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
    missing = [f"--{name}" for name, _, _, required in _leaves(cls) if required and _get(tree, name) is None]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (on the command line or in --config)")
    return config_from_dict(cls, tree)


def _get(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _merge(tree: dict, update: dict, source: str, cls: type, path: str = "") -> None:
    fields = {f.name: f for f in dataclasses.fields(resolve_types(cls))}
    for k, v in update.items():
        if k not in fields:
            raise ValueError(f"{source}: unknown field '{path}{k}'")
        if dataclasses.is_dataclass(fields[k].type):
            if not isinstance(v, dict):
                raise ValueError(f"{source}: field '{path}{k}' must be an object")
            _merge(tree.setdefault(k, {}), v, source, fields[k].type, f"{path}{k}.")
        else:
            try:
                tree[k] = typed_value(v, fields[k].type, path + k)
            except ValueError as e:
                raise ValueError(f"{source}: {e}") from None


# commands --------------------------------------------------------------------------------------
def _config(args: argparse.Namespace) -> Any:
    """The command's resolved config: its dataclass defaults (or the --quick preset, or the config a resumed
    run saved: train's config.json, demo's and train-reward's run.json), then --config, then the options;
    built once per command."""
    if "resolved_config" not in vars(args):
        if getattr(args, "resume", None):  # the run's own config; options may change only what a resume can
            args.resolved_config = build_config(args.config_cls, args.resumed(Path(args.resume)), args)
        else:
            preset = args.preset() if getattr(args, "quick", False) else None
            args.resolved_config = build_config(args.config_cls, preset, args)
    return args.resolved_config


def _saved_config(cls: type, command: str) -> Callable[[Path], Any]:
    """`--resume DIR` of demo and train-reward: the config in DIR/run.json."""
    return lambda out: config_from_dict(cls, run_config(out, command), str(out / RUN_FILE))


def _run_and_tabulate(run: Callable[..., dict], table: Callable[[dict], str], args: argparse.Namespace) -> int:
    """demo / compare: run the config (demo --resume DIR: continue DIR), print the table."""
    out = getattr(args, "resume", None) or args.out
    resume = {"resume": True} if getattr(args, "resume", None) else {}
    metrics = run(_config(args), out, progress=not args.no_progress, overwrite=args.overwrite, **resume)
    print(table(metrics))
    print(f"metrics: {Path(out) / 'metrics.json'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    return _run_and_tabulate(run_demo, results_table, args)


def _train(args: argparse.Namespace) -> int:
    out = Path(args.resume or args.out)
    m = run_train(_config(args), out, Path(args.warm) if args.warm else None, resume=bool(args.resume), progress=not args.no_progress,
                  overwrite=args.overwrite)
    if not m:  # a rank other than 0 of a launched run: rank 0 reports
        return 0
    held_out = (f"pass@1 {m['pass1']:.3f}  pass@{m['k']} {m['passk']:.3f}  mean length {m['mean_len']:.1f}  "
                f"format-valid {m['format_valid']:.3f}" if "pass1" in m else "no held-out evaluation (give --eval_data)")
    print(f"{m['method']} on {m['device']} ({m['dtype']}): {held_out}  ({m['tokens_trained']} policy tokens trained on)\n"
          f"metrics: {out / 'metrics.json'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    return _run_and_tabulate(run_compare, results_markdown, args)


def _train_reward(args: argparse.Namespace) -> int:
    out = Path(args.resume or args.out)
    m = train_reward_command(_config(args), out, progress=not args.no_progress, overwrite=args.overwrite, resume=bool(args.resume))
    print(f"reward val AUROC {m['reward']['val_auroc']:.3f}  acc {m['reward']['val_acc']:.3f}; "
          f"localise (val) F1 {m['localise_val']['f1']:.3f}\nmetrics: {out / 'metrics.json'}")
    return 0


def _score(args: argparse.Namespace) -> int:
    m = score_command(_config(args), Path(args.out), progress=not args.no_progress)
    print(f"scored {m['scored']} completions -> {Path(args.out) / 'metrics.json'}")
    return 0


def _rerank(args: argparse.Namespace) -> int:
    return _print(rerank_command(_config(args), Path(args.out), progress=not args.no_progress), args.out)


def _localise(args: argparse.Namespace) -> int:
    return _print(localise_command(_config(args), Path(args.out), progress=not args.no_progress), args.out)


def _view(args: argparse.Namespace) -> int:
    s = view_command(_config(args), Path(args.out), progress=not args.no_progress)
    print(f"view of {s['traces']} traces ({s['flagged']} with a step below the threshold {s['threshold']:.3f}) -> {args.out}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    _, table = plan_command(_config(args), Path(args.out) if args.out else None)
    print(table)  # the last line says whether it fits
    return 0


def _plot(args: argparse.Namespace) -> int:
    print(f"plot: {plot_dir(Path(args.run_dir), Path(args.out) if args.out else None)}")
    return 0


def _print(metrics: dict, out: str) -> int:
    for k, v in metrics.items():
        print(f"{k:<28}{v:>10.4f}" if isinstance(v, float) else f"{k:<28}{v!s:>10}")
    print(f"metrics: {Path(out) / 'metrics.json'}")
    return 0


def _command(sub, name: str, func, cls: type, help: str, out_default: str | None, out_help: str,
             quick: tuple[Callable[[], Any], str] | None = None, progress: bool = True,
             trains: bool = False) -> argparse.ArgumentParser:
    """A subcommand run from one config dataclass: --out, --config, --print-config, [--no-progress],
    [--quick: `quick` is (preset, help)], [--report_to: a command that `trains`] and one option per field."""
    parser = sub.add_parser(name, help=help, description=help, allow_abbrev=False)  # a typo never matches a prefix
    parser.add_argument("--out", default=out_default, help=out_help)
    parser.add_argument("--config", metavar="FILE", help=f"JSON or YAML file of {cls.__name__} fields (options override it)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit without running")
    parser.add_argument("--debug", action="store_true", help="on an error, show the whole traceback instead of one line")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="print no progress bars or stage lines")
    if quick:
        parser.add_argument("--quick", action="store_true", help=quick[1])
    if trains:
        parser.add_argument("--overwrite", action="store_true", help="replace the run already in --out (the folder is emptied "
                            "first); without it a folder holding another run is refused")
        parser.add_argument("--report_to", "--report-to", default="none", choices=REPORT_TO,
                            help="also send the training logs' scalars (and --train.log_samples tables) to this experiment "
                                 "tracker, from rank 0; tensorboard writes OUT/tensorboard/ (the JSONL logs stay the record)")
    add_config_options(parser, cls)
    parser.set_defaults(func=func, config_cls=cls, preset=quick[0] if quick else None)
    return parser


def _resumable(parser: argparse.ArgumentParser, resumed: Callable[[Path], Any]) -> None:
    """--resume DIR for a command whose warm start resumes stage by stage; `resumed(DIR)`: the run's config."""
    parser.add_argument("--resume", metavar="DIR", help="continue the killed run in DIR with its config (DIR/run.json): SFT and "
                        "reward training from their checkpoints (--warm.sft.checkpoint_every, --warm.reward_train.checkpoint_every), "
                        "stages already done restored, the evaluation run again, to the result of a run never killed; a finished "
                        "run reports its results again. Options may change only how often it checkpoints; others are refused")
    parser.set_defaults(resumed=resumed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rairl", description="Learn a process-level reasoning reward from expert "
                                     "demonstrations (R-AIRL); rerank, localise errors and post-train with it.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = _command(sub, "demo", _demo, DemoConfig, "learn a reasoning reward on the embedded task and evaluate it",
                    "runs/demo", "output directory (metrics.json, warm start, models)",
                    (quick_config, "a seconds-long smoke run (tests use it)"), trains=True)
    _resumable(demo, _saved_config(DemoConfig, "demo"))
    train = _command(sub, "train", _train, TrainRunConfig,
                     "post-train the policy with the learned reward (R-AIRL) or a baseline, then evaluate",
                     "runs/train", "output directory (checkpoints, train_log.jsonl, metrics.json)",
                     (quick_train_config, "a seconds-long smoke run (tests use it)"), trains=True)
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last readable checkpoint, with its config (options may change only how long it runs and how often it saves or logs; others are refused)")
    train.set_defaults(resumed=resume_config)
    train.add_argument("--warm", metavar="DIR", help="a finished warm start to reuse, e.g. a demo's output (default: OUT/warm, made if missing)")
    _command(sub, "compare", _compare, CompareConfig, "R-AIRL vs SFT, outcome GRPO and a frozen reward on the embedded task, several seeds",
             "runs/compare", "output directory (metrics.json, results.md, curves.png, runs)",
             (quick_compare_config, "a minutes-long smoke run (tests use it)"), trains=True)
    train_reward = _command(sub, "train-reward", _train_reward, TrainRewardConfig, "train a reward model on expert demonstrations from a file",
                            "runs/reward", "output directory (reward/, policy/, warm start, metrics.json)", trains=True)
    _resumable(train_reward, _saved_config(TrainRewardConfig, "train-reward"))
    _command(sub, "score", _score, ScoreConfig, "per-step rewards of (prompt, completion) pairs from a JSONL file",
             "runs/score", "output directory (metrics.json with one row of step scores per completion)")
    _command(sub, "rerank", _rerank, RerankConfig, "best-of-N over a candidate-pool JSONL file",
             "runs/rerank", "output directory (metrics.json)")
    _command(sub, "localise", _localise, LocaliseConfig, "first wrong step of ProcessBench-style items",
             "runs/localise", "output directory (metrics.json with every item's prediction)")
    _command(sub, "view", _view, ViewConfig, "one self-contained HTML page of every trace's step scores, the predicted first error marked",
             "view.html", "the HTML file to write (open it in a browser; it loads nothing)")
    _command(sub, "plan", _plan, PlanConfig,
             f"expected peak GPU memory of one R-AIRL iteration (reads config.json only; presets: {', '.join(PRESETS)})",
             None, "also write OUT/metrics.json", progress=False)
    plot_help = "draw a run's training curves, or a comparison's, as a PNG"
    plot = sub.add_parser("plot", help=plot_help, description=plot_help, allow_abbrev=False)
    plot.add_argument("run_dir", metavar="RUN_DIR", help=f"a run folder (any of {', '.join(RUN_LOGS)}: a panel per numeric "
                      "column) or a folder rairl compare wrote (metrics.json with methods: the curves.png it draws)")
    plot.add_argument("--out", metavar="FILE", help="the PNG to write (default: RUN_DIR/curves.png)")
    plot.add_argument("--debug", action="store_true", help="on an error, show the whole traceback instead of one line")
    plot.set_defaults(func=_plot)
    return parser


# What a user's input causes (a bad option, file or folder; a missing extra): exit 2. Anything else: exit 1.
USAGE_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ImportError)


def _one_line(e: BaseException) -> str:
    """rairl's own messages are one line; another library's may be a page (keep its last line, and its type)."""
    lines = str(e).strip().splitlines()
    if len(lines) == 1 and isinstance(e, USAGE_ERRORS):
        return lines[0]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    hf_logging.disable_progress_bar()  # per-file load/save bars would drown the commands' own
    if int(os.environ.get("RANK", "0")) != 0:  # under a launcher rank 0 reports; the others print only errors
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
        args.no_progress = True
    try:
        if getattr(args, "print_config", False):
            print(json.dumps(dataclasses.asdict(_config(args)), indent=2))
            return 0
        if getattr(args, "report_to", "none") != "none" and int(os.environ.get("RANK", "0")) == 0:
            start_tracking(args.report_to, getattr(args, "resume", None) or args.out, dataclasses.asdict(_config(args)))
        try:
            code = args.func(args)
        finally:
            end_tracking()
    except KeyboardInterrupt:
        print(f"rairl {args.command}: interrupted", file=sys.stderr)
        return 130
    except (Exception, CheckpointException) as e:  # (DCP's is a BaseException) one line, unless --debug
        if args.debug:
            raise
        usage = isinstance(e, USAGE_ERRORS)
        print(f"rairl {args.command}: error: {_one_line(e)}" + ("" if usage else " (--debug shows the traceback)"), file=sys.stderr)
        return 2 if usage else 1
    finish_dist()  # every rank done: leave the process group together (a rank gone early aborts gloo's peers)
    return code


if __name__ == "__main__":
    sys.exit(main())
