"""The win-rate grid a person reads: whole prompts, pairs side by side, the winner framed."""

from __future__ import annotations

from PIL import Image, ImageDraw

from mmalign.grid import CELL, WIN, _font, pair_grid, wrap


def test_wrap_keeps_every_word_within_the_width():
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = _font()
    text = "a small white cross on the left on a yellow background " * 4 + "x" * 80
    lines = wrap(text, 200, font, draw)
    assert len(lines) > 4
    assert all(draw.textlength(line, font=font) <= 200 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing cut off


def _images(n: int, color: str) -> list[Image.Image]:
    return [Image.new("RGB", (32, 32), color) for _ in range(n)]


def test_pairs_fill_rows_and_the_preferred_image_is_framed():
    prompts = [f"prompt {i} " + "with many words " * (i % 3) for i in range(6)]
    scores = {"toy:fidelity": ([1.0] * 6, [0.0, 2.0, 0.0, 2.0, 0.0, 2.0])}
    wide = pair_grid(prompts, _images(6, "red"), _images(6, "blue"), scores, per_row=3)
    tall = pair_grid(prompts, _images(6, "red"), _images(6, "blue"), scores, per_row=1)
    assert wide.width > 2 * tall.width and tall.height > 2 * wide.height
    single = pair_grid(prompts[:1], _images(1, "red"), _images(1, "blue"), scores)
    # base wins the first pair: its frame (left image) is green, the tuned image's is not
    pixels = single.load()
    frames = [(x, y) for x in range(single.width) for y in range(single.height)
              if pixels[x, y] == WIN]  # fmt: skip
    assert frames and max(x for x, _ in frames) < single.width // 2 + CELL // 4
