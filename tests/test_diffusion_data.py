"""The diffusion step's data and encoder settings: VAE chunks, seeded draws, flips, filters."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmalign.diffusion import DiffusionModel, tiny_sd_pipeline
from mmalign.diffusion.data import crop_and_resize, flip_coin
from mmalign.diffusion.encode import Encoder


@pytest.fixture(scope="module")
def model() -> DiffusionModel:
    return DiffusionModel(tiny_sd_pipeline(seed=0), "sd", "tiny-sd")


def test_latents_match_one_generator_per_image(model):
    """One re-seeded generator draws what diffusers' sample() draws with one per image."""
    vae = model.pipe.vae
    pixels = torch.rand((6, 3, 32, 32), generator=torch.Generator().manual_seed(0)) * 2 - 1
    seeds = [3, 5, 7, 11, 13, 17]
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    with torch.no_grad():
        posterior = vae.encode(pixels).latent_dist
        expected = posterior.sample(generator=gens) * vae.config.scaling_factor
    assert torch.equal(Encoder(model, vae_batch_size=None).latents(pixels, seeds), expected)
    # In chunks the VAE may round differently by a few ulps, never by a different draw.
    chunked = Encoder(model, vae_batch_size=4).latents(pixels, seeds)
    torch.testing.assert_close(chunked, expected, atol=1e-5, rtol=0)


def test_crop_and_resize_matches_torchvision_bilinear():
    """The script's transforms (Resize(R, BILINEAR), CenterCrop(R), flip, ToTensor,
    Normalize(0.5, 0.5)) give the same pixels."""
    transforms = pytest.importorskip("torchvision.transforms")
    g = torch.Generator().manual_seed(0)
    for w, h in ((96, 80), (64, 40), (41, 77), (32, 32), (100, 33)):
        array = (torch.rand((h, w, 3), generator=g) * 255).to(torch.uint8).numpy()
        image = Image.fromarray(array)
        for flip in (False, True):
            steps = [
                transforms.Resize(32, interpolation=transforms.InterpolationMode.BILINEAR),
                transforms.CenterCrop(32),
                *([transforms.RandomHorizontalFlip(p=1.0)] if flip else []),
                transforms.ToTensor(),
                transforms.Normalize([0.5], [0.5]),
            ]
            expected = transforms.Compose(steps)(image)
            pixels, original, _ = crop_and_resize(image, 32, "bilinear", flip)
            assert original == (h, w)
            torch.testing.assert_close(pixels, expected, atol=1e-6, rtol=0)


def test_flip_mirrors_the_crop_and_its_left_offset():
    image = Image.new("RGB", (64, 40), "black")
    image.paste((255, 0, 0), (0, 0, 20, 40))  # a red band on the left
    plain, _, (top, left) = crop_and_resize(image, 32)
    flipped, _, (top_f, left_f) = crop_and_resize(image, 32, flip=True)
    assert torch.equal(flipped, plain.flip(-1))
    assert top_f == top and left_f == 51 - 32 - left  # counted in the mirrored image


def test_flip_coins_are_fixed_by_seed_row_and_side_and_fair():
    coins = [flip_coin(0, row, side) for row in range(400) for side in (0, 1)]
    assert coins == [flip_coin(0, row, side) for row in range(400) for side in (0, 1)]
    assert 0.4 < sum(coins) / len(coins) < 0.6
    assert coins != [flip_coin(1, row, side) for row in range(400) for side in (0, 1)]


def test_an_unknown_filter_is_named():
    from datasets import Dataset

    from mmalign.diffusion.data import PairImages

    rows = Dataset.from_dict({"prompt": ["a"], "chosen": [None], "rejected": [None]})
    with pytest.raises(ValueError, match="resize_filter"):
        PairImages(rows, 32, resize_filter="box")


def test_sdxl_flips_a_pair_together_sd15_each_image(tmp_path):
    """As diffusers' scripts: train_diffusion_dpo_sdxl.py stacks chosen and rejected and flips
    them with one coin; train_diffusion_dpo.py flips each image on its own. The recipe picks by
    family, and the pre-encoding cache key tells the two apart."""
    from datasets import Dataset

    from mmalign.diffusion.data import PairImages

    image = Image.new("RGB", (32, 32), "black")
    image.paste((255, 0, 0), (0, 0, 8, 32))  # a red band on the left: a flip shows
    n = 64
    rows = Dataset.from_dict({"prompt": ["a"] * n, "chosen": [image] * n, "rejected": [image] * n})
    each, pairs = PairImages(rows, 32, flip_seed=0), PairImages(rows, 32, flip_seed=0,
                                                              flip_pairs=True)  # fmt: skip
    flipped = [[bool(x["pixels"][s, 0, 0, -1] > 0) for s in (0, 1)] for x in (pairs[i] for i in
               range(n))]  # fmt: skip
    assert all(c == r for c, r in flipped) and 10 < sum(c for c, _ in flipped) < 54
    assert any(c != r for c, r in ([bool(each[i]["pixels"][s, 0, 0, -1] > 0) for s in (0, 1)]
                                   for i in range(n)))  # fmt: skip
    assert each.describe() != pairs.describe()
    assert PairImages(rows, 32, flip_pairs=True).describe() == PairImages(rows, 32).describe()


@pytest.mark.parametrize(("family", "together"), [("sd", False), ("sdxl", True)])
def test_the_recipe_flips_by_family(family, together):
    from mmalign.diffusion.recipe import DiffusionRecipe

    recipe = DiffusionRecipe.__new__(DiffusionRecipe)  # only the family matters here
    recipe.diffusion = DiffusionModel(tiny_sd_pipeline(seed=0), family, "tiny")  # type: ignore[arg-type]
    assert recipe._flip_pairs() is together
