"""benchmarks/compare_parallel.sh: seeds side by side in one run folder, then the table over all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_parallel.sh"


def test_seeds_side_by_side_share_one_run_and_gather_into_one_table(tmp_path):
    out = tmp_path / "scarce"
    env = {**os.environ, "RAIRL": str(Path(sys.executable).parent / "rairl")}
    proc = subprocess.run(["bash", str(SCRIPT), str(out), "1,2", "--quick", "--protocol", "scarce", "--methods", "sft_es"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:] + "".join(p.read_text()[-1000:] for p in tmp_path.glob("scarce.seed*.log"))
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    assert sorted(p.name for p in tmp_path.glob("scarce.seed*.log")) == ["scarce.seed1.log", "scarce.seed2.log"]  # beside OUT
    m = json.loads((out / "metrics.json").read_text())
    assert m["seeds"] == [1, 2] and "sft_es" in m["methods"]
    assert all((out / f"seed{s}" / "sft_es" / "metrics.json").exists() for s in (1, 2))
    assert json.loads((out / "run.json").read_text())["run_id"] == run_id  # one run, continued by every seed
