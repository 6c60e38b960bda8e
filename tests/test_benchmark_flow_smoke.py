"""Smoke test of the SD3 / FLUX rows of `benchmarks/diffusion_step.py` (benchmarks/flow_step.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "diffusion_step.py"
VARIANTS = ["ours-dpo-lora-cache", "naive-dpo-lora-encode", "ours-dense-dpo-lora-cache"]


def test_quick_flow_rows(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable, str(BENCH), "--quick", "--families", "sd3,flux", "--device", "cpu",
        "--threads", "1", "--variants", ",".join(VARIANTS), "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["sd3", "flux"]
    for family in ("sd3", "flux"):
        rows = report["results"][family]
        assert set(rows) == set(VARIANTS[:2])  # no dense-weighting row for flow models
        for name, result in rows.items():
            assert result["variant"] == name and result["family"] == family
            assert result["s_per_step"] > 0 and result["final_loss"] == result["final_loss"]
            assert abs(result["final_loss"] - 0.693) < 0.05  # DPO starts at log 2
    names = {(r["family"], r["name"]) for r in report["ratios"]}
    assert ("flux", "ours/naive time (ours cache)") in names
