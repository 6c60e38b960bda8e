"""Smoke test of `benchmarks/diffusion_vs_diffusers.py` without the peer script (not shipped):
a one-round run of mmalign's side, and a clean refusal of `--device cuda` without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "diffusion_vs_diffusers.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_quick_mmalign_side_writes_the_summary(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, str(BENCH), "--quick", "--sides", "mmalign", "--threads", "1",
        "--workdir", str(tmp_path / "work"), "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert run["side"] == "mmalign" and len(run["step_times"]) == 3
    assert run["s_per_step"] > 0 and run["cpu_s_per_step"] > 0 and run["peak_mb"] > 0
    assert report["summary"]["32"]["mmalign"]["rounds"] == 1


def test_the_peer_side_needs_its_script(tmp_path):
    cmd = [sys.executable, str(BENCH), "--quick", "--workdir", str(tmp_path)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--peer-script" in proc.stderr


def test_cuda_is_refused_cleanly_without_a_gpu(tmp_path):
    cmd = [sys.executable, str(BENCH), "--device", "cuda", "--sides", "mmalign",
           "--workdir", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing was built
