"""The diffusion pair scorer: one forward, shared noise and timestep, targets, reference."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from mmalign.diffusion import (
    DiffusionModel,
    DiffusionPairScorer,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)
from mmalign.diffusion.data import crop_and_resize
from mmalign.diffusion.lora import add_lora
from mmalign.train import LoraConfig

B = 3


def _model(family="sd", prediction_type="epsilon") -> DiffusionModel:
    make = tiny_sdxl_pipeline if family == "sdxl" else tiny_sd_pipeline
    return DiffusionModel(make(seed=0, prediction_type=prediction_type), family, "tiny")


def _batch(model: DiffusionModel, same: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(B, 2, 4, 16, 16, generator=g)
    if same:
        latents[:, 1] = latents[:, 0]
    pipe = model.pipe
    texts = ["a red circle on a blue background"] * B
    out = pipe.encode_prompt(
        texts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    batch = {"latents": latents, "prompt_embeds": out[0], "label": torch.ones(B)}
    if model.family == "sdxl":
        batch["pooled"] = out[2]
        batch["time_ids"] = torch.tensor([[32, 32, 0, 0, 32, 32]] * 2).float().expand(B, 2, 6)
    return batch


def _empty(model: DiffusionModel) -> dict[str, torch.Tensor]:
    out = model.pipe.encode_prompt([""], device="cpu", num_images_per_prompt=1,
                                   do_classifier_free_guidance=False)  # fmt: skip
    return (
        {"prompt_embeds": out[0], "pooled": out[2]}
        if model.family == "sdxl"
        else {"prompt_embeds": out[0]}
    )


def _scorer(model, **kw) -> DiffusionPairScorer:
    kw.setdefault("reference", "none")
    kw.setdefault("caption_dropout", 0.0)
    return DiffusionPairScorer(model, _empty(model), **kw)


SEEDS = torch.arange(B) + 100


@torch.no_grad()
def _separate_mse(model, scorer, batch, which: int) -> torch.Tensor:
    """The naive way: one image at a time through the UNet, noise and t from the same draws."""
    t, noise, _ = scorer.draws(SEEDS, batch["latents"].shape[2:])
    x0 = batch["latents"][:, which]
    noisy = scorer.noise_scheduler.add_noise(x0, noise, t)
    if model.prediction_type == "epsilon":
        target = noise
    else:
        target = scorer.noise_scheduler.get_velocity(x0, noise, t)
    kwargs = {}
    if model.family == "sdxl":
        kwargs["added_cond_kwargs"] = {"text_embeds": batch["pooled"],
                                       "time_ids": batch["time_ids"][:, which]}  # fmt: skip
    pred = model.unet(noisy, t, batch["prompt_embeds"], **kwargs).sample
    return (pred - target).pow(2).mean(dim=(1, 2, 3))


@pytest.mark.parametrize("family", ["sd", "sdxl"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_one_forward_matches_separate_forwards(family, prediction_type):
    model = _model(family, prediction_type)
    scorer, batch = _scorer(model), _batch(model)
    with torch.no_grad():
        s = scorer(model.unet, batch, SEEDS, with_reference=False)["main"]
    torch.testing.assert_close(
        -s.chosen, _separate_mse(model, scorer, batch, 0), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        -s.rejected, _separate_mse(model, scorer, batch, 1), atol=1e-5, rtol=1e-4
    )
    assert s.ref_chosen is None  # reference-free: never computed


def test_chosen_and_rejected_share_noise_and_timestep():
    model = _model()
    with torch.no_grad():
        s = _scorer(model)(model.unet, _batch(model, same=True), SEEDS, with_reference=False)
    torch.testing.assert_close(s["main"].chosen, s["main"].rejected, atol=1e-6, rtol=0)


def test_draws_are_a_function_of_the_pair_seed():
    scorer = _scorer(_model())
    t1, n1, _ = scorer.draws(torch.tensor([5, 6, 7]), torch.Size([4, 16, 16]))
    t2, n2, _ = scorer.draws(torch.tensor([6]), torch.Size([4, 16, 16]))
    assert t1[1] == t2[0] and torch.equal(n1[1], n2[0])


def test_lora_reference_is_the_unet_without_adapters():
    model = _model()
    frozen = copy.deepcopy(model.unet)
    add_lora(model.unet, LoraConfig(rank=4))
    batch = _batch(model)
    scorer = _scorer(model, reference="adapters")
    with torch.no_grad():
        at_init = scorer(model.unet, batch, SEEDS, with_reference=True)["main"]
        # LoRA starts as the identity (B = 0): policy and reference agree exactly.
        torch.testing.assert_close(at_init.chosen, at_init.ref_chosen)
        for name, p in model.unet.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
        moved = scorer(model.unet, batch, SEEDS, with_reference=True)["main"]
        copy_scorer = _scorer(DiffusionModel(model.pipe, "sd", "tiny"), reference="none")
        expected = copy_scorer(frozen, batch, SEEDS, with_reference=False)["main"]
    assert not torch.allclose(moved.chosen, moved.ref_chosen)
    torch.testing.assert_close(moved.ref_chosen, expected.chosen)
    torch.testing.assert_close(moved.ref_rejected, expected.rejected)
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.unet.named_parameters())


def test_caption_dropout_conditions_both_images_on_the_empty_prompt():
    model = _model()
    batch = _batch(model)
    dropped = _scorer(model, caption_dropout=0.999999)
    plain = _scorer(model)
    empty_batch = dict(batch, prompt_embeds=_empty(model)["prompt_embeds"].expand(B, -1, -1))
    with torch.no_grad():
        a = dropped(model.unet, batch, SEEDS, with_reference=False)["main"]
        b = plain(model.unet, empty_batch, SEEDS, with_reference=False)["main"]
    torch.testing.assert_close(a.chosen, b.chosen)
    torch.testing.assert_close(a.rejected, b.rejected)


def test_sdxl_time_ids_come_from_each_image():
    model = _model("sdxl")
    batch = _batch(model)
    scorer = _scorer(model)
    other = dict(batch, time_ids=batch["time_ids"].clone())
    other["time_ids"][:, 1, :2] = torch.tensor([1024.0, 768.0])
    with torch.no_grad():
        a = scorer(model.unet, batch, SEEDS, with_reference=False)["main"]
        b = scorer(model.unet, other, SEEDS, with_reference=False)["main"]
    torch.testing.assert_close(a.chosen, b.chosen)  # the chosen image's ids did not change
    assert not torch.allclose(a.rejected, b.rejected)


def test_crop_and_resize_reports_the_real_size_and_crop():
    image = Image.new("RGB", (64, 40), "red")  # width 64, height 40
    pixels, original, crop = crop_and_resize(image, 32)
    assert pixels.shape == (3, 32, 32)
    assert original == (40, 64)
    # resized to 51 x 32 (torchvision's int(32 * 64 / 40)), centre crop at round(19 / 2)
    assert crop == (0, round((51 - 32) / 2))
    assert pixels.min() >= -1 and pixels.max() <= 1
