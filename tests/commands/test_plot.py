"""`rairl plot`: a run folder's logs, a comparison folder's curves, and a folder with neither."""

import json

import pytest
from matplotlib.image import imread

from rairl.plots import plot_curves


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _train_rows(n: int) -> list[dict]:
    rows = [{"iteration": i, "tokens": 50 * i, "mean_reward": 0.1 * i, "mean_len": 20.0 - i, "disc_loss": 0.7 / i,
             "seconds": 0.5} for i in range(1, n + 1)]
    rows[-1]["val_auroc"] = 0.75  # logged every few iterations only
    return rows


def test_plot_draws_a_run_folders_log(rairl, tmp_path):
    _write_jsonl(tmp_path / "run" / "train_log.jsonl", _train_rows(5))
    rairl("plot", str(tmp_path / "run"))
    image = imread(tmp_path / "run" / "curves.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # drawn, not blank
    rairl("plot", str(tmp_path / "run"), "--out", str(tmp_path / "elsewhere.png"))
    assert (tmp_path / "elsewhere.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_of_a_comparison_is_the_curves_compare_draws(rairl, tmp_path):
    out = tmp_path / "cmp"
    for seed in (1, 2):
        for method in ("sft", "airl_step"):
            _write_jsonl(out / f"seed{seed}" / method / "train_log.jsonl", _train_rows(4 + seed))
    (out / "metrics.json").write_text(json.dumps({"protocol": "unlimited", "seeds": [1, 2],
                                                  "methods": {"sft_init": {}, "sft": {}, "airl_step": {}}}))
    plot_curves(out, [1, 2], ["sft", "airl_step"], tmp_path / "compare.png")  # what run_compare calls
    rairl("plot", str(out), "--out", str(tmp_path / "plot.png"))
    assert (tmp_path / "plot.png").read_bytes() == (tmp_path / "compare.png").read_bytes()


def test_plot_of_a_folder_with_nothing_to_plot_says_what_it_looked_for(rairl, tmp_path):
    proc = rairl("plot", str(tmp_path), check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1
    assert str(tmp_path) in lines[0] and "train_log.jsonl" in lines[0] and "metrics.json" in lines[0]
    assert not (tmp_path / "curves.png").exists()


def test_plot_help_names_the_default_output(capsys):
    from rairl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["plot", "--help"])
    assert exit_info.value.code == 0 and "RUN_DIR/curves.png" in capsys.readouterr().out
