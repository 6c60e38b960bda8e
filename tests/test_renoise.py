"""ReNoise inversion (mmalign/diffusion/renoise.py) and SmPO's inverted trajectory in the pair
scorer (mmalign/diffusion/trajectory.py): batch independence, the grid level, a direct loop,
reconstruction against plain DDIM inversion, resume exactness, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from diffusion_helpers import read_metrics, save_tiny, tiny_config

from mmalign.config import ConfigError
from mmalign.diffusion import (
    DiffusionModel,
    DiffusionPairScorer,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)
from mmalign.diffusion.encode import Encoder
from mmalign.diffusion.renoise import inverse_scheduler, invert, reconstruct
from mmalign.diffusion.trajectory import make_trajectory


def pair_batch(model: DiffusionModel, b: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    text = Encoder(model).text([f"prompt {i}" for i in range(b)])
    batch = {"latents": torch.randn(b, 2, 4, 16, 16, generator=gen), **text}
    if model.family == "sdxl":
        batch["time_ids"] = torch.tensor([32.0, 32, 0, 0, 32, 32]).expand(b, 2, 6).clone()
    return batch


@pytest.mark.parametrize(
    "family,prediction", [("sd", "epsilon"), ("sd", "v_prediction"), ("sdxl", "epsilon")]
)
def test_renoise_scores_are_the_same_at_batch_1_and_8(family, prediction):
    make = tiny_sdxl_pipeline if family == "sdxl" else tiny_sd_pipeline
    pipe = make(0, prediction)
    model = DiffusionModel(pipe, family, "")  # type: ignore[arg-type]
    traj = make_trajectory("renoise", {"steps": 5}, pipe.scheduler.config, family)
    assert traj is not None
    scorer = DiffusionPairScorer(
        model, Encoder(model).empty(), reference="copy", caption_dropout=0.3, trajectory=traj
    )
    batch, seeds = pair_batch(model, 8), torch.arange(8) + 11
    with torch.no_grad():
        full = scorer(pipe.unet, batch, seeds, with_reference=True)["main"]
        calls_batched = traj.forwards
        single = [
            scorer(pipe.unet, {k: v[i : i + 1] for k, v in batch.items()}, seeds[i : i + 1],
                   with_reference=True)["main"]
            for i in range(8)
        ]  # fmt: skip
    for name in ("chosen", "rejected", "ref_chosen", "ref_rejected"):
        one = torch.cat([getattr(s, name) for s in single])
        assert torch.allclose(getattr(full, name), one, rtol=1e-5, atol=1e-7), name
    # one batched inversion for chosen and rejected: (top grid index + 1) * 2 UNet calls
    t, _, _ = scorer.draws(seeds, batch["latents"].shape[2:])
    index, _ = traj.snap(t)
    assert calls_batched == (int(index.max()) + 1) * 2
    # a row runs only up to its own level: sum over pairs of (index + 1) * 2 calls * 2 images
    rows_batched = sum((int(i) + 1) * 2 * 2 for i in index)
    assert traj.rows == rows_batched * 2  # the batch, then the eight single pairs again
    assert len(set(index.tolist())) > 1  # the batch really mixes levels


def test_the_inverted_latent_matches_a_direct_loop_at_the_grid_level():
    """SmPO's loop written out (METHODS.md): e1 = unet(z, g); z1 = inv.step(e1, g, z);
    e2 = unet(z1, g); z = inv.step((e1 + e2) / 2, g, z), over grid levels up to the snapped t."""
    from diffusers import DDIMInverseScheduler

    pipe = tiny_sd_pipeline(0, "epsilon")
    model = DiffusionModel(pipe, "sd", "")
    traj = make_trajectory("renoise", {"steps": 5}, pipe.scheduler.config, "sd")
    assert traj is not None
    batch = pair_batch(model, 3)
    x0 = torch.cat([batch["latents"][:, 0], batch["latents"][:, 1]])
    t = torch.tensor([650, 399, 999])
    cond = {"prompt_embeds": batch["prompt_embeds"]}
    snapped, z, tau = traj(pipe.unet, x0, t, cond, None)
    assert snapped.tolist() == [600, 200, 800]  # leading grid: the largest level <= t
    inv = DDIMInverseScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    inv.set_timesteps(5)
    embeds = batch["prompt_embeds"].repeat(2, 1, 1)
    with torch.no_grad():
        for row in range(6):
            zz, c = x0[row : row + 1].clone(), embeds[row : row + 1]
            for g in inv.timesteps:
                if g > snapped[row % 3]:
                    break
                e1 = pipe.unet(zz, g, c).sample
                z1 = inv.step(e1, g, zz).prev_sample
                e2 = pipe.unet(z1, g, c).sample
                zz = inv.step((e1 + e2) / 2, g, zz).prev_sample
            assert torch.allclose(z[row], zz[0], atol=1e-5), row
            abar = pipe.scheduler.alphas_cumprod[snapped[row % 3]]
            implied = (zz[0] - abar.sqrt() * x0[row]) / (1 - abar).sqrt()
            assert torch.allclose(tau[row], implied, atol=1e-4), row


@pytest.mark.parametrize(
    "spacing,levels",
    [("leading", [0, 200, 400, 600, 800]), ("trailing", [199, 399, 599, 799, 999])],
)
def test_every_grid_level_gets_an_equal_share_of_the_timesteps(spacing, levels):
    """SD1.5/SDXL (leading) and toy-sd (trailing): uniform t reaches every level equally often,
    the top one included, and a level never sits more than one share away from t."""
    config = dict(tiny_sd_pipeline(0, "v_prediction").scheduler.config)
    config.update(timestep_spacing=spacing, steps_offset=1)  # as SD1.5's, SDXL's and toy-sd's
    traj = make_trajectory("renoise", {"steps": 5}, config, "sd")
    assert traj is not None and traj.grid.tolist() == levels
    t = torch.arange(1000)
    index, snapped = traj.snap(t)
    assert torch.bincount(index, minlength=5).tolist() == [200] * 5
    assert (snapped - t).abs().max() < 200
    if spacing == "leading":
        assert bool((snapped <= t).all())
    else:  # trailing: the smallest level >= t, so the highest noise (999) is trained
        assert bool((snapped >= t).all()) and int(snapped[-1]) == 999


def toy_renders(n: int, size: int):
    from PIL import Image

    from mmalign.toy.render import render
    from mmalign.toy.world import sample_prompts

    prompts = [p.text for p in sample_prompts(n, "heldout", 1)]
    images = [render(p, size).permute(1, 2, 0).mul(255).round().byte().numpy() for p in prompts]
    return [Image.fromarray(np.asarray(im)) for im in images], prompts


def test_renoise_reconstructs_held_out_renders_better_than_ddim_inversion():
    from mmalign.diffusion import load_pipeline

    model = load_pipeline("toy:sd")
    images, prompts = toy_renders(6, model.default_resolution)
    errors = {}
    for name, kwargs in {
        "ddim": {"iterations": 0, "diffusers_ddim": True},
        "ddim_eps": {"iterations": 0},
        "renoise": {"iterations": 3, "average_range": (2, 4)},
    }.items():
        inv = invert(model, images, prompts, 5, **kwargs)  # type: ignore[arg-type]
        errors[name] = float((reconstruct(model, inv, 5) - inv.latents).pow(2).mean())
    assert errors["renoise"] < 0.5 * min(errors["ddim"], errors["ddim_eps"]), errors


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_the_tool_inverts_tiny_pipelines(family):
    make = tiny_sdxl_pipeline if family == "sdxl" else tiny_sd_pipeline
    pipe = make(0, "epsilon")
    images, prompts = toy_renders(2, 32)
    inv = invert(pipe, images, prompts, steps=4, iterations=2, average_range=(1, 3))
    assert inv.noise.shape == inv.latents.shape == (2, 4, 16, 16)
    assert inv.forwards == 4 * 3 and torch.isfinite(inv.noise).all()
    assert reconstruct(pipe, inv, 4).shape == inv.latents.shape
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        invert(pipe, images, prompts, steps=1001, iterations=0)


def test_inversion_settings_are_checked():
    config = tiny_sd_pipeline(0).scheduler.config
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        inverse_scheduler(config, 5000)
    with pytest.raises(ValueError, match="average"):
        make_trajectory("renoise", {"iterations": 1, "average": [0, 3]}, config, "sd")
    with pytest.raises(ValueError, match="unknown"):
        make_trajectory("renoise", {"step": 5}, config, "sd")
    assert make_trajectory("forward", None, config, "sd") is None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("models"))


def smpo_config(tiny, out, **train):
    return tiny_config(
        tiny, out,
        data={"smooth": {"scorer": "toy:fidelity"}},
        objective=[{"loss": "smpo", "beta": 500.0, "gamma": 10.0}],
        diffusion={"trajectory": "renoise", "renoise": {"steps": 4}},
        train=train,
    )  # fmt: skip


def test_resume_is_exact_with_renoise_and_soft_labels(tiny, tmp_path):
    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.train.loop import train

    full = tmp_path / "full"
    train(smpo_config(tiny, full), DiffusionRecipe)
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "checkpoint-3", part / "checkpoints" / "checkpoint-3")
    train(smpo_config(tiny, part, resume_from="latest"), DiffusionRecipe)
    a = {m["step"]: m["loss"] for m in read_metrics(full)}
    b = {m["step"]: m["loss"] for m in read_metrics(part)}
    assert sorted(b) == [4, 5, 6]
    for step in (4, 5, 6):
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])
    # toy:fidelity ties 15 of these 16 style pairs (p = 0.5): batches of ties alone give no
    # gradient, a batch with the decided pair does
    norms = [m["grad_norm"] for m in read_metrics(full)]
    assert any(n > 0 for n in norms) and any(n == 0 for n in norms), norms


def test_bad_renoise_settings_are_config_errors(tiny, tmp_path):
    with pytest.raises(ConfigError, match="renoise"):
        tiny_config(tiny, tmp_path, diffusion={"renoise": {"iterations": -1}})
    with pytest.raises(ConfigError, match="trajectory"):
        tiny_config(tiny, tmp_path, diffusion={"trajectory": "inverse"})
    with pytest.raises(ConfigError, match=r"data\.smooth"):
        tiny_config(tiny, tmp_path, data={"smooth": {"scorr": "toy:fidelity"}})
