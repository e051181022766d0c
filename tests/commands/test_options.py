"""The options of every `rairl` subcommand, in process: help texts, booleans, config files, required
fields, the options `compare` sets per arm, and one dotted name per field across commands."""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, replace

import pytest

from rairl.cli import build_config, build_parser, main, parse_bool
from rairl.commands.compare import CompareConfig
from rairl.commands.demo import DemoConfig, quick_config
from rairl.commands.files import (
    LocaliseConfig,
    RerankConfig,
    ScoreConfig,
    TrainRewardConfig,
    ViewConfig,
)
from rairl.commands.train import TrainRunConfig
from rairl.plan import PlanConfig

COMMANDS = {"demo": DemoConfig, "train": TrainRunConfig, "compare": CompareConfig, "train-reward": TrainRewardConfig,
            "score": ScoreConfig, "rerank": RerankConfig, "localise": LocaliseConfig, "plan": PlanConfig,
            "view": ViewConfig}
# fields with no default: required options
REQUIRED = {"train-reward": ("--data",), "score": ("--reward", "--data"), "rerank": ("--reward", "--pools"),
            "localise": ("--reward", "--items"), "plan": ("--model",), "view": ("--reward", "--data")}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _bool_options(sp: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in sp._actions if a.type is parse_bool]


def test_every_command_is_there():
    assert set(_subparsers()) == set(COMMANDS) | {"plot"}  # plot reads a folder: no config dataclass


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_a_help_string(command):
    sp = _subparsers()[command]
    options = [a for a in sp._actions if a.option_strings]
    assert len(options) >= 4
    for a in options:
        assert isinstance(a.help, str) and a.help.strip() and a.help != argparse.SUPPRESS, f"{command} {a.option_strings}: no help"
    text = sp.format_help()  # renders (a '%' in a field comment would break it)
    for a in options:
        assert a.option_strings[0] in text
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert helps.get(command, "").strip(), f"{command}: no help in `rairl --help`"


def _commands_with_bools() -> list[tuple[str, str]]:
    out = [(name, a.option_strings[0]) for name, sp in _subparsers().items() for a in _bool_options(sp)]
    assert {name for name, _ in out} >= {"train", "compare", "plan"}
    return out


BOOL_OPTIONS = _commands_with_bools()
REQUIRED_ARGS = {"plan": ["--model", "qwen2.5-0.5b"], "train-reward": ["--data", "demos.jsonl"]}  # the required fields, to build a config
NEEDS = {("train", "--rft.cut_steps"): ["--train.operator", "rft", "--train.method", "frozen"]}  # what a True value needs beside it
REFUSED_SET = {("compare", "--rft.cut_steps"): "cuts samples by a frozen learned reward",  # True refused by design: the error's words
               ("compare", "--scarce.rft.cut_steps"): "rft_reward_steps is the one that cuts"}


@pytest.mark.parametrize(("command", "option"), BOOL_OPTIONS)
def test_boolean_options_refuse_a_typo(command, option, capsys):
    with pytest.raises(SystemExit) as info:  # parse only: were it accepted, main would run the command
        build_parser().parse_args([command, option, "ture"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "'ture'" in err and option in err, err


@pytest.mark.parametrize(("command", "option"), BOOL_OPTIONS)
def test_boolean_options_accept_true_false_1_0_yes_no(command, option):
    parser = build_parser()
    dest = next(a.dest for a in _subparsers()[command]._actions if option in a.option_strings)
    words = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
    for word, value in words.items():
        for spelled in (word, word.upper(), word.capitalize()):
            args = parser.parse_args([command, option, spelled])
            assert getattr(args, dest) is value, (spelled, getattr(args, dest))
    # and the value reaches the config (or, where the command refuses it set, the error says why)
    for value in (True, False):
        args = parser.parse_args([command, *REQUIRED_ARGS.get(command, []), *NEEDS.get((command, option), []), option,
                                  "yes" if value else "no"])
        if value and (command, option) in REFUSED_SET:
            with pytest.raises(ValueError, match=REFUSED_SET[command, option]):
                build_config(COMMANDS[command], None, args)
            continue
        node = build_config(COMMANDS[command], None, args)
        for part in dest.split("."):
            node = getattr(node, part)
        assert node is value


def test_a_yaml_config_file_sets_nested_fields_and_options_override_it(tmp_path):
    rng = random.Random()
    lr, steps, seed, n_samples = rng.uniform(1e-5, 1e-2), rng.randint(2, 50), rng.randint(1, 99), rng.randint(2, 9)
    interval, gamma = rng.randint(2, 16), round(rng.uniform(0.5, 1.0), 3)
    path = tmp_path / "demo.yaml"
    path.write_text(
        f"seed: {seed}\n"
        f"n_samples: {n_samples}\n"
        "task:\n  ops: [\"+\", \"-\"]\n  n_train: 5000\n"
        f"warm:\n  sft:\n    lr: {lr!r}\n    steps: {steps}\n"
        f"  reward:\n    granularity: interval\n    interval: {interval}\n    gamma: {gamma}\n"
    )
    parser = build_parser()
    cfg = build_config(DemoConfig, None, parser.parse_args(["demo", "--config", str(path)]))
    default = DemoConfig()
    assert cfg.seed == seed and cfg.n_samples == n_samples
    assert cfg.task.ops == ("+", "-") and cfg.task.n_train == 5000 and cfg.task.n_val == default.task.n_val
    assert cfg.warm.sft.lr == lr and cfg.warm.sft.steps == steps
    assert cfg.warm.sft.batch_size == default.warm.sft.batch_size  # untouched nested siblings keep their defaults
    assert cfg.warm.reward.granularity == "interval" and cfg.warm.reward.interval == interval and cfg.warm.reward.gamma == gamma
    assert cfg.warm.reward_train == default.warm.reward_train
    # a command-line option overrides the file; the rest of the file still applies
    cfg = build_config(DemoConfig, None, parser.parse_args(["demo", "--config", str(path), "--warm.sft.steps", str(steps + 1)]))
    assert cfg.warm.sft.steps == steps + 1 and cfg.warm.sft.lr == lr and cfg.seed == seed
    # nested booleans in YAML, for train
    path = tmp_path / "train.yaml"
    path.write_text("lora: true\nadapters:\n  gradient_checkpointing: false\ntrain:\n  method: frozen\n")
    cfg = build_config(TrainRunConfig, None, parser.parse_args(["train", "--config", str(path)]))
    assert cfg.lora is True and cfg.adapters.gradient_checkpointing is False and cfg.train.method == "frozen"


@pytest.mark.parametrize("tree, field", [
    ({"warm": {"sft": {"stepz": 3}}}, "warm.sft.stepz"),
    ({"seeed": 1}, "seeed"),
    ({"task": {"n_train": 50, "n_tarin": 5}}, "task.n_tarin"),
])
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_an_unknown_field_in_a_config_file_is_refused_by_name(tmp_path, capsys, tree, field, suffix):
    path = tmp_path / f"bad{suffix}"
    path.write_text(json.dumps(tree))  # JSON is YAML too
    args = build_parser().parse_args(["demo", "--config", str(path)])
    with pytest.raises(ValueError, match=f"unknown field '{field}'"):
        build_config(DemoConfig, None, args)
    assert main(["demo", "--quick", "--config", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"'{field}'" in err and str(path) in err
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_a_missing_required_option_returns_2_and_names_it(command, tmp_path, capsys):
    required = REQUIRED[command]
    given = [o for o in required if random.random() < 0.5][: len(required) - 1]  # some, never all
    argv = [command, "--out", str(tmp_path / "out")]
    for o in given:
        argv += [o, "qwen2.5-0.5b" if o == "--model" else str(tmp_path / "x.jsonl")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"rairl {command}: error" in err
    for o in required:
        assert (o in err) == (o not in given), (o, err)
    assert not (tmp_path / "out").exists()


def test_score_without_reward(tmp_path, capsys):
    assert main(["score", "--data", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--reward" in err and "missing" in err


@pytest.mark.parametrize("argv, field", [
    (["--train.method", "frozen"], "train.method"),
    (["--train.seed", "5"], "train.seed"),
    (["--train.advantages", "sequence"], "train.advantages"),
])
def test_compare_refuses_options_it_sets_per_arm(argv, field):
    parser = build_parser()
    args = parser.parse_args(["compare", *argv])
    with pytest.raises(ValueError, match="--methods") as info:
        build_config(CompareConfig, None, args)
    assert field in str(info.value)
    # an allowed train option is taken: the refusal is about the per-arm fields only
    lr = random.uniform(1e-5, 1e-3)
    ok = build_config(CompareConfig, None, parser.parse_args(["compare", "--train.lr", repr(lr), "--methods", "sft,frozen"]))
    assert ok.train.lr == lr and ok.methods == ("sft", "frozen") and ok.train.method == "airl"


def test_compare_refuses_per_arm_options_from_a_config_file(tmp_path):
    path = tmp_path / "compare.yaml"
    path.write_text("train:\n  method: frozen\n  seed: 5\n")
    with pytest.raises(ValueError, match="--methods") as info:
        build_config(CompareConfig, None, build_parser().parse_args(["compare", "--config", str(path)]))
    assert "train.method" in str(info.value) and "train.seed" in str(info.value)


def test_warm_sft_lr_is_one_option_in_demo_train_and_compare():
    lr = random.uniform(1e-5, 1e-2)
    parser = build_parser()
    helps = set()
    for command, cls in (("demo", DemoConfig), ("train", TrainRunConfig), ("compare", CompareConfig)):
        action = next(a for a in _subparsers()[command]._actions if "--warm.sft.lr" in a.option_strings)
        helps.add(action.help)
        args = parser.parse_args([command, "--warm.sft.lr", repr(lr)])
        cfg = build_config(cls, None, args)
        assert cfg.warm.sft.lr == lr, command
        default = build_config(cls, None, parser.parse_args([command]))
        assert replace(cfg, warm=replace(cfg.warm, sft=replace(cfg.warm.sft, lr=default.warm.sft.lr))) == default  # only lr changed
    assert len(helps) == 1  # one definition, one help text


FILE_ARGS = {"score": ["--reward", "r", "--data", "d"], "rerank": ["--reward", "r", "--pools", "p"],
             "localise": ["--reward", "r", "--items", "i"], "view": ["--reward", "r", "--data", "d"]}  # required paths: never opened by --print-config


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_print_config_prints_the_resolved_config_and_runs_nothing(command, tmp_path, capsys):
    seed = random.randint(1, 10_000)
    args = [command, *REQUIRED_ARGS.get(command, []), *FILE_ARGS.get(command, []), "--out", str(tmp_path / "out"), "--print-config"]
    has_seed = any(a.option_strings == ["--seed"] for a in _subparsers()[command]._actions)
    if has_seed:
        args += ["--seed", str(seed)]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    want = build_config(COMMANDS[command], None, build_parser().parse_args(args))
    assert printed == json.loads(json.dumps(asdict(want)))  # tuples print as lists
    if has_seed:
        assert printed["seed"] == seed
    assert not (tmp_path / "out").exists()  # nothing ran


def test_print_config_of_quick_is_the_preset(capsys):
    assert main(["demo", "--quick", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(asdict(quick_config())))
    assert quick_config() != DemoConfig()
