"""`mmalign invert` normalises SDXL latents as training does (the VAE's latents_mean / std).

ReNoise's `encode_images` multiplied the posterior mean by the scaling factor alone and
`decode` divided by it, while training (`encode.to_model_latents`) and diffusers' SDXL
pipelines use `(z - mean) * scaling_factor / std` for a VAE whose config sets the two fields
(Playground v2.5's): the tool inverted latents its UNet was never trained on. Its images were
also read with `convert("RGB")` (transparent pixels showed the colour stored under them),
not composited onto white as training reads them (`schema.to_rgb`).
"""

from __future__ import annotations

import torch
from PIL import Image

from mmalign.diffusion import DiffusionModel, tiny_sd_pipeline, tiny_sdxl_pipeline
from mmalign.diffusion.data import crop_and_resize
from mmalign.diffusion.encode import decode_latents, to_model_latents
from mmalign.diffusion.renoise import decode, encode_images

MEAN = [0.3, -0.2, 0.1, 0.5]
STD = [1.5, 0.8, 2.0, 0.6]


def _image(seed: int) -> Image.Image:
    gen = torch.Generator().manual_seed(seed)
    array = (torch.rand((32, 32, 3), generator=gen) * 255).to(torch.uint8).numpy()
    return Image.fromarray(array)


def _sdxl_with_stats() -> DiffusionModel:
    pipe = tiny_sdxl_pipeline(seed=0)
    pipe.vae.register_to_config(latents_mean=MEAN, latents_std=STD)
    return DiffusionModel(pipe, "sdxl", "tiny-sdxl")


def _posterior_mean(model: DiffusionModel, images: list[Image.Image]) -> torch.Tensor:
    pixels = torch.stack([crop_and_resize(img, 32)[0] for img in images])
    with torch.no_grad():
        return model.pipe.vae.encode(pixels).latent_dist.mean


def test_encode_images_normalises_with_the_vae_latent_statistics():
    model = _sdxl_with_stats()
    images = [_image(0), _image(1)]
    z = _posterior_mean(model, images)
    got = encode_images(model, images, 32)
    mean, std = torch.tensor(MEAN).view(1, 4, 1, 1), torch.tensor(STD).view(1, 4, 1, 1)
    expected = (z - mean) * model.pipe.vae.config.scaling_factor / std
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, to_model_latents(model, z), atol=1e-6, rtol=0)


def test_decode_undoes_the_normalisation_as_training_does():
    model = _sdxl_with_stats()
    latents = encode_images(model, [_image(2)], 32)
    ours = decode(model, latents)
    torch.testing.assert_close(ours, decode_latents(model, latents), atol=1e-6, rtol=0)
    with torch.no_grad():  # decode(encode(x)) is the VAE's own round trip of the raw mean
        raw = model.pipe.vae.decode(_posterior_mean(model, [_image(2)])).sample
    torch.testing.assert_close(ours, (raw / 2 + 0.5).clamp(0, 1), atol=1e-5, rtol=0)


def test_without_statistics_only_the_scaling_factor_applies():
    for model in (DiffusionModel(tiny_sd_pipeline(seed=0), "sd", "tiny"),
                  DiffusionModel(tiny_sdxl_pipeline(seed=0), "sdxl", "tiny")):  # fmt: skip
        z = _posterior_mean(model, [_image(3)])
        scale = model.pipe.vae.config.scaling_factor
        torch.testing.assert_close(encode_images(model, [_image(3)], 32), z * scale)


def test_invert_reads_transparent_images_onto_white(tmp_path):
    from mmalign.diffusion.invert_cli import _images

    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # black stored under full transparency
    rgba.paste((200, 30, 30, 255), (0, 0, 8, 16))
    rgba.save(tmp_path / "a.png")
    (read,) = _images([str(tmp_path / "a.png")])
    assert read.mode == "RGB"
    assert read.getpixel((12, 8)) == (255, 255, 255)  # was (0, 0, 0)
    assert read.getpixel((2, 8)) == (200, 30, 30)
