"""Idefics3 / SmolVLM lay pixels out per prompt, and their `get_image_features` pools one tensor
per prompt. Each prompt's images must be encoded once a step, shared by the chosen and the
rejected sequence and by the reference pass, as LLaVA's and Qwen2-VL's images are: they were
encoded once per sequence by the policy, again per sequence by the reference, and once more by
an `image_features` call whose result the reference pass threw away (3 vision-tower calls on
5 prompts' worth of images for every 1 a DPO pair needs)."""

from __future__ import annotations

import pytest
import torch
from test_vlm_review_realign_embed import tiny_idefics3
from vlm_helpers import pair_rows, random_images

from mmalign.train.config import LoraConfig
from mmalign.vlm.collate import PairCollator, special_tokens_kwargs, user_content
from mmalign.vlm.lora import add_lora
from mmalign.vlm.scorer import VLMPairScorer, image_features, sequence_logps


def _tower_batches(core) -> list[int]:
    """The number of images (crops) of each vision-tower call."""
    calls: list[int] = []
    core.model.vision_model.register_forward_hook(
        lambda m, args, kwargs, out: calls.append(int(kwargs["pixel_values"].shape[0])),
        with_kwargs=True,
    )
    return calls


def _direct_logp(vlm, prompt: str, images: list, answer: str) -> float:
    """The completion's log-prob from the model's own forward on pixels (the slow way)."""
    user = [{"role": "user", "content": user_content(prompt, len(images))}]
    head = vlm.processor.apply_chat_template(user, add_generation_prompt=True)
    turn = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
    full = vlm.processor.apply_chat_template([*user, turn])
    kwargs = special_tokens_kwargs(vlm.processor, [head])
    inputs = dict(vlm.processor(text=[head], images=[images] if images else None,
                                return_tensors="pt", **kwargs))  # fmt: skip
    comp = vlm.tokenizer(full[len(head) :], add_special_tokens=False, return_tensors="pt")
    inputs["input_ids"] = torch.cat([inputs["input_ids"], comp["input_ids"]], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with torch.no_grad():
        logits = vlm.model(**inputs).logits[0, :-1].float()
    n = comp["input_ids"].shape[1]
    return float(logits[-n:].log_softmax(-1).gather(-1, comp["input_ids"][0, :, None]).sum())


def _rows() -> list[dict]:
    _, b, c = random_images(3)
    return [
        *pair_rows(),
        {"prompt": "<image> and <image>: same?", "images": [b, c], "chosen": "no",
         "rejected": "yes"},
        {"prompt": "say hello", "chosen": "hello", "rejected": "bye"},  # no image
    ]  # fmt: skip


def test_each_prompts_images_are_encoded_once_for_policy_and_reference():
    vlm = tiny_idefics3()
    rows = _rows()
    batch = PairCollator(vlm.processor, ("main",))(rows)
    assert batch.layout == "prompt" and batch.input_ids.shape[0] == 8  # 4 prompts, 8 sequences
    crops = int((batch.vision["pixel_values"].flatten(2) != 0).any(-1).sum())
    model = add_lora(vlm.model, LoraConfig(rank=2))
    with torch.no_grad():  # an adapter away from zero: policy and reference differ
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    core = model.get_base_model()
    calls = _tower_batches(core)
    scores = VLMPairScorer(model, "adapters")(model, batch, with_reference=True)["main"]
    assert calls == [crops]  # one call, each prompt's crops once, the reference included
    with model.disable_adapter():
        for i, row in enumerate(rows):
            images = row.get("images") or ([row["image"]] if "image" in row else [])
            for side in ("chosen", "rejected"):
                expected = _direct_logp(vlm, row["prompt"], images, row[side])
                got = float(getattr(scores, f"ref_{side}")[i])
                assert got == pytest.approx(expected, abs=1e-4), (i, side)
    assert not torch.allclose(scores.chosen.detach(), scores.ref_chosen, atol=1e-3)


def test_the_image_path_trains_through_the_shared_features():
    """A full fine-tune with the connector trained: the policy's features carry its graph."""
    vlm = tiny_idefics3()
    batch = PairCollator(vlm.processor, ("main",))(_rows())
    core = vlm.model
    core.requires_grad_(False)
    core.model.connector.requires_grad_(True)
    scorer = VLMPairScorer(core, "copy")
    calls = _tower_batches(core)
    out = scorer(core, batch, with_reference=True)["main"]
    assert len(calls) == 1  # the policy's pass; the frozen copy has its own tower
    (out.chosen - out.rejected).sum().backward()
    grad = core.model.connector.modality_projection.proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_features_and_scores_agree_with_the_pixel_path():
    vlm = tiny_idefics3()
    batch = PairCollator(vlm.processor, ("main",))(_rows())
    calls = _tower_batches(vlm.model)
    with torch.no_grad():
        features = image_features(vlm.model, batch)
        shared = sequence_logps(vlm.model, batch, features)[0]
        pixels = sequence_logps(vlm.model, batch, None)[0]  # each sequence's own pixels
    assert len(features) == 4 and features[3].shape[0] == 0  # one per prompt; none for text
    assert calls[0] == calls[1] // 2  # the pixel path encodes every prompt's crops twice
    assert torch.allclose(shared, pixels, atol=1e-5)
