"""`run_winrate` extended: several scorers and seeds per prompt, per_prompt.jsonl, resuming from
saved images, the self-contained report, and `mmalign eval report`."""

from __future__ import annotations

import json
import re

import pytest
import torch

from mmalign.cli import main
from mmalign.diffusion import tiny_sd_pipeline
from mmalign.eval.winrate import image_seed, run_winrate, win_stats

PROMPTS = ["a red circle on a blue background", "a green square on a white background",
           "a yellow triangle on a gray background"]  # fmt: skip
SCORERS = ["toy:fidelity", "toy:style"]


def test_several_seeds_bootstrap_over_prompts():
    # 2 prompts x 2 seeds: prompt 0 wins both, prompt 1 loses one and ties one.
    base = torch.tensor([0.0, 0.0, 1.0, 0.5])
    tuned = torch.tensor([1.0, 1.0, 0.0, 0.5])
    r = win_stats(base, tuned, seeds_per_prompt=2)
    assert r["win_rate"] == 2.5 / 4 and r["prompts"] == 2 and r["n"] == 4
    # Resampling prompts: per-prompt outcomes 1.0 and 0.25, so the interval's ends are
    # the all-prompt-1 and all-prompt-0 resamples.
    assert r["ci95"] == [0.25, 1.0]
    with pytest.raises(ValueError, match="3 seeds per prompt"):
        win_stats(base, tuned, seeds_per_prompt=3)


def test_run_writes_per_prompt_rows_and_resumes_from_saved_images(tmp_path):
    base, tuned = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    out = tmp_path / "eval"
    kw = {"steps": 2, "guidance": 2.0, "batch_size": 4, "seeds_per_prompt": 2, "seed": 7,
          "meta": {"base": "tiny0", "tuned": "tiny1"}}  # fmt: skip
    first = run_winrate(base, tuned, PROMPTS, SCORERS, out, **kw)
    assert first["images_generated"] == 12 and first["images_reused"] == 0
    rows = [json.loads(line) for line in (out / "per_prompt.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert [(r["prompt_index"], r["seed"]) for r in rows] == [
        (i, image_seed(7, i, k)) for i in range(3) for k in range(2)
    ]
    assert rows[0]["seed"] == 7 and rows[2]["seed"] == 8  # prompt i, first image: seed + i
    assert set(rows[0]["scores"]) == set(SCORERS)
    for r in rows:
        assert (out / r["base_image"]).is_file() and (out / r["tuned_image"]).is_file()
    for name in SCORERS:
        stats = first["scorers"][name]
        assert stats["n"] == 6 and stats["prompts"] == 3
        mean = sum(r["scores"][name]["tuned"] for r in rows) / 6
        assert abs(stats["tuned_mean"] - mean) < 1e-9
    # Resume: every image is read back, none generated, and the numbers are identical.
    (out / "images" / "tuned" / rows[5]["tuned_image"].split("/")[-1]).unlink()
    second = run_winrate(base, tuned, PROMPTS, SCORERS, out, **kw)
    assert second["images_generated"] == 1 and second["images_reused"] == 11
    assert second["scorers"] == first["scorers"]
    # Another sampler: every image is made again; another tuned model: only its images.
    third = run_winrate(base, tuned, PROMPTS, SCORERS, out, **{**kw, "steps": 3})
    assert third["images_generated"] == 12
    meta = {"base": "tiny0", "tuned": "tiny2"}
    fourth = run_winrate(base, tuned, PROMPTS, SCORERS, out, **{**kw, "steps": 3, "meta": meta})
    assert fourth["images_generated"] == 6 and fourth["images_reused"] == 6

    run_winrate(base, tuned, PROMPTS, SCORERS, out, **kw)
    html = (out / "report.html").read_text()
    sources = re.findall(r"src='([^']*)'", html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert len(sources) == 12 + 1 + len(SCORERS)  # images, the win-rate plot, distributions
    assert "95% CI" in html and PROMPTS[2] in html
    below = first["scorers"]["toy:fidelity"]["below_ceiling"]
    top = first["scorers"]["toy:fidelity"]["at_ceiling"]
    # the split row only where some base images reach the ceiling and some do not
    assert ("where the base scores below 1" in html) == (below is not None and top["n"] > 0)
    (out / "report.html").unlink()
    assert main(["eval", "report", str(out)]) == 0
    assert (out / "report.html").read_text() == html


def test_fingerprint_changes_when_weights_are_rewritten(tmp_path):
    import os

    from mmalign.eval.winrate import fingerprint

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    weights = run / "pytorch_lora_weights.safetensors"
    weights.write_bytes(b"a")
    before = fingerprint(str(run))
    (run / "checkpoints" / "x.safetensors").write_bytes(b"b")  # checkpoints do not count
    assert fingerprint(str(run)) == before
    os.utime(weights, ns=(1, 1))
    assert fingerprint(str(run)) != before
    assert fingerprint("toy:sd") is None


def test_report_names_a_folder_without_results(tmp_path, capsys):
    assert main(["eval", "report", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err


def test_scorer_options_per_name():
    import argparse

    from mmalign.eval.cli import scorer_kwargs

    args = argparse.Namespace(scorer_path=["pickscore=/models/ps"], scorer_device="cpu",
                              scorer_dtype="float16")  # fmt: skip
    kw = scorer_kwargs(args, ["pickscore", "hpsv2", "toy:style"])
    assert kw == {"pickscore": {"device": "cpu", "dtype": "float16", "path": "/models/ps"},
                  "hpsv2": {"device": "cpu", "dtype": "float16"}}  # fmt: skip
    args.scorer_path = ["clip=/x"]
    with pytest.raises(ValueError, match="not among the scorers"):
        scorer_kwargs(args, ["pickscore"])
    args.scorer_path = ["pickscore"]
    with pytest.raises(ValueError, match="NAME=PATH"):
        scorer_kwargs(args, ["pickscore"])
