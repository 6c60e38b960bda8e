"""The toy world's programmatic rewards: fidelity, style, users, flaws, and the scorer registry."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mmalign.rewards import SCORERS, Scorer, get_scorer, scorer_names
from mmalign.toy.flaws import dense_scores, flaw_heatmap, inject_flaws
from mmalign.toy.render import STYLES, render_batch
from mmalign.toy.rewards import (
    USERS,
    fidelity,
    fidelity_parts,
    prompt_checks,
    style_score,
    user_reward,
)
from mmalign.toy.world import COLORS, POSITIONS, SHAPES, SIZES, ToyPrompt, all_prompts


def _covering_prompts() -> list[ToyPrompt]:
    """Every shape x size x position, with colours rotating through all pairs."""
    pairs = [(c, b) for c in COLORS for b in COLORS if c != b]
    combos = [(s, z, p) for s in SHAPES for z in SIZES for p in POSITIONS]
    return [ToyPrompt(s, *pairs[(7 * i) % len(pairs)], z, p) for i, (s, z, p) in enumerate(combos)]


def _fully_different(p: ToyPrompt, rng: random.Random) -> ToyPrompt:
    color = rng.choice([c for c in COLORS if c != p.color])
    background = rng.choice([c for c in COLORS if c not in (p.background, color)])
    shape = rng.choice([s for s in SHAPES if s != p.shape])
    return ToyPrompt(shape, color, background, p.size, p.position)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("size", [32, 64])
def test_fidelity_of_own_render(style, size):
    batch = _covering_prompts() if size == 32 else _covering_prompts()[::3]
    scores = fidelity(render_batch(batch, size, style), batch)
    assert scores.min() >= 0.95, [batch[i].text for i in (scores < 0.95).nonzero()[:, 0]]


def test_fidelity_of_many_renders_and_jitter():
    batch = all_prompts()[::5]
    assert fidelity(render_batch(batch, 32, "outlined"), batch).min() >= 0.95
    # Jittered training images still read as their prompt almost always.
    jittered = fidelity(render_batch(batch, 32, "flat", seed=0), batch)
    assert (jittered >= 0.95).float().mean() > 0.97


def test_fidelity_parts_each_count_a_third():
    p = ToyPrompt("circle", "red", "blue")
    image = render_batch([p])
    for wrong, part in [
        (ToyPrompt("circle", "red", "green"), "background"),
        (ToyPrompt("circle", "yellow", "blue"), "color"),
        (ToyPrompt("square", "red", "blue"), "shape"),
    ]:
        parts = fidelity_parts(image, [wrong])
        assert parts[part].item() == 0
        assert all(v.item() == 1 for k, v in parts.items() if k != part)
        assert abs(fidelity(image, [wrong]).item() - 2 / 3) < 1e-6


def test_prompt_checks_pass_renders_and_fail_the_wrong_part():
    """The card's pass / fail check: every check passes on a render of its own prompt (all
    shapes, sizes and both styles), and exactly the wrong part fails for another prompt."""
    batch = _covering_prompts()
    for style in STYLES:
        checks = prompt_checks(render_batch(batch, 32, style), batch)
        assert all(bool((v == 1).all()) for v in checks.values()), style
    image = render_batch([ToyPrompt("cross", "red", "blue", size="small")])
    for wrong, part in [
        (ToyPrompt("cross", "red", "green", size="small"), "background"),
        (ToyPrompt("cross", "orange", "blue", size="small"), "hue"),
        (ToyPrompt("triangle", "red", "blue", size="small"), "shape"),
    ]:
        checks = prompt_checks(image, [wrong])
        assert {k for k, v in checks.items() if v.item() == 0} == {part}
    blank = torch.rand(1, 3, 1, 1).expand(1, 3, 32, 32)  # no shape: hue and shape fail
    assert prompt_checks(blank, ["a red cross on a blue background"])["shape"].item() == 0


def test_fidelity_of_a_fully_different_prompt():
    rng = random.Random(0)
    batch = all_prompts()[::13]
    for style in STYLES:
        images = render_batch(batch, 32, style)
        other = [_fully_different(p, rng) for p in batch]
        assert fidelity(images, other).max() <= 0.35


def test_fidelity_of_noise_is_low():
    g = torch.Generator().manual_seed(0)
    batch = all_prompts()[::23]
    n = len(batch)
    for images in [
        torch.rand(n, 3, 32, 32, generator=g),
        (0.5 + 0.2 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1),
        F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=32, mode="bilinear"),
        torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, 32, 32),  # no foreground at all
    ]:
        scores = fidelity(images, batch)
        assert scores.mean() < 0.1 and scores.max() <= 0.4


def test_fidelity_checks_its_inputs():
    images = render_batch(["a red circle on a blue background"] * 2)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        fidelity(images, ["a red circle on a blue background"])
    with pytest.raises(ValueError, match=r"\[B,3,H,H\]"):
        fidelity(images[:, :, :8, :8], ["a red circle on a blue background"] * 2)


def test_style_separates_flat_and_outlined():
    batch = all_prompts()[::17]
    flat, outlined = render_batch(batch, 32, "flat"), render_batch(batch, 32, "outlined")
    assert style_score(flat, "outlined").max() < 0.1
    assert style_score(outlined, "outlined").min() > 0.9
    assert style_score(flat, "flat").min() > 0.9
    assert style_score(outlined, "flat").max() < 0.1
    assert style_score(torch.full((1, 3, 32, 32), 0.5), "outlined").item() == 0  # no shape


def _pair(user: str) -> tuple[list[ToyPrompt], list[ToyPrompt]]:
    """(liked, disliked) prompts, each rendered faithfully, differing only in the user's taste."""
    red, blue = ToyPrompt("circle", "red", "white"), ToyPrompt("circle", "blue", "white")
    orange, purple = ToyPrompt("cross", "orange", "gray"), ToyPrompt("cross", "purple", "gray")
    big = ToyPrompt("square", "green", "white", "large")
    small = ToyPrompt("square", "green", "white", "small")
    return {
        "warm": ([red, orange], [blue, purple]),
        "cool": ([blue, purple], [red, orange]),
        "big": ([big], [small]),
        "small": ([small], [big]),
        "outline": ([red, big], [red, big]),
    }[user]


@pytest.mark.parametrize("user", list(USERS))
def test_users_prefer_their_taste(user):
    liked, disliked = _pair(user)
    liked_style = "outlined" if user == "outline" else "flat"
    good = user_reward(render_batch(liked, 32, liked_style), liked, user)
    bad = user_reward(render_batch(disliked, 32, "flat"), disliked, user)
    assert (good > bad + 0.1).all()
    assert ((good >= 0) & (good <= 1)).all()


def test_users_still_want_the_prompt_followed():
    # The cool user asked for a red circle: a faithful red circle beats a blue one.
    asked = ToyPrompt("circle", "red", "white")
    faithful = render_batch([asked])
    tasteful = render_batch([ToyPrompt("circle", "blue", "white")])
    for user in USERS:
        assert user_reward(faithful, [asked], user) > user_reward(tasteful, [asked], user)
    noise = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert user_reward(noise, [asked] * 8, "warm").max() < 0.2
    with pytest.raises(ValueError, match="did you mean 'warm'"):
        user_reward(faithful, [asked], "wram")


def _clean_batch(n: int = 64) -> tuple[list[ToyPrompt], torch.Tensor]:
    every = all_prompts()[:: len(all_prompts()) // n][:n]
    flat, outlined = every[::2], every[1::2]
    return flat + outlined, torch.cat(
        [render_batch(flat, 32, "flat"), render_batch(outlined, 32, "outlined")]
    )


def test_inject_flaws_marks_exactly_the_changed_pixels():
    _, images = _clean_batch()
    flawed, truth = inject_flaws(images, seed=0)
    assert flawed.shape == images.shape and truth.shape == (len(images), 1, 32, 32)
    changed = (flawed - images).abs().amax(1, keepdim=True) > 0.05
    assert torch.equal(truth.bool(), changed)
    assert ((flawed - images).abs().amax(1, keepdim=True)[~changed] == 0).all()
    again, _ = inject_flaws(images, seed=0)
    assert torch.equal(flawed, again)
    assert truth.flatten(1).any(1).float().mean() > 0.8  # flaws are usually visible
    for kind in ("blotch", "smear"):
        assert inject_flaws(images, torch.Generator().manual_seed(1), kinds=(kind,))[1].sum() > 0
    with pytest.raises(ValueError, match="scratch"):
        inject_flaws(images, 0, kinds=("scratch",))


@pytest.mark.parametrize("kind", ["blotch", "smear"])
def test_predicted_artifacts_overlap_injected_flaws(kind):
    batch, images = _clean_batch()
    flawed, truth = inject_flaws(images, seed=1, kinds=(kind,))
    artifact = dense_scores(flawed, batch)["artifact"]
    predicted = artifact > 0.5
    truth = truth > 0.5
    has = truth.flatten(1).any(1)
    inter = (predicted & truth).flatten(1).sum(1).float()[has]
    precision = inter / predicted.flatten(1).sum(1).clamp(min=1)[has]
    iou = inter / (predicted | truth).flatten(1).sum(1).float()[has]
    chance = truth.float().mean()  # the precision of a random guess: ~0.04
    assert precision.mean() > 10 * chance and precision.mean() > 0.6
    assert iou.mean() > 0.4
    # Without ground truth, flaw_heatmap finds the same pixels on faithful images.
    assert (flaw_heatmap(flawed, batch) - artifact).abs().mean() < 0.01


def test_dense_scores():
    batch, images = _clean_batch()
    clean = dense_scores(images, batch)
    assert set(clean) == {
        "alignment",
        "aesthetics",
        "plausibility",
        "overall",
        "misalignment",
        "artifact",
    }
    for key in ("alignment", "aesthetics", "plausibility", "overall"):
        assert clean[key].shape == (len(batch),) and clean[key].min() > 0.95
    assert clean["artifact"].max() == 0 and clean["misalignment"].max() == 0
    flawed, _ = inject_flaws(images, seed=2)
    damaged = dense_scores(flawed, batch)
    assert damaged["plausibility"].mean() < 0.8 and damaged["overall"].mean() < 0.95
    noise = dense_scores(
        torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)), batch[:8]
    )
    assert noise["overall"].max() < 0.2 and noise["aesthetics"].max() < 0.2
    # A shape in the wrong colour is misaligned, not an artifact.
    asked = ToyPrompt("circle", "blue", "white", "large")
    wrong = dense_scores(render_batch([ToyPrompt("circle", "red", "white", "large")]), [asked])
    assert wrong["artifact"].max() == 0
    assert wrong["misalignment"].sum() > 100 and wrong["plausibility"].item() == 1


def test_get_scorer_names():
    toy = {"toy:fidelity", "toy:style", "toy:user", "toy:flaws"}
    # The real models register too (tests/test_rewards_real.py loads them from tiny weights).
    real = {"pickscore", "hpsv2", "clip", "aesthetic", "imagereward", "dense"}  # dense:<path>
    assert toy | real == set(SCORERS)
    names = scorer_names()
    assert {"toy:fidelity", "toy:style", "toy:style:flat", "toy:flaws"} <= set(names)
    assert {f"toy:user:{u}" for u in USERS} <= set(names)
    batch, images = _clean_batch(8)
    texts = [p.text for p in batch]
    for name in [n for n in names if n.startswith("toy:")]:
        scorer = get_scorer(name)
        assert isinstance(scorer, Scorer) and scorer.name.startswith(name)
        scores = scorer.score(images, texts)
        assert scores.shape == (8,) and ((scores >= 0) & (scores <= 1)).all()
    assert get_scorer("toy:style").name == "toy:style:outlined"
    assert get_scorer("toy:fidelity").score(images, texts).min() > 0.95


def test_scorers_take_pil_images():
    batch, images = _clean_batch(4)
    pil = [
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        for img in images
    ]
    texts = [p.text for p in batch]
    scorer = get_scorer("toy:fidelity")
    assert torch.allclose(scorer.score(pil, texts), scorer.score(images, texts))


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("toy:fidelty", "did you mean 'toy:fidelity'"),
        ("toy:user:wram", "did you mean 'warm'"),
        ("toy:user", "needs a user"),
        ("toy:style:glossy", "unknown toy style"),
        ("pikscore", "did you mean 'pickscore'"),
    ],
)
def test_get_scorer_errors(name, hint):
    with pytest.raises(ValueError, match=hint):
        get_scorer(name)
