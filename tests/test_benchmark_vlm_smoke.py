"""Smoke test of `benchmarks/vlm_vs_trl.py`: a `--quick` run on toy-vlm, mmalign against TRL.

The children run in this process (the benchmark starts one process per side; here the import
of torch, transformers and trl would cost more than the run), so the test checks the plumbing
and part (a), not the memory numbers.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "vlm_vs_trl.py"


@pytest.fixture(scope="module")
def bench():
    # As when the file runs as a script: its folder first on the path, for its child module.
    sys.path.insert(0, str(BENCH.parent))
    try:
        spec = importlib.util.spec_from_file_location("vlm_vs_trl", BENCH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH.parent))
    return module


def test_quick_run_writes_scores_steps_and_ratios(bench, tmp_path, monkeypatch):
    calls = []

    def in_process(argv, threads, mmap_threshold=None):
        calls.append(argv)
        args = bench.parse_args(argv)
        run = bench.run_step_child if args.child == "step" else bench.run_check_child
        return json.loads(json.dumps(run(args)))  # what the child would print

    monkeypatch.setattr(bench, "run_child", in_process)
    out = tmp_path / "bench.json"
    code = bench.main(["--quick", "--models", "toy", "--sides", "mmalign,mmalign-cached,trl",
                       "--device", "cpu", "--threads", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["config"]["quick"] is True
    assert [a[1] for a in calls] == ["check", "step", "step", "step"]  # (a), then each side

    # (a): mmalign's scores are the directly computed log-probs; TRL's are its own sequences'.
    check = report["checks"]["toy"]
    assert check["verdict"] == "PASS" and check["mmalign_vs_direct_max_abs"] <= 1e-4
    assert check["trl_vs_direct_trl_tokens_max_abs"] <= 1e-4
    # toy-vlm's tokenizer adds BOS; TRL's collator tokenizes without special tokens.
    assert check["mmalign_prompt_starts_with_bos"] and not check["trl_prompt_starts_with_bos"]
    assert len(check["mmalign_logps"]) == 2 * bench.CHECK_ROWS

    # (b): both sides trained the same adapter size for the asked steps.
    sides = report["steps"]["toy"]["2"]
    assert set(sides) == {"mmalign", "mmalign-cached", "trl"}
    for side, r in sides.items():
        assert "error" not in r, r
        assert r["side"] == side and r["batch"] == 2
        assert len(r["step_times"]) == report["config"]["steps"] * report["config"]["rounds"]
        assert r["s_per_step"] > 0 and r["cpu_s_per_step"] > 0 and r["peak_mb"] > 0
        assert len(r["losses"]) == report["config"]["steps"] + report["config"]["warmup"]
        # Zero-initialised LoRA: the policy is the reference at step 0, so the loss is log 2.
        assert r["losses"][0] == pytest.approx(0.693147, abs=1e-5)
    assert sides["mmalign"]["trainable_params"] == sides["trl"]["trainable_params"]
    # The precomputed reference is the adapters-disabled one: the same training, step by step.
    assert sides["mmalign-cached"]["reference_pass_s"] > 0
    assert sides["mmalign-cached"]["losses"] == pytest.approx(sides["mmalign"]["losses"], abs=1e-6)
    assert {r["side"] for r in report["ratios"]} == {"mmalign", "mmalign-cached"}
    ratios = {r["metric"]: r for r in report["ratios"] if r["side"] == "mmalign"}
    assert {"s_per_step", "cpu_s_per_step", "peak_mb"} <= set(ratios)
    time_ratio = ratios["s_per_step"]
    assert time_ratio["value"] == pytest.approx(
        sides["mmalign"]["s_per_step"] / sides["trl"]["s_per_step"]
    )
    assert time_ratio["verdict"] in ("PASS", "MISS") and time_ratio["target"] == 0.7


def test_ratios_skip_a_failed_side(bench):
    ok = {"s_per_step": 1.0, "cpu_s_per_step": 1.0, "peak_mb": 10.0}
    steps = {"toy": {"8": {"mmalign": ok, "trl": {"error": "boom"}},
                     "32": {"mmalign": {**ok, "s_per_step": 0.5}, "trl": ok}}}  # fmt: skip
    ratios = bench.compute_ratios(steps)
    assert {r["batch"] for r in ratios} == {32}  # no ratio against a side that failed
    time_ratio = next(r for r in ratios if r["metric"] == "s_per_step")
    assert time_ratio["value"] == 0.5 and time_ratio["verdict"] == "PASS"
    assert next(r for r in ratios if r["metric"] == "cpu_s_per_step")["verdict"] == "MISS"
