"""Review 4: `run_winrate` holds one scorer at a time.

It loaded every scorer before generating and kept them all to the end: with pickscore, hpsv2,
imagereward and aesthetic that is four CLIP-sized models in GPU memory beside the two pipelines.
Each scorer is now loaded after the images exist, scores both models' images, and is freed
before the next one loads; the numbers are the same.
"""

from __future__ import annotations

import gc
import json
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

import mmalign.eval.winrate as winrate
from mmalign.diffusion import tiny_sd_pipeline
from mmalign.rewards import get_scorer

PROMPTS = ["a red circle on a blue background", "a green square on a white background"]
SCORERS = ["toy:fidelity", "toy:style:outlined"]
KW = {"steps": 1, "guidance": 2.0, "batch_size": 2, "report": False, "seeds_per_prompt": 2}


def test_one_scorer_alive_at_a_time_and_the_same_numbers(tmp_path, monkeypatch):
    alive: set[int] = set()
    most = []
    loaded = []

    def tracked(name, **kwargs):
        scorer = get_scorer(name, **kwargs)
        key = id(scorer)
        alive.add(key)
        weakref.finalize(scorer, alive.discard, key)
        most.append(len(alive))
        loaded.append(name)
        return scorer

    monkeypatch.setattr(winrate, "get_scorer", tracked)
    pipes = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    for p in pipes:
        p.set_progress_bar_config(disable=True)
    out = tmp_path / "eval"
    results = winrate.run_winrate(*pipes, PROMPTS, SCORERS, out, **KW)
    gc.collect()
    # toy scorers (no weights) are built once to check their names and dropped, then for scoring
    assert loaded == SCORERS * 2
    assert max(most) == 1, f"{max(most)} scorers were alive at once"
    assert not alive  # none kept after the run
    # the same numbers as scoring the saved images directly with every scorer at once
    rows = [json.loads(line) for line in (out / "per_prompt.jsonl").read_text().splitlines()]
    texts = [r["prompt"] for r in rows]

    def saved(side: str) -> torch.Tensor:
        arrays = [np.asarray(Image.open(out / r[f"{side}_image"])) for r in rows]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255

    base, tuned = saved("base"), saved("tuned")
    for name in SCORERS:
        scorer = get_scorer(name)
        b, t = scorer.score(base, texts), scorer.score(tuned, texts)
        assert [r["scores"][name]["base"] for r in rows] == pytest.approx(b.tolist(), abs=0)
        assert [r["scores"][name]["tuned"] for r in rows] == pytest.approx(t.tolist(), abs=0)
        want = winrate.win_stats(b, t, 0, seeds_per_prompt=2,
                                 ceiling=getattr(scorer, "ceiling", None))  # fmt: skip
        assert results["scorers"][name] == {**want, "model": scorer.name}


def test_an_unknown_scorer_fails_before_any_image_is_drawn(tmp_path):
    from mmalign.config import InputError

    pipes = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    with pytest.raises(InputError, match="unknown scorer 'toy:fidelty'"):
        winrate.run_winrate(*pipes, PROMPTS, ["toy:fidelty"], tmp_path / "eval", **KW)
    assert not (tmp_path / "eval" / "images").exists()


def test_a_toy_scorers_argument_fails_before_any_image_is_drawn(tmp_path):
    pipes = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    with pytest.raises(ValueError, match="unknown toy user 'wram'"):
        winrate.run_winrate(*pipes, PROMPTS, ["toy:user:wram"], tmp_path / "eval", **KW)
    assert not (tmp_path / "eval" / "images").exists()
