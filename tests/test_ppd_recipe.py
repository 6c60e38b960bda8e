"""PPD as a recipe (Dang et al. CVPR 2025): `ppd:` in a toy-sd recipe trains the user branch
with Diffusion-DPO on per-user pairs; the saved adapter reloads into a fresh toy-sd and gives
the trained model's output; the user embeddings are computed once and reused."""

from __future__ import annotations

import pytest
import torch

from mmalign.config import ConfigError, load_config
from mmalign.diffusion import ppd
from mmalign.diffusion.ppd_recipe import PPDRecipe
from mmalign.toy.datasets.sampling import toy_sd_pipeline
from mmalign.train import Config
from mmalign.train.loop import train

OVERRIDES = (
    "data.toy.n=512", "data.toy.candidates=render", "train.max_steps=3", "train.batch_size=4",
    "train.log_every=1",
    "train.learning_rate=0.01", "train.checkpoint_every=100", "validation.enabled=false",
    "train.trackers=[]",
)  # fmt: skip


def _cfg(tmp_path, *extra: str) -> Config:
    return load_config(
        Config, "configs/toy/ppd.yaml", [*OVERRIDES, f"output_dir={tmp_path}", *extra]
    )


def _unet_out(unet, user: torch.Tensor | None) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    size = unet.config.sample_size
    x = torch.randn(2, unet.config.in_channels, size, size, generator=g)
    text = torch.randn(2, 6, unet.config.cross_attention_dim, generator=g)
    kwargs = ppd.user_kwargs(unet, user) if user is not None else None
    with torch.no_grad():
        return unet(x, torch.tensor([50, 700]), text, added_cond_kwargs=kwargs).sample


def test_ppd_recipe_trains_the_branch_saves_and_reloads(tmp_path, monkeypatch) -> None:
    made: list[PPDRecipe] = []

    def make(cfg, accelerator):
        made.append(PPDRecipe(cfg, accelerator))
        return made[-1]

    # an embedding cache of this test's own: other tests (test_ppd_eval) fill the session's
    # shared one with the same users, and this test checks the first run computes them
    monkeypatch.setattr("mmalign.vlm.user_embed.cache_root", lambda: tmp_path / "cache")
    result = train(_cfg(tmp_path / "a"), make)
    recipe = made[0]
    assert result.saved["kind"] == "ppd"
    assert len(recipe.users) == 128 and recipe.embed_info["cached"] is False
    unet = recipe.model
    base = toy_sd_pipeline(None).unet
    # only the branch moved: every base weight is the shipped toy-sd's
    base_params = dict(base.named_parameters())
    for name, p in unet.named_parameters():
        if name in base_params:
            assert torch.equal(p.detach(), base_params[name].detach()), name
    user = torch.stack([recipe.embeddings["t00"], recipe.embeddings["t05"]]).float()
    trained = _unet_out(unet, user)
    with ppd.user_branch_off(unet):
        assert torch.equal(_unet_out(unet, user), _unet_out(base, None))
    assert (trained - _unet_out(base, None)).abs().max() > 0  # to_v_ip left zero: it trained
    # the saved adapter reloads into a fresh toy-sd and reproduces the trained output
    fresh = toy_sd_pipeline(None).unet
    meta = ppd.load_adapter(fresh, tmp_path / "a")
    assert meta["encoder"] == "toy:vlm" and meta["shots"] == 4
    assert meta["examples_toy"]["candidates"] == "render"  # new users get examples alike
    assert torch.equal(_unet_out(fresh, user), trained)
    assert (tmp_path / "a" / "user_embeddings.safetensors").is_file()

    # a second run reuses the cached embeddings: the encoder is never run again
    def boom(*args, **kwargs):
        raise AssertionError("user embeddings computed again")

    monkeypatch.setattr("mmalign.vlm.user_embed.embed_users", boom)
    train(_cfg(tmp_path / "b", "train.max_steps=1"), make)
    assert made[1].embed_info["cached"] is True
    assert torch.equal(made[1]._table, recipe._table)


def test_ppd_config_errors_are_clear(tmp_path) -> None:
    with pytest.raises(ConfigError, match="set lora: null"):
        _cfg(tmp_path, "lora={rank: 4}")
    with pytest.raises(ConfigError, match="trajectory: forward only"):
        _cfg(tmp_path, "diffusion.trajectory=renoise")
    with pytest.raises(ValueError, match="user_drop"):
        _cfg(tmp_path, "ppd.user_drop=1.5")
