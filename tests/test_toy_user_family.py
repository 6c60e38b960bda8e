"""The PPD family of toy users (Dang et al. CVPR 2025): deterministic, disjoint, per-user pairs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from datasets import load_from_disk

from mmalign.rewards import get_scorer
from mmalign.toy.datasets import build_dataset
from mmalign.toy.render import render_batch
from mmalign.toy.rewards import (
    ALL_USERS,
    HELDOUT_USERS,
    TRAIN_USERS,
    USERS,
    fidelity,
    user_reward,
    user_taste,
    user_weights,
)
from mmalign.toy.world import ToyPrompt


def _tensor(image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def _assert_labelled_by_their_user(rows) -> None:
    for row in rows:
        c = user_reward(_tensor(row["chosen"]), [row["prompt"]], row["user_id"])
        r = user_reward(_tensor(row["rejected"]), [row["prompt"]], row["user_id"])
        assert float(c) > float(r), row["user_id"]


def test_family_sizes_disjoint_and_named_users_kept() -> None:
    assert len(TRAIN_USERS) >= 16 and len(HELDOUT_USERS) >= 8
    assert not set(TRAIN_USERS) & set(HELDOUT_USERS)
    assert list(USERS) == ["warm", "cool", "big", "small", "outline"]
    assert set(ALL_USERS) == set(USERS) | set(TRAIN_USERS) | set(HELDOUT_USERS)
    weights = {u: user_weights(u) for u in TRAIN_USERS + HELDOUT_USERS}
    assert len(set(weights.values())) == len(weights)  # no two users alike
    for w in weights.values():
        assert sum(abs(x) for x in w) == pytest.approx(1.0)


def test_family_weights_are_pinned() -> None:
    # A pure function of the id: these numbers must not drift between machines or versions.
    assert user_weights("t00") == pytest.approx((0.264, -0.31, 0.097, -0.127, -0.202), abs=1e-3)
    assert user_weights("h05") == pytest.approx((-0.448, -0.017, 0.025, 0.189, -0.322), abs=1e-3)


def test_taste_axes_read_size_and_place() -> None:
    from mmalign.toy.analysis import read_images
    from mmalign.toy.rewards import TASTE_DIMS, taste_axes

    places = ("center", "left", "right", "top", "bottom")
    asked = [ToyPrompt("square", "red", "white", "medium", p) for p in places]
    images = render_batch([*asked, ToyPrompt("square", "red", "white", "large")], 32, "flat")
    axes = dict(zip(TASTE_DIMS, taste_axes(images, read_images(images)).T.tolist(), strict=True))
    horizontal, vertical = axes["horizontal"], axes["vertical"]
    assert horizontal[0] == pytest.approx(0.0, abs=0.05) and vertical[0] == pytest.approx(
        0.0, abs=0.05
    )
    assert horizontal[1] < -0.5 < 0.5 < horizontal[2]  # left, right
    assert vertical[3] > 0.5 > -0.5 > vertical[4]  # top (up is positive), bottom
    assert horizontal[3] == pytest.approx(0.0, abs=0.05) and vertical[1] == pytest.approx(
        0.0, abs=0.05
    )
    assert axes["size"][5] > axes["size"][0] + 0.3  # large reads bigger than medium


def test_family_taste_follows_the_weights() -> None:
    asked = ToyPrompt("circle", "red", "white", "medium")
    flat, outlined = render_batch([asked], 32, "flat"), render_batch([asked], 32, "outlined")
    for u in TRAIN_USERS + HELDOUT_USERS:
        gap = float(user_taste(outlined, u) - user_taste(flat, u))
        # The outline axis moves by ~2 between flat and outlined; only its weight should count.
        assert gap == pytest.approx(user_weights(u)[2], abs=0.15), u
        assert (gap > 0) == (user_weights(u)[2] > 0) or abs(user_weights(u)[2]) < 0.1


def test_family_rewards_in_range_and_prompt_first() -> None:
    asked = ToyPrompt("square", "blue", "yellow")
    good = render_batch([asked] * 2, 32, "flat")
    wrong = render_batch([ToyPrompt("triangle", "green", "white")] * 2, 32, "flat")
    for u in ("t03", "h01"):
        r = user_reward(good, [asked] * 2, u)
        assert ((r >= 0) & (r <= 1)).all()
        assert (r > user_reward(wrong, [asked] * 2, u)).all()
        assert (r <= fidelity(good, [asked] * 2) + 1e-6).all()


def test_every_user_is_a_scorer_and_unknown_ids_say_did_you_mean() -> None:
    images = render_batch([ToyPrompt("circle", "red", "white")], 32)
    for u in ("warm", "t00", "h07"):
        s = get_scorer(f"toy:user:{u}")
        assert s.score(images, [ToyPrompt("circle", "red", "white").text]).shape == (1,)
    with pytest.raises(ValueError, match="did you mean 'h07'"):
        get_scorer("toy:user:h7")
    with pytest.raises(ValueError, match="did you mean"):
        user_weights("t999")


def test_heldout_users_dataset_deterministic_and_labelled(tmp_path) -> None:
    summary = build_dataset("users", tmp_path / "a", n=16, seed=0, users="heldout")
    build_dataset("users", tmp_path / "b", n=16, seed=0, users="heldout")
    a = load_from_disk(str(tmp_path / "a" / "pairs"))
    b = load_from_disk(str(tmp_path / "b" / "pairs"))
    assert summary["user_set"] == "heldout" and summary["shortfall"] == 0
    assert sorted(set(a["user_id"])) == sorted(HELDOUT_USERS)
    assert a["prompt"] == b["prompt"] and a["label"] == b["label"]
    _assert_labelled_by_their_user(a)
    with pytest.raises(ValueError, match="did you mean 'heldout'"):
        build_dataset("users", tmp_path / "c", n=4, users="heldou")
    with pytest.raises(ValueError, match="did you mean 'model-layouts'"):
        build_dataset("users", tmp_path / "c", n=4, candidates="model-layout")


def _sized_build(tmp_path, monkeypatch, candidates: str) -> tuple[list[tuple[str, str]], Any]:
    """An 8-row heldout users build with `candidates`: the (first, second) captions toy-sd was
    asked to draw, and the saved rows."""
    from mmalign.toy.datasets import sampling

    seen: list[list[str]] = []
    real = sampling.model_images

    def spy(pipe, texts, seed, **kw):
        seen.append(list(texts))
        return real(pipe, texts, seed, **kw)

    monkeypatch.setattr(sampling, "model_images", spy)
    build_dataset(
        "users", tmp_path / candidates, n=8, seed=0, users="heldout", candidates=candidates,
        steps=2, max_rounds=1, progress=False,
    )  # fmt: skip
    texts = seen[0]
    half = len(texts) // 2
    pairs = list(zip(texts[:half], texts[half:], strict=True))
    return pairs, load_from_disk(str(tmp_path / candidates / "pairs"))


def test_model_sizes_candidates_sample_two_size_words_and_keep_the_bare_caption(
    tmp_path, monkeypatch
) -> None:
    pairs, rows = _sized_build(tmp_path, monkeypatch, "model-sizes")
    sizes = ("small ", "large ")
    for a, b in pairs:
        assert a != b  # two different sizes: at most one of them is medium (no size word)
        assert sum(w in a for w in sizes) + sum(w in b for w in sizes) >= 1
    assert rows["prompt"] and all(not any(w in p for w in sizes) for p in rows["prompt"])
    _assert_labelled_by_their_user(rows)
    with pytest.raises(ValueError, match="model-sizes"):
        build_dataset("users", tmp_path / "x", n=4, candidates="models")


def test_model_large_candidates_pair_the_bare_caption_with_large(tmp_path, monkeypatch):
    pairs, rows = _sized_build(tmp_path, monkeypatch, "model-large")
    for a, b in pairs:  # one bare caption, one "large", never "small"
        assert "small " not in a + b and ("large " in a) != ("large " in b)
    assert {("large " in a) for a, _ in pairs} == {True, False}  # both orders occur
    assert rows["prompt"] and not any("large " in p for p in rows["prompt"])
    _assert_labelled_by_their_user(rows)


def test_model_layouts_candidates_sample_two_layouts_and_keep_the_bare_caption(
    tmp_path, monkeypatch
) -> None:
    from mmalign.toy.world import parse_prompt

    pairs, rows = _sized_build(tmp_path, monkeypatch, "model-layouts")
    layouts = set()
    for a, b in pairs:
        pa, pb = parse_prompt(a), parse_prompt(b)
        assert (pa.size, pa.position) != (pb.size, pb.position)  # two different layouts
        assert pa.combination == pb.combination and "small" not in (pa.size, pb.size)
        layouts |= {(pa.size, pa.position), (pb.size, pb.position)}
    assert len(layouts) >= 4  # sizes and places both vary
    for prompt in rows["prompt"]:  # the row keeps the caption without size or place words
        p = parse_prompt(prompt)
        assert (p.size, p.position) == ("medium", "center")
    _assert_labelled_by_their_user(rows)


def test_render_large_candidates_differ_in_size_alone(tmp_path) -> None:
    from mmalign.toy.analysis import read_images
    from mmalign.toy.rewards import taste_axes

    build_dataset("users", tmp_path / "r", n=32, seed=0, users="train",
                  candidates="render-large", progress=False)  # fmt: skip
    rows = load_from_disk(str(tmp_path / "r" / "pairs"))
    assert len(rows) > 16 and not any("large " in p for p in rows["prompt"])
    _assert_labelled_by_their_user(rows)
    for row in rows:
        images = torch.cat([_tensor(row["chosen"]), _tensor(row["rejected"])])
        warmth, bigness, outline, *place = taste_axes(images, read_images(images)).T.tolist()
        assert warmth[0] == pytest.approx(warmth[1], abs=0.05) and outline == [-1.0, -1.0]
        assert all(abs(v) < 0.2 for axis in place for v in axis)  # both centred (jitter: 0.12)
        # a user who likes size chooses the larger render, one who dislikes it the smaller
        size_weight = user_weights(row["user_id"])[1]
        if abs(size_weight) > 0.2:
            assert (bigness[0] > bigness[1]) == (size_weight > 0), row["user_id"]


def test_render_layouts_candidates_differ_in_size_and_place_alone(tmp_path) -> None:
    from mmalign.toy.analysis import read_images
    from mmalign.toy.rewards import taste_axes

    build_dataset("users", tmp_path / "r", n=32, seed=0, users="heldout",
                  candidates="render-layouts", progress=False)  # fmt: skip
    rows = load_from_disk(str(tmp_path / "r" / "pairs"))
    assert len(rows) == 32
    _assert_labelled_by_their_user(rows)
    moved = 0
    for row in rows:
        images = torch.cat([_tensor(row["chosen"]), _tensor(row["rejected"])])
        warmth, size, outline, horizontal, vertical = taste_axes(images, read_images(images)).T
        assert abs(float(warmth[0] - warmth[1])) < 0.05 and outline.tolist() == [-1.0, -1.0]
        gaps = [abs(float(a[0] - a[1])) for a in (size, horizontal, vertical)]
        moved += max(gaps) > 0.3  # two different layouts
        # the chosen render is the one the row's user's taste prefers
        w = torch.tensor(user_weights(row["user_id"]))
        axes = taste_axes(images, read_images(images))
        assert float(axes[0] @ w) >= float(axes[1] @ w) - 1e-6, row["user_id"]
    assert moved >= 30
