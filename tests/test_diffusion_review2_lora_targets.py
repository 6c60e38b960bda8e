"""A LoRA on targets beside the attention projections loads right in a stock pipeline.

`convert_state_dict_to_diffusers` renamed only the attention projections to diffusers' old
`lora.down/up` names; with `proj_in` (or any other target) beside them the file mixed two
formats and `load_lora_weights` silently dropped the attention layers (a RuntimeWarning only).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from diffusion_helpers import save_tiny

from mmalign.diffusion.lora import add_lora, save_lora
from mmalign.train.config import LoraConfig


def _unet_out(unet: torch.nn.Module, family: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=g)
    text = torch.randn(2, 7, unet.config.cross_attention_dim, generator=g)
    kwargs = {}
    if family == "sdxl":
        added = {
            "text_embeds": torch.randn(2, 32, generator=g),
            "time_ids": torch.rand(2, 6, generator=g),
        }
        kwargs["added_cond_kwargs"] = added
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), text, **kwargs).sample


@pytest.mark.parametrize("targets", [["to_q", "to_out.0", "proj_in"], ["to_k", "conv1"]])
@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_attention_plus_other_targets_load_in_a_stock_pipeline(tmp_path, family, targets):
    from diffusers import DiffusionPipeline

    base = save_tiny(tmp_path, family)
    unet = DiffusionPipeline.from_pretrained(base).unet
    add_lora(unet, LoraConfig(rank=4, target_modules=targets))
    g = torch.Generator().manual_seed(0)
    for name, param in unet.named_parameters():
        if "lora_" in name:  # a trained adapter: lora_B is not zero
            param.data = torch.randn(param.shape, generator=g) * 0.3
    save_lora(tmp_path / "lora", unet, family)  # type: ignore[arg-type]

    fresh = DiffusionPipeline.from_pretrained(base)
    plain = _unet_out(fresh.unet, family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh.load_lora_weights(str(tmp_path / "lora"))
    ours = _unet_out(unet, family)
    assert (ours - plain).abs().max() > 1e-2
    n_ours = sum("lora_" in n for n, _ in unet.named_parameters())
    assert sum("lora_" in n for n, _ in fresh.unet.named_parameters()) == n_ours
    torch.testing.assert_close(_unet_out(fresh.unet, family), ours, atol=1e-5, rtol=0)
