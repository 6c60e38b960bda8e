"""OpenCLIP scorers build OpenAI weights with QuickGELU, the activation they were trained with.

`clip` (default `ViT-L-14:openai`) and `aesthetic` (on `ViT-L-14:openai`) called
`open_clip.create_model("ViT-L-14", pretrained="openai")`. open_clip >= 3 builds that model
from `ViT-L-14.json` (nn.GELU) and only warns "QuickGELU mismatch ... pretrained tag 'openai'
(quick_gelu=True)": every layer of the OpenAI CLIP then ran the wrong activation, shifting CLIP
scores and the aesthetic predictor's input embeddings. Offline, a tiny model stands in for
ViT-L-14 with a registered `openai` tag whose config says `quick_gelu`, as the real tag's does.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from mmalign.rewards import get_scorer, tiny
from mmalign.rewards.common import clip_pixels

open_clip = pytest.importorskip("open_clip")
PROMPTS = ["a red circle on a blue background", "a cat"]


@pytest.fixture
def openai_tag(tmp_path, monkeypatch):
    """(state dict file, model config JSON), the file registered as the tiny model's `openai`
    tag with `quick_gelu=True` (and as a `laion` tag without it)."""
    from open_clip import pretrained

    weights, config = tiny.save_openclip(tmp_path, seed=4)
    open_clip.add_model_config(config)
    tags = {
        "openai": pretrained._pcfg(file=str(weights), quick_gelu=True),
        "laion": pretrained._pcfg(file=str(weights)),
    }
    monkeypatch.setitem(pretrained._PRETRAINED, config.stem, tags)
    return weights, config


def _activation(scorer) -> str:
    return type(scorer.model.visual.transformer.resblocks[0].mlp.gelu).__name__


def test_openai_tag_builds_quick_gelu_and_scores_as_open_clip_does(openai_tag):
    _, config = openai_tag
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="QuickGELU mismatch")
        scorer = get_scorer(f"clip:{config}:openai")
    assert _activation(scorer) == "QuickGELU"
    want = open_clip.create_model(config.stem, pretrained="openai", force_quick_gelu=True).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokenizer = open_clip.get_tokenizer(config.stem)
    with torch.no_grad():
        image = F.normalize(want.encode_image(clip_pixels(x, 32)), dim=-1)
        text = F.normalize(want.encode_text(tokenizer(PROMPTS)), dim=-1)
    torch.testing.assert_close(scorer.score(x, PROMPTS), 100 * (image * text).sum(-1))


def test_a_local_file_named_openai_and_the_aesthetic_backbone_use_quick_gelu(openai_tag, tmp_path):
    weights, config = openai_tag
    assert _activation(get_scorer(f"clip:{config}:openai", path=weights)) == "QuickGELU"
    mlp = tiny.save_aesthetic(tmp_path / "mlp")
    assert _activation(get_scorer("aesthetic", path=mlp, clip=f"{config}:openai")) == "QuickGELU"


def test_tags_trained_with_gelu_and_plain_files_keep_gelu(openai_tag):
    weights, config = openai_tag
    assert _activation(get_scorer(f"clip:{config}:laion")) == "GELU"
    assert _activation(get_scorer(f"clip:{config}", path=weights)) == "GELU"
