"""The toy world's grammar, train/held-out split and renderer."""

from __future__ import annotations

import pytest
import torch

from mmalign.toy.render import OUTLINE_RGB, palette_tensor, render, render_batch
from mmalign.toy.world import (
    COLORS,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    ToyPrompt,
    all_prompts,
    is_heldout,
    parse_prompt,
    prompts,
    sample_prompts,
)


def test_vocabulary():
    assert len(COLORS) >= 6 and len(SHAPES) == 4
    assert set(SIZES) == {"small", "medium", "large"}
    assert set(POSITIONS) == {"center", "left", "right", "top", "bottom"}
    rgb = palette_tensor(COLORS)
    gaps = torch.cdist(rgb, rgb) + torch.eye(len(COLORS)) * 9
    assert gaps.min() > 0.4  # nearest-colour reading stays unambiguous


def test_text_examples():
    assert ToyPrompt("circle", "red", "blue").text == "a red circle on a blue background"
    p = ToyPrompt("circle", "red", "blue", "small", "left")
    assert p.text == "a small red circle on the left on a blue background"
    assert ToyPrompt("cross", "orange", "white", position="top").text == (
        "an orange cross at the top on a white background"
    )
    assert ToyPrompt("square", "gray", "orange").text == "a gray square on an orange background"


def test_round_trip_every_prompt():
    everything = all_prompts()
    assert len(everything) == len(SHAPES) * len(COLORS) * (len(COLORS) - 1) * 3 * 5
    texts = [p.text for p in everything]
    assert len(set(texts)) == len(texts)
    for p, text in zip(everything, texts, strict=True):
        assert parse_prompt(text) == p
        assert parse_prompt(text).text == text


def test_parse_forgives_case_and_spaces():
    assert parse_prompt("  A Large  RED square on a Blue background ") == ToyPrompt(
        "square", "red", "blue", "large"
    )


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("a pink circle on a blue background", "pink"),
        ("a red hexagon on a blue background", "hexagon"),
        ("a red circle on a blue backdrop", "backdrop"),
        ("a red circle in the corner on a blue background", "in the corner"),
        ("red circle on a blue background", "red circle"),
        ("a red circle on a bleu background", "bleu"),
    ],
)
def test_parse_error_names_the_bad_part(text, names):
    with pytest.raises(ValueError, match=names):
        parse_prompt(text)


def test_prompt_validation():
    with pytest.raises(ValueError, match="both red"):
        ToyPrompt("circle", "red", "red")
    with pytest.raises(ValueError, match="did you mean 'circle'"):
        ToyPrompt("circel", "red", "blue")


def test_split_disjoint_complete_and_by_combination():
    train, heldout = prompts("train"), prompts("heldout")
    assert set(train).isdisjoint(heldout)
    assert len(train) + len(heldout) == len(all_prompts())
    assert 0.12 < len(heldout) / len(all_prompts()) < 0.22
    # Held out by (shape, colour, background): no training prompt shares such a combination.
    assert {p.combination for p in train}.isdisjoint({p.combination for p in heldout})
    assert all(is_heldout(p) for p in heldout)


def test_split_is_stable():
    # Pinned: a change here silently leaks held-out prompts into training data.
    heldout = sorted({p.combination for p in prompts("heldout")})
    assert len(heldout) == 38
    assert len(prompts("train")) == 2790 and len(prompts("heldout")) == 570
    assert heldout[:3] == [
        ("circle", "gray", "white"),
        ("circle", "gray", "yellow"),
        ("circle", "green", "orange"),
    ]


def test_sample_prompts():
    a = sample_prompts(50, "heldout", seed=3)
    assert a == sample_prompts(50, "heldout", seed=3)
    assert a != sample_prompts(50, "heldout", seed=4)
    assert all(is_heldout(p) for p in a)
    assert not any(is_heldout(p) for p in sample_prompts(200, "train", seed=0))
    with pytest.raises(ValueError, match="split"):
        prompts("test")


def test_render_is_deterministic_and_in_range():
    batch = sample_prompts(16, "all", seed=0)
    for style in ("flat", "outlined"):
        a = render_batch(batch, 32, style)
        assert a.shape == (16, 3, 32, 32) and a.dtype == torch.float32
        assert torch.equal(a, render_batch([p.text for p in batch], 32, style))
        assert a.min() >= 0 and a.max() <= 1
    single = render(batch[0], 48, "outlined")
    assert single.shape == (3, 48, 48)
    assert torch.equal(single, render_batch(batch[:1], 48, "outlined")[0])


def test_render_uses_only_prompt_colors():
    p = ToyPrompt("triangle", "yellow", "purple", "large")
    flat = render(p).flatten(1).T.unique(dim=0)
    assert {tuple(round(float(c) * 255) for c in rgb) for rgb in flat} == {
        PALETTE["yellow"],
        PALETTE["purple"],
    }
    outlined = render(p, style="outlined").flatten(1).T.unique(dim=0)
    assert {tuple(round(float(c) * 255) for c in rgb) for rgb in outlined} == {
        PALETTE["yellow"],
        PALETTE["purple"],
        OUTLINE_RGB,
    }


def test_jitter_varies_but_is_reproducible():
    p = "a red square on a white background"
    a = render(p, jitter=torch.Generator().manual_seed(0))
    b = render(p, jitter=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    many = render_batch([p] * 8, seed=1)
    assert len({tuple(img.flatten().tolist()) for img in many}) > 1
    assert torch.equal(many, render_batch([p] * 8, seed=1))


def _mask_and_centre(prompt: ToyPrompt) -> tuple[float, float, float]:
    img = render(prompt, 32)
    mask = (img - palette_tensor([prompt.background])[0][:, None, None]).abs().sum(0) > 0
    ys, xs = mask.nonzero(as_tuple=True)
    return float(mask.sum()), float(xs.float().mean()), float(ys.float().mean())


def test_sizes_and_positions():
    areas = [_mask_and_centre(ToyPrompt("circle", "red", "blue", s))[0] for s in SIZES]
    assert areas[0] < areas[1] < areas[2]
    _, cx, cy = _mask_and_centre(ToyPrompt("circle", "red", "blue"))
    assert abs(cx - 15.5) < 0.5 and abs(cy - 15.5) < 0.5
    for size in SIZES:
        where = {
            pos: _mask_and_centre(ToyPrompt("square", "red", "blue", size, pos))[1:]
            for pos in POSITIONS
        }
        assert where["left"][0] < cx - 3 < cx + 3 < where["right"][0]
        assert where["top"][1] < cy - 3 < cy + 3 < where["bottom"][1]
        # The border stays background, whatever the size and position.
        for pos in POSITIONS:
            img = render(ToyPrompt("square", "red", "blue", size, pos))
            border = torch.cat([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], 1)
            assert (border == palette_tensor(["blue"])[0][:, None]).all()


def test_render_rejects_unknown_style():
    with pytest.raises(ValueError, match="style"):
        render("a red circle on a blue background", style="glossy")
