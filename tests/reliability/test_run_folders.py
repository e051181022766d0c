"""One run per output folder: a reused --out never mixes two runs, pruning and resume touch only this
run's checkpoints, and a damaged newest checkpoint falls back to the one before."""

from __future__ import annotations

import json
import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rairl.cli import main
from rairl.train.checkpoint import committed_checkpoints, save_checkpoint
from rairl.train.folder import RUN_FILE, claim_run_folder, folder_run_id

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from test_trainer import SMALL, _changed, _trainer  # noqa: E402


def _config() -> dict:
    return {"seed": random.randint(0, 999), "train": {"lr": random.uniform(1e-5, 1e-3), "iterations": 4}, "ops": ("+", "-")}


def test_a_new_folder_is_claimed_and_a_second_run_refused(tmp_path):
    cfg = _config()
    run_id = claim_run_folder(tmp_path / "out", "train", cfg)
    saved = json.loads((tmp_path / "out" / RUN_FILE).read_text())
    assert saved["run_id"] == run_id == folder_run_id(tmp_path / "out") and saved["command"] == "train"
    assert saved["config"] == json.loads(json.dumps(cfg))
    (tmp_path / "out" / "train_log.jsonl").write_text('{"iteration": 1}\n')
    with pytest.raises(ValueError, match=rf"holds another run \(`rairl train`, id {run_id}\).*--overwrite"):
        claim_run_folder(tmp_path / "out", "train", cfg)
    with pytest.raises(ValueError, match="holds another run"):
        claim_run_folder(tmp_path / "out", "demo", {"seed": 1})
    assert (tmp_path / "out" / "train_log.jsonl").exists()  # a refusal loses nothing


def test_two_claims_of_one_empty_folder_at_the_same_moment_agree_on_one_run(tmp_path, monkeypatch):
    from rairl.train import folder

    out, cfg, write = tmp_path / "out", _config(), folder._write_run
    winner = []

    def racing_write(path, command, config, *args, fresh=False, **kw):  # another process claims `out` just before this one
        if fresh and not winner:
            winner.append(write(path, command, config, fresh=True))
        return write(path, command, config, *args, fresh=fresh, **kw)

    monkeypatch.setattr(folder, "_write_run", racing_write)
    assert claim_run_folder(out, "compare", cfg, resume=True) == winner[0]  # continues the run the other process claimed
    assert folder_run_id(out) == winner[0] and sorted(p.name for p in out.iterdir()) == [RUN_FILE]  # no temp file left
    winner.clear()
    with pytest.raises(ValueError, match="holds another run"):  # without --resume the late claim is refused, as always
        claim_run_folder(tmp_path / "fresh", "train", cfg)
    assert folder_run_id(tmp_path / "fresh") == winner[0]


def test_overwrite_empties_a_run_folder_but_never_a_foreign_one(tmp_path):
    out = tmp_path / "out"
    first = claim_run_folder(out, "demo", _config())
    (out / "sft_log.jsonl").write_text("{}\n")
    (out / "tensorboard").mkdir()
    second = claim_run_folder(out, "demo", _config(), overwrite=True)
    assert second != first and sorted(p.name for p in out.iterdir()) == [RUN_FILE]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt, which no rairl run wrote"):
        claim_run_folder(out, "demo", _config(), overwrite=True)
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="holds files no rairl run wrote"):
            claim_run_folder(foreign, "train", _config(), overwrite=overwrite)
    assert (out / "notes.txt").read_text() == "mine" and (foreign / "thesis.tex").exists()


def test_resume_keeps_the_run_id_and_refuses_a_changed_config(tmp_path):
    out, cfg = tmp_path / "out", _config()
    run_id = claim_run_folder(out, "train", cfg)
    longer = {**cfg, "train": {**cfg["train"], "iterations": 9}}
    assert claim_run_folder(out, "train", longer, resume=True, may_change=("train.iterations",)) == run_id
    assert json.loads((out / RUN_FILE).read_text())["config"]["train"]["iterations"] == 9
    other = {**cfg, "train": {**cfg["train"], "lr": cfg["train"]["lr"] * 2}, "seed": cfg["seed"] + 1}
    with pytest.raises(ValueError, match=r"another config \(seed, train.lr differ\)"):
        claim_run_folder(out, "train", other, resume=True, may_change=("train.iterations",))
    with pytest.raises(ValueError, match="holds a `rairl train` run, not `rairl compare`"):
        claim_run_folder(out, "compare", cfg, resume=True)


def test_pruning_keeps_another_runs_checkpoints(tmp_path):
    for it in (1, 2, 3):
        save_checkpoint(tmp_path, it, {"x": torch.tensor([it])}, {"iteration": it, "run_id": "old"}, {}, keep=2)
    for it in (4, 5, 6):
        save_checkpoint(tmp_path, it, {"x": torch.tensor([it])}, {"iteration": it, "run_id": "new"}, {}, keep=2)
    assert [p.name for p in committed_checkpoints(tmp_path, "old")] == ["iter_000002", "iter_000003"]
    assert [p.name for p in committed_checkpoints(tmp_path, "new")] == ["iter_000005", "iter_000006"]


def test_resume_passes_over_a_damaged_newest_checkpoint(tiny, tmp_path):
    cfg = replace(SMALL, iterations=4, checkpoint_every=2, keep_checkpoints=3)
    straight = _trainer(tiny, replace(cfg, iterations=2), tmp_path / "a", seed=5)
    straight.train()
    damaged = _trainer(tiny, cfg, tmp_path / "b", seed=5)
    damaged.train()
    newest = committed_checkpoints(tmp_path / "b" / "checkpoints")[-1]
    assert newest.name == "iter_000004"
    shard = max(newest.glob("*.distcp"), key=lambda p: p.stat().st_size)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])  # truncated, as by a full disk
    again = _trainer(tiny, cfg, tmp_path / "b", seed=5)
    with pytest.warns(UserWarning, match="iter_000004.*cannot be read"):
        assert again.resume() == 2
    assert not _changed(straight.models.policy.state_dict(), again.models.policy)
    rows = [json.loads(x) for x in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    for p in committed_checkpoints(tmp_path / "b" / "checkpoints"):
        (p / "rng_rank0.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="no committed checkpoint can be read"):
        _trainer(tiny, cfg, tmp_path / "b", seed=5).resume()


def test_commands_refuse_a_folder_holding_another_run_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    claim_run_folder(out, "train", _config())
    for argv in (["demo", "--quick"], ["train", "--quick"], ["compare", "--quick"]):
        assert main([*argv, "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert str(out) in err and ("holds another run" in err or "not `rairl compare`" in err), err
    assert sorted(p.name for p in out.iterdir()) == [RUN_FILE]


def test_train_resume_takes_only_the_options_a_resume_may_change(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--quick", "--out", str(out), "--no-progress", "--train.iterations", "2"]) == 0
    run_id = folder_run_id(out)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--train.lr", "0.5", "--no-progress"]) == 2
    assert "train.lr differ" in capsys.readouterr().err
    assert main(["train", "--quick", "--out", str(out), "--no-progress"]) == 2  # not without --resume
    assert main(["train", "--resume", str(out), "--train.iterations", "3", "--no-progress"]) == 0
    assert folder_run_id(out) == run_id
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["train"]["iterations"] == 3
    assert main(["train", "--quick", "--out", str(out), "--no-progress", "--overwrite"]) == 0
    assert folder_run_id(out) != run_id
