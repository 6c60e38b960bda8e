"""The aesthetic predictor's backbone and MLP load as the predictor was trained.

The LAION predictor's MLP was trained on OpenAI CLIP ViT-L/14 embeddings (QuickGELU). Given
the backbone as a local file (`clip="ViT-L-14:/path/open_clip_model.safetensors"`, the way
without hub access) the scorer built `ViT-L-14` with the config's nn.GELU, since only a tag
told `create` that the weights are OpenAI's: every layer ran the wrong activation and the MLP
saw other embeddings. Offline, a tiny model stands in for ViT-L-14 with a registered `openai`
tag whose config says `quick_gelu`, as the real tag's does.

The MLP checkpoint was looked for only as the `.pth` file: a folder holding the safetensors
copy was refused.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmalign.rewards import get_scorer, tiny
from mmalign.rewards.common import clip_pixels

open_clip = pytest.importorskip("open_clip")


@pytest.fixture
def openai_tag(tmp_path, monkeypatch):
    """(state dict file, model config JSON), the file registered as the tiny model's `openai`
    tag with `quick_gelu=True`."""
    from open_clip import pretrained

    weights, config = tiny.save_openclip(tmp_path / "clip", seed=4)
    open_clip.add_model_config(config)
    tags = {"openai": pretrained._pcfg(file=str(weights), quick_gelu=True)}
    monkeypatch.setitem(pretrained._PRETRAINED, config.stem, tags)
    return weights, config


def _activation(scorer) -> str:
    return type(scorer.model.visual.transformer.resblocks[0].mlp.gelu).__name__


def test_a_local_backbone_file_is_built_as_the_openai_weights(openai_tag, tmp_path):
    weights, config = openai_tag
    mlp = tiny.save_aesthetic(tmp_path / "mlp", seed=2)
    from_file = get_scorer("aesthetic", path=mlp, clip=f"{config}:{weights}")
    from_tag = get_scorer("aesthetic", path=mlp, clip=f"{config}:openai")
    assert _activation(from_tag) == "QuickGELU"
    assert _activation(from_file) == "QuickGELU"  # was GELU
    x = torch.rand(4, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(from_file.score(x, [""] * 4), from_tag.score(x, [""] * 4))


def test_a_backbone_without_an_openai_tag_keeps_its_config(tmp_path):
    weights, config = tiny.save_openclip(tmp_path / "clip", seed=1)
    mlp = tiny.save_aesthetic(tmp_path / "mlp")
    assert _activation(get_scorer("aesthetic", path=mlp, clip=f"{config}:{weights}")) == "GELU"


def test_the_mlp_loads_from_a_safetensors_file_or_folder(tmp_path):
    from safetensors.torch import save_file

    weights, config = tiny.save_openclip(tmp_path / "clip", seed=1)
    pth = tiny.save_aesthetic(tmp_path / "pth", seed=2)
    state = torch.load(pth, weights_only=True)
    folder = tmp_path / "st"
    folder.mkdir()
    save_file(state, folder / "sac+logos+ava1-l14-linearMSE.safetensors")
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    want = get_scorer("aesthetic", path=pth, clip=f"{config}:{weights}").score(x, [""] * 3)
    for source in (folder, folder / "sac+logos+ava1-l14-linearMSE.safetensors"):
        got = get_scorer("aesthetic", path=source, clip=f"{config}:{weights}").score(x, [""] * 3)
        torch.testing.assert_close(got, want)


def test_the_half_precision_mlp_runs_in_float32_as_the_reference(tmp_path):
    """simple_inference.py feeds the normalised embedding to the MLP as a FloatTensor."""
    weights, config = tiny.save_openclip(tmp_path / "clip", seed=1)
    mlp = tiny.save_aesthetic(tmp_path / "mlp", seed=2)
    state = torch.load(mlp, weights_only=True)
    scorer = get_scorer("aesthetic", path=mlp, clip=f"{config}:{weights}", dtype="bfloat16")
    assert scorer.mlp.layers[0].weight.dtype == torch.float32
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = F.normalize(scorer.model.encode_image(clip_pixels(x, 32).bfloat16()), dim=-1).float()
        for i in (0, 2, 4, 6, 7):
            h = h @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    torch.testing.assert_close(scorer.score(x, [""] * 3), h.squeeze(-1), rtol=0, atol=1e-5)
