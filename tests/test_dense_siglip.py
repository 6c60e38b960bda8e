"""The dense reward head on a SigLIP backbone (mmalign/rewards/dense/model.py): RAHF's image
encoder is a SigLIP ViT, and a SigLIP checkpoint used to fail inside transformers when it was
loaded as CLIP. A tiny random SiglipModel is round-tripped like the tiny-CLIP test does."""

from __future__ import annotations

import json

import pytest
import torch

from mmalign.config import InputError
from mmalign.rewards import get_scorer
from mmalign.rewards.dense import DenseRewardModel
from mmalign.rewards.dense.model import DenseRewardConfig
from mmalign.toy.paths import model_path

PROMPTS = ["a red circle on a blue background", "a green square", "a yellow triangle"]


def _tiny_siglip(folder):
    from transformers import AutoTokenizer, SiglipConfig, SiglipModel

    tokenizer = AutoTokenizer.from_pretrained(model_path("sd") / "tokenizer")
    config = SiglipConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "intermediate_size": 37,
                     "max_position_embeddings": 24, "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37},
    )  # fmt: skip
    torch.manual_seed(0)
    siglip = SiglipModel(config)
    siglip.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return siglip


def test_siglip_backbone_round_trips_tiny_random_siglip(tmp_path):
    siglip = _tiny_siglip(tmp_path / "siglip")
    model = DenseRewardModel.from_backbone(str(tmp_path / "siglip"), dim=32, heads=2, depth=1)
    assert model.config.backbone == "siglip" and model.config.max_tokens == 24
    assert type(model.clip_model).__name__ == "SiglipModel"
    # the backbone's weights are the checkpoint's
    torch.testing.assert_close(
        model.clip_model.vision_model.embeddings.patch_embedding.weight,
        siglip.vision_model.embeddings.patch_embedding.weight,
    )
    images = torch.rand(3, 3, 48, 40, generator=torch.Generator().manual_seed(0))
    x = model.preprocess(images)
    assert x.shape == (3, 3, 32, 32) and -1 <= float(x.min()) and float(x.max()) <= 1
    ids, mask = model.tokenize(PROMPTS)
    with torch.no_grad():
        img, _ = model.eval().fuse(images, ids, mask)
        maps, scores = model(images, ids, mask)
    assert img.shape == (3, 16, 32)  # all 4 x 4 patches: SigLIP's ViT has no class token
    assert maps.shape == (3, 2, 32, 32) and scores.shape == (3, 4)

    folder = model.save_pretrained(tmp_path / "head")
    assert json.loads((folder / "config.json").read_text())["backbone"] == "siglip"
    loaded = DenseRewardModel.from_pretrained(folder)
    assert type(loaded.clip_model).__name__ == "SiglipModel"
    with torch.no_grad():
        maps2, scores2 = loaded(images, *loaded.tokenize(PROMPTS))
    torch.testing.assert_close(maps2, maps)
    torch.testing.assert_close(scores2, scores)
    square = images[..., :32, :32]  # the scorer returns maps at the image's size
    out = get_scorer(f"dense:{folder}", device="cpu", batch_size=2).dense(square, PROMPTS)
    with torch.no_grad():
        maps, scores = loaded(square, *loaded.tokenize(PROMPTS))
    torch.testing.assert_close(out["overall"], scores[:, 3])
    torch.testing.assert_close(out["artifact"], maps[:, 1:2])


def test_other_model_types_raise_naming_the_type(tmp_path):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path / "vit"
    )
    with pytest.raises(InputError, match=r"is a 'vit' model; .*'clip' or 'siglip'"):
        DenseRewardModel.from_backbone(str(tmp_path / "vit"))
    with pytest.raises(InputError, match="backbone must be one of toy, clip, siglip"):
        DenseRewardConfig(backbone="vit")  # type: ignore[arg-type]
