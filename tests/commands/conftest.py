"""The `rairl` command in a subprocess, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest


def _rairl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rairl.cli", *args], capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"rairl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def rairl() -> Callable[..., subprocess.CompletedProcess]:
    """`rairl(*args, check=True)`: run `python -m rairl.cli ARGS`; with `check`, a non-zero exit fails the test."""
    return _rairl
