"""`mmalign eval flaws`: the flawed area of an `eval winrate` folder's images equals the mean
of toy:flaws' artifact heatmaps computed directly, injected flaws raise it, intervals bracket
the mean, and two folders are compared paired (same prompts and seeds required)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmalign.cli import main
from mmalign.eval.flaw_area import flaw_report
from mmalign.toy.flaws import dense_scores, inject_flaws
from mmalign.toy.render import render_batch
from mmalign.toy.world import sample_prompts


def to_png(image: torch.Tensor, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)


def fake_eval(folder, prompts, base, tuned) -> None:
    rows = []
    for i, prompt in enumerate(prompts):
        row = {"prompt_index": i, "prompt": str(prompt), "seed": i,
               "base_image": f"images/base/{i}.png",
               "tuned_image": f"images/tuned/{i}.png",
               "scores": {"toy:x": {"base": 0.0, "tuned": float(tuned[i].mean())}}}  # fmt: skip
        to_png(base[i], folder / row["base_image"])
        to_png(tuned[i], folder / row["tuned_image"])
        rows.append(row)
    (folder / "per_prompt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_flawed_area_matches_direct_heatmaps_and_compares_paired(tmp_path, capsys):
    prompts = sample_prompts(12, "heldout", seed=0)
    clean = render_batch(prompts, 32)
    flawed, _ = inject_flaws(clean, seed=1)
    fake_eval(tmp_path / "a", prompts, clean, clean)
    fake_eval(tmp_path / "b", prompts, clean, flawed)
    report = flaw_report([tmp_path / "a", tmp_path / "b"])
    a, b = report["runs"][str(tmp_path / "a")], report["runs"][str(tmp_path / "b")]
    stored = torch.stack([
        torch.from_numpy(np.array(Image.open(tmp_path / "b" / f"images/tuned/{i}.png"),
                                  dtype=np.float32) / 255).permute(2, 0, 1)
        for i in range(12)
    ])  # fmt: skip
    direct = dense_scores(stored, [str(p) for p in prompts])["artifact"].mean()
    assert b["tuned_area"]["mean"] == pytest.approx(float(direct), abs=1e-6)
    assert a["tuned_area"]["mean"] == a["base_area"]["mean"] and a["area_change"]["mean"] == 0
    assert b["tuned_area"]["mean"] > a["tuned_area"]["mean"] and b["prompts"] == 12
    lo, hi = b["tuned_area"]["ci95"]
    assert lo <= b["tuned_area"]["mean"] <= hi
    d = report["tuned_area_difference"]
    assert d["mean"] == pytest.approx(b["tuned_area"]["mean"] - a["tuned_area"]["mean"])
    assert d["ci95"][0] > 0  # every flawed image has more unexplained pixels
    x = report["tuned_score_difference"]["toy:x"]
    assert x["mean"] == pytest.approx(float((flawed - clean).mean()), abs=1e-6)
    assert x["ci95"][0] <= x["mean"] <= x["ci95"][1]

    out = tmp_path / "flaws.json"
    assert main(["eval", "flaws", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                 str(out)]) == 0  # fmt: skip
    assert "paired" in capsys.readouterr().out and json.loads(out.read_text())["runs"]

    fake_eval(tmp_path / "c", prompts[::-1], clean, clean)
    with pytest.raises(ValueError, match="same prompts and seeds"):
        flaw_report([tmp_path / "a", tmp_path / "c"])
    assert main(["eval", "flaws", str(tmp_path / "nowhere")]) == 2
