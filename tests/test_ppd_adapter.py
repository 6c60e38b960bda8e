"""PPD's user branch (Dang et al. CVPR 2025): diffusers' IP-Adapter decoupled cross-attention."""

from __future__ import annotations

import pytest
import torch

from mmalign.config import InputError
from mmalign.diffusion import ppd
from mmalign.diffusion.load import tiny_sd_pipeline, tiny_sdxl_pipeline

D = 24  # user-embedding width


def toy_sd():
    from mmalign.toy.datasets.sampling import toy_sd_pipeline

    return toy_sd_pipeline(None)


def _inputs(pipe, b: int = 2, seed: int = 0) -> tuple[tuple[torch.Tensor, ...], dict]:
    g = torch.Generator().manual_seed(seed)
    unet = pipe.unet
    size = unet.config.sample_size
    x = torch.randn(b, unet.config.in_channels, size, size, generator=g)
    t = torch.tensor([10, 500])[:b]
    text = torch.randn(b, 5, unet.config.cross_attention_dim, generator=g)
    extra: dict = {}
    if unet.config.addition_embed_type == "text_time":
        pooled = pipe.text_encoder_2.config.projection_dim
        extra = {
            "text_embeds": torch.randn(b, pooled, generator=g),
            "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]]).repeat(b, 1),
        }
    return (x, t, text), extra


def _run(unet, args, extra, user=None) -> torch.Tensor:
    kwargs = dict(extra)
    if user is not None:
        kwargs.update(ppd.user_kwargs(unet, user))
    with torch.no_grad():
        return unet(*args, added_cond_kwargs=kwargs or None).sample


def _perturb(params, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize(
    "make", [tiny_sd_pipeline, tiny_sdxl_pipeline, toy_sd], ids=["sd15", "sdxl", "toy-sd"]
)
def test_branch_off_is_exactly_the_base_unet(make) -> None:
    pipe = make()
    args, extra = _inputs(pipe)
    base = _run(pipe.unet, args, extra)
    params = ppd.add_user_branch(pipe.unet, D)
    _perturb(params)
    user = torch.randn(2, D, generator=torch.Generator().manual_seed(3))
    on = _run(pipe.unet, args, extra, user)
    with ppd.user_branch_off(pipe.unet):
        off = _run(pipe.unet, args, extra, user)
    assert torch.equal(off, base)
    assert (on - base).abs().max() > 1e-4  # the branch does something when on
    again = _run(pipe.unet, args, extra, user)  # and the context restored it
    assert torch.equal(again, on)
    trainable = {id(p) for p in pipe.unet.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in params}
    n_cross = len([n for n in pipe.unet.attn_processors if n.endswith("attn2.processor")])
    assert len(params) == 4 + 2 * n_cross  # proj W, b, norm W, b; to_k_ip, to_v_ip per layer


def test_users_are_told_apart_and_zero_user_differs() -> None:
    pipe = tiny_sd_pipeline()
    args, extra = _inputs(pipe)
    _perturb(ppd.add_user_branch(pipe.unet, D))
    a = torch.randn(1, D, generator=torch.Generator().manual_seed(0)).repeat(2, 1)
    b = torch.randn(1, D, generator=torch.Generator().manual_seed(1)).repeat(2, 1)
    assert (_run(pipe.unet, args, extra, a) - _run(pipe.unet, args, extra, b)).abs().max() > 1e-4


@pytest.mark.parametrize("make", [tiny_sd_pipeline, tiny_sdxl_pipeline], ids=["sd15", "sdxl"])
def test_saved_adapter_reloads_and_reproduces(make, tmp_path) -> None:
    pipe = make()
    args, extra = _inputs(pipe)
    _perturb(ppd.add_user_branch(pipe.unet, D))
    user = torch.randn(2, D, generator=torch.Generator().manual_seed(3))
    trained = _run(pipe.unet, args, extra, user)
    path = ppd.save_adapter(pipe.unet, tmp_path, {"encoder": "toy-vlm", "layer": -2})
    assert path.name == ppd.ADAPTER_FILE

    fresh = make()
    meta = ppd.load_adapter(fresh.unet, tmp_path)
    assert meta == {"embed_dim": D, "user_tokens": 4, "encoder": "toy-vlm", "layer": -2}
    assert torch.equal(_run(fresh.unet, args, extra, user), trained)

    # A stock pipeline loads the same file with diffusers' own load_ip_adapter, and the
    # embedding goes in as precomputed ip_adapter_image_embeds (negative, positive).
    stock = make()
    stock.load_ip_adapter(
        str(tmp_path), subfolder="", weight_name=ppd.ADAPTER_FILE, image_encoder_folder=None
    )
    assert torch.equal(_run(stock.unet, args, extra, user), trained)
    e = user[:1]
    embeds = [torch.stack([torch.zeros_like(e), e])]  # [2, 1, D]
    kw = dict(num_inference_steps=2, output_type="pt", guidance_scale=3.0)
    ours = fresh(
        "a red circle", ip_adapter_image_embeds=embeds, generator=torch.manual_seed(0), **kw
    ).images
    theirs = stock(
        "a red circle", ip_adapter_image_embeds=embeds, generator=torch.manual_seed(0), **kw
    ).images
    assert torch.equal(ours, theirs)


def test_bad_input_is_clear(tmp_path) -> None:
    pipe = tiny_sd_pipeline()
    with pytest.raises(InputError, match="no PPD user branch"):
        ppd.embed_width(pipe.unet)
    ppd.add_user_branch(pipe.unet, D)
    with pytest.raises(InputError, match=f"width 7 but the PPD adapter takes {D}"):
        ppd.user_kwargs(pipe.unet, torch.zeros(2, 7))
    with pytest.raises(InputError, match="no PPD adapter"):
        ppd.load_adapter(tiny_sd_pipeline().unet, tmp_path / "missing")
