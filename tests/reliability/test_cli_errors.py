"""One top-level handler: whatever a command raises becomes one line on stderr (exit 2 for what the
user's input caused, 1 for the rest), and `--debug` shows the traceback instead."""

from __future__ import annotations

import pytest

from rairl import cli


def _raising(exc: BaseException):
    def command(args):
        raise exc
    return command


@pytest.mark.parametrize("exc, code", [
    (RuntimeError("CUDA error: device-side assert\nframe 1\nframe 2: the real cause"), 1),
    (KeyError("input_ids"), 1),
    (ValueError("data.jsonl:3: field 'prompt': missing"), 2),
    (FileNotFoundError("runs/x/reward: not found"), 2),
    (IsADirectoryError("data/: is a folder"), 2),
])
def test_any_exception_becomes_one_line_and_debug_shows_the_traceback(monkeypatch, capsys, exc, code):
    monkeypatch.setattr(cli, "_score", _raising(exc))
    argv = ["score", "--reward", "r", "--data", "d"]
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("rairl score: error: "), err
    assert ("--debug" in err) == (code == 1)
    if code == 1:
        assert type(exc).__name__ in err and (str(exc).splitlines()[-1] in err)
    with pytest.raises(type(exc)):
        cli.main([*argv, "--debug"])


def test_an_interrupt_exits_130(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_score", _raising(KeyboardInterrupt()))
    assert cli.main(["score", "--reward", "r", "--data", "d"]) == 130
    assert capsys.readouterr().err.strip() == "rairl score: interrupted"
