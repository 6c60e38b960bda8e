"""Toy rewards on broken images: a non-finite pixel scores 0, stray pixels please no taste."""

import pytest
import torch

from mmalign.toy import flaws, rewards
from mmalign.toy.render import palette_tensor, render

PROMPT = "a large red circle on a blue background"


def _with_nan(img: torch.Tensor) -> torch.Tensor:
    out = img.clone()
    out[0, 1, 5, 5] = float("nan")
    return out


def test_one_nan_pixel_scores_zero_everywhere_and_warns():
    clean = render(PROMPT, 32)[None]
    images = torch.cat([clean, _with_nan(clean)])
    prompts = [PROMPT, PROMPT]
    with pytest.warns(UserWarning, match="1 of 2 images have NaN"):
        fid = rewards.fidelity(images, prompts)
    assert fid[0] > 0.9 and fid[1] == 0
    with pytest.warns(UserWarning):
        for user in ("warm", "big", "t00"):
            got = rewards.user_reward(images, prompts, user)
            assert got[0] > 0.5 and got[1] == 0, user
            assert rewards.user_taste(images, user)[1] == 0
        assert rewards.style_score(images, "flat")[1] == 0
        dense = flaws.dense_scores(images, prompts)
        heat = flaws.flaw_heatmap(images, prompts)
    for key in ("alignment", "aesthetics", "plausibility", "overall"):
        assert dense[key][0] > 0.9 and dense[key][1] == 0, key
    assert torch.isfinite(dense["artifact"]).all() and dense["artifact"][1].min() == 1
    assert dense["misalignment"][1].max() == 0
    assert heat[1].min() == 1 and heat[0].mean() < 0.05


def test_clean_scores_do_not_depend_on_a_broken_neighbour():
    clean = render(PROMPT, 32)[None]
    alone = rewards.user_reward(clean, [PROMPT], "t03")
    with pytest.warns(UserWarning):
        beside = rewards.user_reward(torch.cat([clean, _with_nan(clean)]), [PROMPT] * 2, "t03")
    assert torch.equal(alone, beside[:1])


def test_a_stray_warm_pixel_is_no_shape_for_the_colour_tastes():
    blue = palette_tensor(["blue"])[0]
    bare = blue[:, None, None].expand(3, 32, 32).clone()[None]
    speck = bare.clone()
    speck[0, :, 16, 16] = palette_tensor(["red"])[0]
    for user in ("warm", "cool"):
        assert rewards.user_taste(speck, user)[0] == 0, user
        assert torch.equal(
            rewards.user_reward(speck, [PROMPT], user), rewards.user_reward(bare, [PROMPT], user)
        )
