"""Review 4: `grid.png` and `report.html` number an image the same way.

The grid numbered its cards 1, 2, 3, ... by position (with several seeds per prompt, the two
images of prompt 0 were cards 1 and 2), while the report, `per_prompt.jsonl` and the image
files number prompts from 0 (`prompt_index`, `images/base/00000-...`). A card now carries its
prompt's index, so "prompt 3" is the same prompt in the grid, the report and the files.
"""

from __future__ import annotations

import json
import re

from PIL import Image

import mmalign.grid as grid
from mmalign.diffusion import tiny_sd_pipeline
from mmalign.eval.winrate import run_winrate

PROMPTS = ["a red circle on a blue background", "a green square on a white background"]
CARD = re.compile(r"^(\d+)\. (.*?)(?:  \(seed (\d+)\))?$")


def _cards(monkeypatch) -> list[tuple[int, str, int | None]]:
    """(number, prompt, seed) of each card `pair_grid` writes, read where it wraps the text."""
    seen: list[tuple[int, str, int | None]] = []
    real = grid.wrap

    def spy(text, *args, **kwargs):
        match = CARD.match(text)
        if match:
            seed = match.group(3)
            seen.append((int(match.group(1)), match.group(2), seed and int(seed)))
        return real(text, *args, **kwargs)

    monkeypatch.setattr(grid, "wrap", spy)
    return seen


def test_the_grid_numbers_cards_by_prompt_index_as_the_report(tmp_path, monkeypatch):
    cards = _cards(monkeypatch)
    pipes = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    for p in pipes:
        p.set_progress_bar_config(disable=True)
    out = tmp_path / "eval"
    run_winrate(*pipes, PROMPTS, ["toy:fidelity"], out, steps=1, guidance=2.0, batch_size=2,
                seeds_per_prompt=2)  # fmt: skip
    rows = [json.loads(line) for line in (out / "per_prompt.jsonl").read_text().splitlines()]
    assert [(r["prompt_index"], r["prompt"], r["seed"]) for r in rows] == cards
    assert [c[0] for c in cards] == [0, 0, 1, 1]  # was 1, 2, 3, 4
    page = (out / "report.html").read_text()
    shown = re.findall(r"<div class=t>(\d+)\. ([^<]*)</div>", page)
    assert shown == [("0", PROMPTS[0]), ("1", PROMPTS[1])]
    for r in rows:  # the image files carry the same index
        assert r["base_image"].startswith(f"images/base/{r['prompt_index']:05d}-")


def test_pair_grid_numbers_from_zero_unless_told(monkeypatch):
    cards = _cards(monkeypatch)
    images = [Image.new("RGB", (32, 32), "red")] * 3
    scores = {"s": ([0.0] * 3, [1.0] * 3)}
    grid.pair_grid(["a", "b", "c"], images, images, scores)
    grid.pair_grid(["a", "b", "c"], images, images, scores, numbers=[4, 4, 7], seeds=[1, 2, 3])
    assert cards == [(0, "a", None), (1, "b", None), (2, "c", None),
                     (4, "a", 1), (4, "b", 2), (7, "c", 3)]  # fmt: skip
