"""The VLM pair scorer: scores equal completion log-probs computed directly with the model,
images are encoded once per step, the reference and the skipping of long rows."""

from __future__ import annotations

import pytest
import torch
from vlm_helpers import pair_rows, random_images, tiny_vlms

from mmalign.vlm.collate import PairCollator, user_content
from mmalign.vlm.load import load_vlm
from mmalign.vlm.scorer import VLMPairScorer
from mmalign.vlm.tiny import tiny_llava


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_vlms(tmp_path_factory.mktemp("vlms"))


def direct_logp(vlm, prompt: str, images: list, answer: str) -> float:
    """Completion log-prob from the model's own forward on the whole sequence (the slow way)."""
    user = [{"role": "user", "content": user_content(prompt, len(images))}]
    head = vlm.processor.apply_chat_template(user, add_generation_prompt=True)
    turn = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
    full = vlm.processor.apply_chat_template([*user, turn])
    inputs = dict(vlm.processor(text=[head], images=images, return_tensors="pt"))
    comp = torch.tensor([vlm.tokenizer(full[len(head) :], add_special_tokens=False)["input_ids"]])
    inputs["input_ids"] = torch.cat([inputs["input_ids"], comp], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        pad = torch.zeros_like(comp)
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], pad], 1)
    with torch.no_grad():
        logits = vlm.model(**inputs).logits[0, :-1].float()
    n = comp.shape[1]
    return float(logits[-n:].log_softmax(-1).gather(-1, comp[0, :, None]).sum())


@pytest.mark.parametrize("family", ["toy", "llava", "qwen"])
def test_scores_equal_direct_log_probs(models, family):
    vlm = load_vlm(models[family])
    rows = pair_rows()
    batch = PairCollator(vlm.processor, ("main", "visual", "blind"))(rows)
    scores = VLMPairScorer(vlm.model, "copy")(vlm.model, batch, with_reference=True)
    for i, row in enumerate(rows):
        expected = {
            ("main", "chosen"): direct_logp(vlm, row["prompt"], [row["image"]], row["chosen"]),
            ("main", "rejected"): direct_logp(vlm, row["prompt"], [row["image"]], row["rejected"]),
            ("visual", "rejected"): direct_logp(
                vlm, row["prompt"], [row["retrieved_image"]], row["chosen"]
            ),
            ("blind", "rejected"): direct_logp(vlm, row["prompt"], [row["image"]], row["blind"]),
        }
        for (pair, side), value in expected.items():
            got = float(getattr(scores[pair], side)[i].detach())
            assert got == pytest.approx(value, abs=1e-4), (family, pair, side)
        # The chosen sequence is shared by the three pairs, and the frozen copy agrees.
        main = scores["main"]
        assert float(scores["visual"].chosen[i].detach()) == float(main.chosen[i].detach())
        assert float(main.ref_chosen[i]) == pytest.approx(float(main.chosen[i].detach()), abs=1e-5)


@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_each_distinct_image_is_encoded_once(models, family):
    vlm = load_vlm(models[family])
    rows = pair_rows()  # 3 distinct images behind 4 sequences a row (6 a row as separate pairs)
    batch = PairCollator(vlm.processor, ("main", "visual", "blind"))(rows)
    assert batch.input_ids.shape[0] == 8
    tower = vlm.core.model.vision_tower if family == "llava" else vlm.core.model.visual
    seen = []
    handle = tower.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    from mmalign.train.config import LoraConfig
    from mmalign.vlm.lora import add_lora

    model = add_lora(vlm.model, LoraConfig(rank=2))
    VLMPairScorer(model, "adapters")(model, batch, with_reference=True)
    handle.remove()
    # One call of the tower for policy and reference together, over the 3 distinct images.
    assert len(seen) == 1
    pixels = batch.vision["pixel_values"].shape[0]
    assert seen[0] == pixels
    assert (pixels == 3) if family == "llava" else (len(batch.vision["image_grid_thw"]) == 3)


def test_reference_from_disabled_adapters_matches_base(models):
    from mmalign.train.config import LoraConfig
    from mmalign.vlm.lora import add_lora

    vlm = load_vlm(models["toy"])
    batch = PairCollator(vlm.processor, ("main",))(pair_rows())
    base = VLMPairScorer(vlm.model, "copy")(vlm.model, batch, with_reference=False)["main"]
    model = add_lora(vlm.model, LoraConfig(rank=4))
    with torch.no_grad():  # move the adapter away from its zero start
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    out = VLMPairScorer(model, "adapters")(model, batch, with_reference=True)["main"]
    assert torch.allclose(out.ref_chosen, base.chosen, atol=1e-5)
    assert not torch.allclose(out.chosen, base.chosen, atol=1e-3)


def test_long_rows_raise_naming_the_row(models):
    vlm = load_vlm(models["toy"])
    rows = pair_rows()
    rows[1] = {**rows[1], "chosen": "yes " * 60}
    collator = PairCollator(vlm.processor, ("main",), max_length=40)
    assert collator.fits(rows[0]) and not collator.fits(rows[1])
    with pytest.raises(ValueError, match=r"row 7: .* exceed max_length 40"):
        collator(rows, row_ids=[3, 7])


def test_multi_image_rows_and_placeholders(models):
    vlm = load_vlm(models["llava"])
    a, b = random_images(2)
    row = {"prompt": "<image> left, <image> right: same colour?", "images": [a, b],
           "chosen": "no", "rejected": "yes"}  # fmt: skip
    batch = PairCollator(vlm.processor, ("main",))([row])
    assert batch.units == [[0, 1], [0, 1]]
    scores = VLMPairScorer(vlm.model, "copy")(vlm.model, batch, with_reference=False)["main"]
    expected = direct_logp(vlm, row["prompt"], [a, b], "no")
    assert float(scores.chosen[0].detach()) == pytest.approx(expected, abs=1e-4)
    bad = {**row, "images": [a]}
    with pytest.raises(ValueError, match="2 <image> placeholders but the row has 1"):
        PairCollator(vlm.processor, ("main",))([bad])


def test_unknown_pair_is_named(models):
    vlm = load_vlm(models["toy"])
    with pytest.raises(ValueError, match="unknown VLM pair 'visaul'"):
        PairCollator(vlm.processor, ("visaul",))


def test_weights_key_changes_when_the_weights_change(tmp_path):
    """Caches of generated blind answers and reference scores are keyed by the weights: the same
    folder with rewritten weights (a rebuilt model) must not reuse them; a reload must."""
    tiny_llava(tmp_path / "m")
    first, again = load_vlm(tmp_path / "m"), load_vlm(tmp_path / "m")
    assert first.weights_key == again.weights_key
    assert load_vlm(tmp_path / "m", dtype="bfloat16").weights_key != first.weights_key
    with torch.no_grad():
        next(first.model.parameters()).add_(1.0)
    first.model.save_pretrained(tmp_path / "m")  # same names and sizes, new contents
    assert load_vlm(tmp_path / "m").weights_key != again.weights_key
