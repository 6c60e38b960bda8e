"""A checkpoint whose tokenizer has no pad token (a Llama-3-based fine-tune, say) must train and
generate: every batched processor call pads. The collator meant to fall back to the EOS as the
pad (its `pad_id`), but the processor refused to pad first ("Asking to pad but the tokenizer
does not have a padding token"), so `load_vlm` gives such a tokenizer its EOS as the pad, as
TRL's trainers do."""

from __future__ import annotations

import pytest
import torch
from vlm_helpers import pair_rows

from mmalign.vlm.blind import blind_responses
from mmalign.vlm.collate import PairCollator
from mmalign.vlm.load import load_vlm
from mmalign.vlm.scorer import VLMPairScorer
from mmalign.vlm.tiny import tiny_llava, tiny_qwen2vl


@pytest.mark.parametrize("build", [tiny_llava, tiny_qwen2vl], ids=["llava", "qwen2vl"])
def test_a_tokenizer_without_pad_token_collates_scores_and_generates(tmp_path, build):
    model, processor = build()
    rows = pair_rows()
    rows[1] = {**rows[1], "prompt": "is there a star ? describe the picture ."}  # longer
    with_pad = PairCollator(processor, ("main",))(rows)
    expected = VLMPairScorer(model, "copy")(model, with_pad, with_reference=False)["main"]
    processor.tokenizer.pad_token = None
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    vlm = load_vlm(tmp_path)
    batch = PairCollator(vlm.processor, ("main",))(rows)  # raised ValueError here
    tok = vlm.tokenizer
    assert tok.pad_token_id == tok.eos_token_id
    assert torch.equal(batch.attention_mask, with_pad.attention_mask)
    kept = batch.attention_mask.bool()
    assert torch.equal(batch.input_ids[kept], with_pad.input_ids[kept])
    assert (batch.input_ids[~kept] == tok.eos_token_id).all()
    got = VLMPairScorer(vlm.model, "copy")(vlm.model, batch, with_reference=False)["main"]
    assert torch.allclose(got.chosen, expected.chosen, atol=1e-5)
    assert torch.allclose(got.rejected, expected.rejected, atol=1e-5)
    prompts = [r["prompt"] for r in rows]
    batched = blind_responses(vlm.model, vlm.processor, prompts, max_new_tokens=4)
    alone = [blind_responses(vlm.model, vlm.processor, [p], max_new_tokens=4) for p in prompts]
    assert batched.answers == [a.answers[0] for a in alone]
    assert batched.capped == [a.capped[0] for a in alone]
