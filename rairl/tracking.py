"""Where a run's rows go: its JSONL logs (the record of truth) and, with `--report_to`, an experiment tracker.

Every training loop writes its rows with `log_row` (train_log.jsonl, sft_log.jsonl, reward_log.jsonl)
and its sample tables with `log_table` (samples.jsonl). `start_tracking` (the CLI calls it on rank 0;
a library user may too) opens one of accelerate's trackers; from then on each row's numbers also go
to it, tagged by the log's path under the run folder (`seed1/airl/train/mean_reward`), until
`end_tracking`. Only the process that writes the files logs, so a launched run reports once.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

REPORT_TO = ("none", "tensorboard", "trackio", "wandb")
_PACKAGE = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}  # the module each tracker imports
STEP_COLUMNS = ("iteration", "round", "step")  # a log row's own position, in this order of preference


class _Session:
    """An open tracker. It starts at the first row: by then a launched command has set up its process group,
    which accelerate's state (needed by its trackers' logging) then adopts instead of starting its own."""

    def __init__(self, report_to: str, root: Path, config: dict):
        self.report_to, self.root, self.config = report_to, root, config
        self.rows = 0  # rows logged: the step of trackers that need one increasing step for every key
        self._tracker: Any = None

    @property
    def tracker(self) -> Any:
        if self._tracker is None:
            from accelerate import PartialState  # noqa: PLC0415  (only when tracking)
            from accelerate.tracking import TensorBoardTracker, TrackioTracker, WandBTracker  # noqa: PLC0415

            PartialState()
            name = self.root.resolve().name
            tracker = {"tensorboard": lambda: TensorBoardTracker(name, self.root / "tensorboard"),
                       "trackio": lambda: TrackioTracker(f"rairl-{name}"),
                       "wandb": lambda: WandBTracker(f"rairl-{name}", dir=str(self.root))}[self.report_to]()
            tracker.main_process_only = False  # rairl calls it on the writing rank only
            tracker.start()
            tracker.store_init_configuration({k: v for k, v in _flat(self.config).items() if isinstance(v, (bool, int, float, str))})
            self._tracker = tracker
        return self._tracker


_session: _Session | None = None


def check_report_to(report_to: str) -> None:
    """A known tracker whose package is installed; else a one-line error naming the option and the extra."""
    if report_to not in REPORT_TO:
        raise ValueError(f"--report_to {report_to!r}: choose one of {', '.join(REPORT_TO)}")
    package = _PACKAGE.get(report_to)
    missing = [m for m in (package, "accelerate") if package and importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"--report_to {report_to} needs {' and '.join(missing)}: pip install 'rairl[{report_to}]'")


def start_tracking(report_to: str, out: str | Path, config: dict) -> None:
    """Open `report_to`'s tracker for the run in `out` (tensorboard: event files in `out/tensorboard/`) and
    store `config` (a nested dict, flattened to `a.b` keys) as its hyper-parameters. `none` does nothing."""
    global _session
    check_report_to(report_to)
    end_tracking()
    if report_to != "none":
        _session = _Session(report_to, Path(out), config)


def end_tracking() -> None:
    """Close the open tracker, if any (flushes its files)."""
    global _session
    if _session is not None and _session._tracker is not None:
        _session._tracker.finish()
    _session = None


def log_row(path: str | Path, row: dict) -> None:
    """Append `row` as one JSON line to `path`, and send its finite numbers to the open tracker."""
    path = Path(path)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    if _session is None:
        return
    values = {f"{_tag(path)}/{k}": v for k, v in row.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    own_step = next((int(row[k]) for k in STEP_COLUMNS if k in row), None)
    _log(values, own_step)


def log_table(path: str | Path, rows: list[dict], step: int) -> None:
    """Append `rows` (flat dicts, one per sample) to the JSONL file `path`, and send them to the open tracker
    as one table at `step` (tensorboard: a markdown table of text)."""
    path = Path(path)
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    if _session is None or not rows:
        return
    tag, tracker = _tag(path), _session.tracker
    columns = list(rows[0])
    data = [[r.get(c) if isinstance(r.get(c), (int, float, str)) else json.dumps(r.get(c)) for c in columns] for r in rows]
    if tracker.name == "tensorboard":
        cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ⏎ ")  # noqa: E731
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + ["| " + " | ".join(cell(v) for v in d) + " |" for d in data]
        tracker.writer.add_text(tag, "\n".join(lines), global_step=step)
        tracker.writer.flush()
    elif tracker.name == "wandb":
        _session.rows += 1
        tracker.log_table(tag, columns=columns, data=data, step=_session.rows)
    else:  # trackio
        import trackio  # noqa: PLC0415

        _log({tag: trackio.Table(columns=columns, data=data)}, step)


def _log(values: dict, own_step: int | None) -> None:
    """Tensorboard keeps a step axis per tag (the row's own step); wandb and trackio need one step that
    grows across every key, so they get a row counter and read the row's own step from its values."""
    tracker = _session.tracker
    _session.rows += 1
    tracker.log(values, step=own_step if tracker.name == "tensorboard" else _session.rows)


def _tag(path: Path) -> str:
    """`seed1/airl/train` for `<root>/seed1/airl/train_log.jsonl`; the file's stem for a path elsewhere."""
    stem = path.stem.removesuffix("_log")
    try:
        parent = path.resolve().parent.relative_to(_session.root.resolve())
    except ValueError:
        return stem
    return f"{parent.as_posix()}/{stem}" if parent.parts else stem


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[prefix + k] = list(v) if isinstance(v, tuple) else v
    return out
