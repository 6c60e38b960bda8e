"""Shared-prompt packing for LLaVA-OneVision (`packing.PACKABLE_MODEL_TYPES`), on the tiny random
checkpoint in float32.

Packing needs 1-D positions, a language model that takes a 4-D mask as given and attends to
the whole causal past, and image features that do not depend on the row holding the prompt.
LLaVA-OneVision's Qwen2 language model meets the first two; its features (a lone image tiled by
size, anyres; an image among others its base tile) are computed per image before the language
model and scattered into the image tokens in row order. Before, it was scored one sequence per
row. The scores, the DPO loss and its gradients packed equal the unpacked ones, for lone images
of several sizes and a prompt of two images.

A language model with a sliding window loses the window under the packed 4-D mask (transformers
uses a 4-D mask as given): a LLaVA on a Mistral language model (BakLLaVA's shape) was packed
and scored differently from its unpacked sequences; now it is not packed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from test_review9_onevision import BASE_TOKENS, SIZES, _image
from vlm_helpers import pair_rows

from mmalign.losses.pairwise import dpo
from mmalign.train.config import LoraConfig
from mmalign.vlm.collate import PairCollator
from mmalign.vlm.load import load_vlm
from mmalign.vlm.lora import add_lora
from mmalign.vlm.packing import pack, supports_packing
from mmalign.vlm.scorer import VLMPairScorer, _core, image_features, pack_batch, sequence_logps
from mmalign.vlm.tiny import tiny_llava, tiny_llava_onevision

PAIRS = ("main", "blind")  # three completions under each prompt: chosen, rejected, blind


def _load(folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vlm(str(folder))


@pytest.fixture(scope="module")
def onevision(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onevision") / "model"
    tiny_llava_onevision(folder)
    return folder


def _rows() -> list[dict]:
    """Lone images of three sizes (1x1, 2x2 tiles; one unpadded) and a prompt of two images,
    one of them also shown alone (two vision units of one image: tiled, and a base tile)."""
    a, b, c, d = (_image(SIZES[i], i) for i in (0, 3, 4, 1))
    return [
        {"prompt": "what color is the shape?", "image": a, "chosen": "red circle",
         "rejected": "blue", "blind": "i cannot help with that request"},
        {"prompt": "is there a star?", "image": b, "chosen": "yes", "rejected": "no",
         "blind": "maybe a yellow triangle"},
        {"prompt": "describe the image .", "image": c, "chosen": "a white star",
         "rejected": "a green background with a square", "blind": "no"},
        {"prompt": "<image> and <image>: which is red?", "images": [d, a],
         "chosen": "the first", "rejected": "none", "blind": "the second shape"},
    ]  # fmt: skip


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logps_equal_unpacked(onevision, attention):
    vlm = _load(onevision)
    vlm.model.set_attn_implementation(attention)
    core = _core(vlm.model)
    assert supports_packing(core)
    batch = PairCollator(vlm.processor, PAIRS)(_rows())
    packed = pack_batch(core, batch)
    assert packed is not None
    assert packed.input_ids.shape[0] == 4 and batch.input_ids.shape[0] == 12  # a row a prompt
    with torch.no_grad():
        features = image_features(core, batch)
        plain, plain_n = sequence_logps(core, batch, features)
        logps, n = sequence_logps(core, batch, features, packed)
    sizes = {int(f.shape[0]) for f in features}
    assert BASE_TOKENS in sizes and len(sizes) >= 3  # base tiles and lone images of 2+ sizes
    assert logps.dtype == torch.float32 and torch.equal(n, plain_n)
    torch.testing.assert_close(logps, plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("projector", [False, True], ids=["image_path_frozen", "projector_trains"])
def test_a_dpo_step_packed_equals_unpacked(onevision, projector):
    """The DPO loss of the main and blind pairs, against the policy with its LoRA off, and its
    gradients (the LoRA's, and the projector's where it trains: the features of an image are
    then computed in the policy's graph and shared by every sequence that shows it)."""
    vlm = _load(onevision)
    batch = PairCollator(vlm.processor, PAIRS)(_rows())
    torch.manual_seed(0)
    model = add_lora(vlm.model, LoraConfig(rank=4))
    with torch.no_grad():  # an adapter away from its zero start, so policy != reference
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    if projector:
        _core(model).model.multi_modal_projector.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    losses, grads = [], []
    for pack_prompts in (True, False):
        scorer = VLMPairScorer(model, "adapters", pack=pack_prompts)
        assert (scorer.packed(model, batch) is not None) == pack_prompts
        out = scorer(model, batch, with_reference=True)
        loss = sum(dpo(out[name]).loss.mean() for name in PAIRS)
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, params))
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=0)
    assert abs(losses[0].item() - 2 * 0.6931) > 1e-3  # policy and reference differ
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_sliding_window_language_model_is_not_packed(tmp_path, onevision, monkeypatch):
    """A 4-D mask is used as given, so a packed row drops the window: with LLaVA on a Mistral
    language model (window 8 tokens here, BakLLaVA's shape) the packed scores were off."""
    folder = tmp_path / "llava-mistral"
    tiny_llava(folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"].update(model_type="mistral", sliding_window=8)
    (folder / "config.json").write_text(json.dumps(config))
    vlm = _load(folder)
    core = _core(vlm.model)
    assert type(core.model.language_model).__name__ == "MistralModel"
    batch = PairCollator(vlm.processor, PAIRS)(pair_rows())
    keys = [k[:2] for k in batch.sequence_keys]
    forced = pack(batch.input_ids, batch.attention_mask, batch.completion_mask, keys,
                  pad_id=batch.pad_id)  # fmt: skip
    with torch.no_grad():
        features = image_features(core, batch)
        plain = sequence_logps(core, batch, features)[0]
        windowless = sequence_logps(core, batch, features, forced)[0]
    assert (plain - windowless).abs().max() > 1e-2  # what packing it would score
    assert not supports_packing(core) and pack_batch(core, batch) is None
    # LLaVA-OneVision likewise, where its Qwen2 language model slides (use_sliding_window)
    ov = _core(_load(onevision).model)
    assert supports_packing(ov)
    monkeypatch.setattr(ov.config.text_config, "sliding_window", 8)
    assert not supports_packing(ov)
