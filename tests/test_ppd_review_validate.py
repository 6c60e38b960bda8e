"""PPD's training validation grid conditions on the user at any guidance: unguided
(`validation.guidance` <= 1) the pipeline does not split [zeros; e] into negative and positive,
so the embeddings must be the user's alone, as `UserPipeline` passes them."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmalign.diffusion import ppd
from mmalign.diffusion.load import tiny_sd_pipeline
from mmalign.diffusion.ppd_recipe import PPDRecipe
from mmalign.diffusion.ppd_users import UserPipeline

PROMPTS = ["a red circle", "a blue cross"]


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_validation_images_are_the_users_own(guidance):
    pipe = tiny_sd_pipeline()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in ppd.add_user_branch(pipe.unet, 8):  # a branch that changes the images
            p.data.add_(torch.randn_like(p) * 0.1)
    e = torch.randn(8, generator=torch.Generator().manual_seed(1))
    sampled = []

    def sample(prompts, **extra):
        gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
        out = pipe(prompts, num_inference_steps=2, guidance_scale=guidance, generator=gens,
                   output_type="pil", **extra).images  # fmt: skip
        sampled.append(out)
        return out

    recipe = SimpleNamespace(
        cfg=SimpleNamespace(validation=SimpleNamespace(prompts=PROMPTS, guidance=guidance)),
        accelerator=SimpleNamespace(device=torch.device("cpu")),
        users=["u"], embeddings={"u": e}, _sampling=contextlib.nullcontext, _sample=sample,
        validation_guidance=lambda: guidance, diffusion=SimpleNamespace(pipe=pipe),
    )  # fmt: skip
    PPDRecipe.validate(recipe, 0)  # the grid of the first users' rows
    gens = [torch.Generator().manual_seed(i) for i in range(len(PROMPTS))]
    want = UserPipeline(pipe, e)(PROMPTS, num_inference_steps=2, guidance_scale=guidance,
                                 generator=gens, output_type="pil").images  # fmt: skip
    for got, ref in zip(sampled[0], want, strict=True):
        np.testing.assert_array_equal(np.array(got), np.array(ref))
