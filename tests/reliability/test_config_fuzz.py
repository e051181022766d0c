"""The config layer under random input: every field of every command's config, set from a config file to
values of random types and sizes, either builds a config or is refused with a ValueError naming the file
and the field; never another exception, never a non-finite number accepted."""

from __future__ import annotations

import argparse
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rairl.cli import _leaves, build_config, build_parser, main

_SUB = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
COMMANDS = {name: sp.get_default("config_cls") for name, sp in _SUB.choices.items() if sp.get_default("config_cls")}
assert len(COMMANDS) >= 9  # every command built from a config dataclass
REQUIRED = {"train-reward": {"data": "d.jsonl"}, "score": {"reward": "r", "data": "d"}, "rerank": {"reward": "r", "pools": "p"},
            "localise": {"reward": "r", "items": "i"}, "plan": {"model": "qwen2.5-0.5b"}, "view": {"reward": "r", "data": "d"}}
FIELDS = [(command, name) for command, cls in COMMANDS.items() for name, *_ in _leaves(cls)]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=2))


def _nest(dotted: str, value) -> dict:
    tree = value
    for part in reversed(dotted.split(".")):
        tree = {part: tree}
    return tree


def _finite(cfg) -> bool:
    """No NaN or infinite float anywhere in the config tree."""
    def walk(x):
        if isinstance(x, dict):
            return all(walk(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return all(walk(v) for v in x)
        return not (isinstance(x, float) and not math.isfinite(x))
    from dataclasses import asdict
    return walk(asdict(cfg))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=values)
def test_a_random_value_in_a_config_file_builds_or_names_the_file_and_field(field, value, tmp_path):
    command, name = field
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({**REQUIRED.get(command, {}), **_nest(name, value)}))
    args = build_parser().parse_args([command, "--config", str(path)])
    try:
        cfg = build_config(COMMANDS[command], None, args)
    except ValueError as e:
        message = str(e)
        assert "\n" not in message
        assert str(path) in message, message
        assert any(part in message for part in name.split(".")), message  # the field, or its group (`rft.*`)
        return
    assert _finite(cfg)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from([f for f in FIELDS if f[0] in ("train", "demo", "score")]),
       text=st.one_of(st.sampled_from(["nan", "inf", "-inf", "1e999", "-1", "0", "true", "", "x,y"]), st.text(max_size=8)))
def test_a_random_option_value_exits_0_or_2_with_one_line(field, text, capsys):
    command, name = field
    capsys.readouterr()  # one example's output at a time
    argv = [command, *(["--reward", "r", "--data", "d"] if command == "score" else []), f"--{name}={text}", "--print-config"]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refusing the option's text: its usage error, exit 2
        assert e.code == 2
        return
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), err
    if code == 2:
        assert len(err.splitlines()) == 1 and err.startswith(f"rairl {command}: error:"), err


def test_a_wrong_type_in_a_yaml_file_names_the_file_and_the_field(tmp_path, capsys):
    path = tmp_path / "train.yaml"
    path.write_text("train:\n  lr: fast\n")
    assert main(["train", "--config", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: field 'train.lr' must be float, got str 'fast'" in err
    path.write_text("train:\n  lr: .nan\n")
    assert main(["train", "--config", str(path), "--print-config"]) == 2
    assert "field 'train.lr' must be a finite number" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--warm.reward_train.lr", "inf"), ("--warm.reward.beta", "nan"),
                                           ("--warm.sft.lr", "-inf"), ("--train.lr", "1e999")])
def test_non_finite_options_are_refused_before_any_work(option, value, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--quick", f"{option}={value}", "--out", str(out)]) == 2
    assert option.removeprefix("--").split(".")[-1] in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("option, value", [
    ("--warm.sft.grad_clip", "-1"), ("--warm.sft.warmup", "-3"), ("--warm.sft.check_after", "-1"), ("--warm.sft.max_tokens", "-5"),
    ("--warm.reward_train.weight_decay", "-0.1"), ("--warm.reward_train.grad_clip", "0"), ("--warm.reward.beta", "-1"),
    ("--warm.sft_check_problems", "-1"), ("--warm.model.num_heads", "0"), ("--task.n_val", "0"), ("--threads", "-2"), ("--seed", "-1"),
])
def test_out_of_range_values_are_refused_naming_the_field(option, value, capsys):
    assert main(["demo", f"{option}={value}", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option.rsplit(".", 1)[-1].removeprefix("--") in err, err


@pytest.mark.parametrize("option, value", [("--train.disc_lr", "-1e-4"), ("--train.clip_eps", "0"), ("--train.grad_clip", "-1"),
                                           ("--train.seed", "-7")])
def test_out_of_range_train_values_are_refused_naming_the_field(option, value, capsys):
    assert main(["train", f"{option}={value}", "--print-config"]) == 2
    assert option.rsplit(".", 1)[-1] in capsys.readouterr().err
