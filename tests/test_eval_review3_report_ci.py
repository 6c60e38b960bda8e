"""The report's win-rate plot when the bootstrap interval's ends round past the win rate."""

from __future__ import annotations

import torch

from mmalign.eval.report import _winrate_plot
from mmalign.eval.winrate import win_stats


def test_plot_accepts_an_interval_that_rounds_past_the_win_rate():
    # 3 prompts x 10 seeds, one win and nine losses each: every resample's mean of the
    # per-prompt rates is 0.1 up to rounding, and here its ends come out 1 ulp above the
    # pooled win rate; the error bar's length was then negative and matplotlib refused it,
    # so `mmalign eval winrate` failed writing report.html after writing results.json
    base, tuned = torch.zeros(30), -torch.ones(30)
    tuned.view(3, 10)[:, 0] = 1
    r = win_stats(base, tuned, seeds_per_prompt=10)
    assert r["win_rate"] == 0.1 and r["ci95"][0] > r["win_rate"]  # the case itself
    plot = _winrate_plot({"scorers": {"toy:fidelity": r}})
    assert plot.startswith("data:image/png;base64,")


def test_large_images_are_embedded_as_thumbnails(tmp_path):
    import base64
    import io
    import json
    import re

    import numpy as np
    from PIL import Image

    from mmalign.eval.report import THUMB, render_report

    rng = np.random.default_rng(0)
    rows = []
    for i, size in enumerate((1024, 32)):
        for side in ("base", "tuned"):
            (tmp_path / side).mkdir(exist_ok=True)
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / side / f"{i}.png")
        rows.append({"prompt_index": i, "prompt": f"p{i}", "seed": i,
                     "base_image": f"base/{i}.png", "tuned_image": f"tuned/{i}.png",
                     "scores": {"s": {"base": 0.0, "tuned": 1.0}}})  # fmt: skip
    (tmp_path / "per_prompt.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    stats = win_stats(torch.zeros(2), torch.ones(2))
    (tmp_path / "results.json").write_text(json.dumps({"scorers": {"s": stats}}))
    page = render_report(tmp_path)
    cells = re.findall(r"<img class='[a-z]*' src='data:image/png;base64,([^']*)'>", page)
    sizes = [Image.open(io.BytesIO(base64.b64decode(c))).size for c in cells]
    # the 1024 px images shrunk to THUMB (the page was 4 MB of noise for two of them), the
    # 32 px ones embedded byte for byte
    assert sizes == [(THUMB, THUMB)] * 2 + [(32, 32)] * 2
    assert base64.b64decode(cells[2]) == (tmp_path / "base" / "1.png").read_bytes()
    assert len(page) < 1_000_000
