"""Smoke test of `benchmarks/scoring.py`: a `--quick` run on two model scorers (one the dense
reward head) and one toy scorer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "scoring.py"


def test_quick_run_writes_rates_and_ratios(tmp_path):
    out = tmp_path / "scoring.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, str(BENCH), "--quick", "--scorers", "hpsv2,dense,toy:style",
           "--threads", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    report = json.loads(out.read_text())
    assert report["benchmark"] == "scoring" and report["config"]["quick"] is True
    hps, toy = report["results"]["hpsv2"], report["results"]["toy:style"]
    assert hps["images_per_s_batch1"] > 0 and hps["images_per_s_batch32"] > 0
    assert abs(hps["ratio"] - hps["images_per_s_batch32"] / hps["images_per_s_batch1"]) < 1e-9
    assert hps["verdict"] in ("PASS", "MISS") and toy["verdict"] == "-"
    dense = report["results"]["dense"]  # a freshly initialised toy head, held to the target
    assert dense["images_per_s_batch1"] > 0 and dense["verdict"] in ("PASS", "MISS")
    # The exit status says whether a model scorer missed the target, nothing else.
    missed = "MISS" in (hps["verdict"], dense["verdict"])
    assert proc.returncode == (1 if missed else 0), proc.stderr[-2000:]
    assert "target: batch 32 / batch 1 >= 3x" in proc.stdout
