"""One run per output folder: `run.json` names the run that owns it (an id, the command, its config).

A training command claims its `--out` before it writes anything (`claim_run_folder`): a new or empty
folder becomes the run's; a folder holding another run is refused unless the user asks to continue it
(`--resume`, with the same config but for the fields a resume may change) or to replace it
(`--overwrite`, which empties it first). A folder holding files that no rairl run wrote is never
emptied. Checkpoints carry the run id, so pruning and resuming touch only this run's.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from ..configs import load_config_file

RUN_FILE = "run.json"
# What a rairl run leaves in its folder (runs from before run.json existed have no RUN_FILE).
_RUN_MARKERS = (RUN_FILE, "config.json", "metrics.json", "warm.json", "checkpoints", "train_log.jsonl", "sft_log.jsonl",
                "reward_log.jsonl", "warm", "policy", "reward", "sft_checkpoints", "negatives_checkpoint", "reward_checkpoints")


def folder_run_id(out: str | Path | None) -> str | None:
    """The id of the run owning `out` (its run.json), or None."""
    path = Path(out) / RUN_FILE if out else None
    return load_config_file(path)["run_id"] if path and path.exists() else None


def run_config(out: str | Path, command: str) -> dict:
    """The config tree the `rairl {command}` run in `out` was started with (its run.json), for `--resume`."""
    path = Path(out) / RUN_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; is {out} the --out folder of a `rairl {command}` run?")
    saved = load_config_file(path)
    if saved.get("command") != command:
        raise ValueError(f"{out}: holds a `rairl {saved.get('command')}` run, not `rairl {command}`; resume it with that command")
    return saved["config"]


def claim_run_folder(out: str | Path, command: str, config: dict, resume: bool = False, overwrite: bool = False,
                     may_change: tuple[str, ...] = ()) -> str:
    """Make `out` the folder of this run and return its id (call it on the writing rank, before any write).

    `config`: the run's config as a JSON-able tree; `resume`: continue the run already there (or start in an
    empty folder); `may_change`: dotted fields a continued run may set anew (how long it runs, how often it
    saves). Errors name the folder and what to do.
    """
    out = Path(out)
    config = json.loads(json.dumps(config))  # as run.json holds it (tuples become lists)
    run_file = out / RUN_FILE
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder")
    # another process's run.json on its way in (`_write_run`'s temp file) is not yet a run held here
    held = sorted(p.name for p in out.iterdir() if not (p.name.startswith(RUN_FILE + ".") and p.name.endswith(".tmp"))) if out.is_dir() else []
    if resume and held and not overwrite:
        if run_file.exists():
            saved = load_config_file(run_file)
        elif (out / "config.json").exists():  # a run of a rairl from before run.json: its config.json
            saved = {"command": command, "run_id": None, "config": load_config_file(out / "config.json")}
        else:
            raise ValueError(f"{out}: holds no run to continue (no {RUN_FILE} or config.json)")
        if saved.get("command") != command:
            raise ValueError(f"{out}: holds a `rairl {saved.get('command')}` run, not `rairl {command}`; choose another --out")
        changed = [k for k in _differences(saved["config"], config) if k not in may_change]
        if changed:
            raise ValueError(f"{out}: holds a run made with another config ({', '.join(changed)} differ); a continued run keeps "
                             f"its config (only {', '.join(may_change) or 'nothing'} may change); drop those options or use another --out")
        return _write_run(out, command, config, saved["run_id"], saved.get("created"))
    if held:
        ours = [name for name in held if name in _RUN_MARKERS]
        if not ours:
            raise ValueError(f"--out {out}: holds files no rairl run wrote ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}); "
                             "choose a new or empty folder")
        if not overwrite:
            who = load_config_file(run_file) if run_file.exists() else None
            what = f"`rairl {who['command']}`, id {who['run_id']}" if who else f"from a rairl before {RUN_FILE}"
            raise ValueError(f"--out {out}: holds another run ({what}); continue it with --resume, "
                             "replace it with --overwrite, or choose another --out")
        foreign = [name for name in held if name not in _RUN_MARKERS and not _run_output(out / name)]
        if foreign:
            raise ValueError(f"--out {out} --overwrite: the folder also holds {', '.join(foreign[:3])}, which no rairl run "
                             "wrote; move them away or choose another --out")
        shutil.rmtree(out)
    try:
        return _write_run(out, command, config, fresh=True)
    except FileExistsError:  # another process claimed the folder after it was listed: continue or refuse its run, as above
        return claim_run_folder(out, command, config, resume=resume, may_change=may_change)


def _run_output(path: Path) -> bool:
    """Files a run writes besides its markers: logs, tables, plots, tensorboard events, samples."""
    return path.suffix in (".jsonl", ".json", ".png", ".md", ".html") or path.name in ("tensorboard", "adapters") or path.name.startswith("seed")


def _write_run(out: Path, command: str, config: dict, run_id: str | None = None, created: float | None = None,
               fresh: bool = False) -> str:
    """Write `out/run.json` through this process's own temp file. `fresh`: only where no run.json is yet
    (FileExistsError otherwise), so processes claiming one folder at the same moment agree on one run."""
    out.mkdir(parents=True, exist_ok=True)
    run_id = run_id or uuid.uuid4().hex[:12]
    record = {"run_id": run_id, "command": command, "created": created or time.time(), "config": config}
    tmp = out / f"{RUN_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    if not fresh:
        tmp.replace(out / RUN_FILE)
        return run_id
    try:
        os.link(tmp, out / RUN_FILE)  # atomic and exclusive, where replace would overwrite another process's claim
    finally:
        tmp.unlink()
    return run_id


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of the leaves that differ between two config trees."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(prefix + k)
    return out
