"""Smoke test of `benchmarks/diffusion_step.py`: a `--quick` run of five variants on tiny SD."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "diffusion_step.py"
VARIANTS = [
    "ours-mapo-lora-cache",
    "ours-dpo-lora-cache",
    "ours-dense-dpo-lora-cache",
    "ours-smpo-lora-cache",
    "ours-dpo-ppd-cache",
]
RESULT_KEYS = {
    "variant", "family", "device", "s_per_step", "s_per_step_mean", "step_times", "peak_mb",
    "peak_rss_mb", "peak_cuda_mb", "base_rss_mb", "train_rss_mb", "final_loss",
}  # fmt: skip


def test_quick_run_writes_results_and_ratios(tmp_path):
    out = tmp_path / "bench.json"
    # Force CPU and one thread: the smoke test checks the plumbing, not the device.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable, str(BENCH), "--quick", "--families", "sd", "--device", "cpu",
        "--threads", "1", "--variants", ",".join(VARIANTS), "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MaPO/DPO time (cache)" in proc.stdout  # the ratio table was printed
    report = json.loads(out.read_text())
    assert set(report) == {"benchmark", "config", "results", "ratios"}
    assert report["config"]["quick"] is True
    assert list(report["results"]) == ["sd"]
    for name in VARIANTS:
        result = report["results"]["sd"][name]
        assert RESULT_KEYS <= set(result), sorted(RESULT_KEYS - set(result))
        assert result["variant"] == name and result["device"] == "cpu"
        assert len(result["step_times"]) == report["config"]["steps"]
        assert result["s_per_step"] > 0 and result["peak_mb"] > 0
        assert result["final_loss"] == result["final_loss"]  # not NaN
    ratios = {(r["train"], r["name"]): r for r in report["ratios"]}
    time_ratio = ratios[("lora", "MaPO/DPO time (cache)")]
    assert time_ratio["verdict"] in ("PASS", "MISS")
    assert time_ratio["numerator"] == "ours-mapo-lora-cache"
    assert time_ratio["value"] > 0
    dense = ratios[("lora", "dense-DPO/DPO time (cache)")]
    assert dense["verdict"] in ("PASS", "MISS") and dense["target"] == 1.1
    assert dense["denominator"] == "ours-dpo-lora-cache" and dense["value"] > 0
    assert report["results"]["sd"]["ours-dense-dpo-lora-cache"]["dense_setup_s"] > 0
    assert ("lora", "dense-DPO/DPO time (encode)") not in ratios
    # SmPO: the ReNoise inversion's extra UNet forwards are counted and printed beside the ratio
    # (tiny SD inverts on a 5-step grid: between 1 and 5 levels per step, 2 calls per level).
    smpo = report["results"]["sd"]["ours-smpo-lora-cache"]
    assert 2 <= smpo["renoise_calls_per_step"] <= 10
    assert 0 < smpo["renoise_forwards_per_step"] <= smpo["renoise_calls_per_step"]
    smpo_time = ratios[("lora", "SmPO/DPO time (cache)")]
    assert smpo_time["denominator"] == "ours-dpo-lora-cache" and smpo_time["value"] > 0
    assert smpo_time["target"] is None and "UNet forwards/step" in smpo_time["note"]
    assert smpo_time["note"] in proc.stdout
    assert ratios[("lora", "SmPO/DPO peak (cache)")]["value"] > 0
    assert ratios[("lora", "MaPO/DPO time (cache)")]["note"] == ""
    # PPD: only the user branch trains; its step is held to 1.2x DPO's with LoRA (issue 22)
    ppd_time = ratios[("lora", "PPD/DPO time (cache)")]
    assert ppd_time["numerator"] == "ours-dpo-ppd-cache" and ppd_time["target"] == 1.2
    assert ppd_time["denominator"] == "ours-dpo-lora-cache" and ppd_time["value"] > 0
    assert ratios[("lora", "PPD/DPO peak (cache)")]["value"] > 0
    # Ratios whose variants did not run are left out, not reported as zero.
    assert not any(r["train"] == "full" for r in report["ratios"])
