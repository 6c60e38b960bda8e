"""Shared-prompt packing: a prompt and its completions in one row give the same scores and
gradients as one sequence per completion, for the models that support it, and fewer tokens."""

from __future__ import annotations

import pytest
import torch
from vlm_helpers import pair_rows, tiny_vlms

from mmalign.train.config import LoraConfig
from mmalign.vlm.collate import PairCollator
from mmalign.vlm.load import load_vlm
from mmalign.vlm.lora import add_lora
from mmalign.vlm.packing import pack, supports_packing
from mmalign.vlm.scorer import VLMPairScorer

PAIRS = ("main", "visual", "blind")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_vlms(tmp_path_factory.mktemp("vlms"))


def test_pack_layout_positions_mask_and_scored_tokens():
    # two sequences share the prompt [5, 6, 7]; completions [8, 9] and [10]; right-padded
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 10, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    completion = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]]).bool()
    p = pack(ids, attention, completion, ["a", "a"], pad_id=0)
    assert p is not None
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 9, 10]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 3]]
    allowed = p.attention_mask[0, 0].int().tolist()
    assert allowed[5] == [1, 1, 1, 0, 0, 1]  # the 2nd completion: prompt and itself only
    assert allowed[4] == [1, 1, 1, 1, 1, 0]  # the 1st completion's 2nd token: causal
    s = p.scored
    assert s.target.tolist() == [3, 4, 5] and s.source.tolist() == [2, 3, 2]
    assert s.sequence.tolist() == [0, 0, 1]
    # additive form (eager attention): 0 where attended, the dtype's minimum elsewhere
    f = pack(ids, attention, completion, ["a", "a"], pad_id=0, dtype=torch.float32)
    assert f is not None and f.attention_mask[0, 0, 5, 3] == torch.finfo(torch.float32).min
    assert f.attention_mask[0, 0, 5, 5] == 0
    # a group whose prompt tokens differ is not packed
    other = ids.clone()
    other[1, 1] = 4
    assert pack(other, attention, completion, ["a", "a"], pad_id=0) is None


def _scores(model, batch, pack_prompts: bool):
    scorer = VLMPairScorer(model, "adapters", pack=pack_prompts)
    return scorer, scorer(model, batch, with_reference=True)


@pytest.mark.parametrize("family", ["toy", "llava"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_scores_and_gradients_equal_unpacked(models, family, attention):
    vlm = load_vlm(models[family])
    vlm.model.set_attn_implementation(attention)
    batch = PairCollator(vlm.processor, PAIRS)(pair_rows())
    torch.manual_seed(0)
    model = add_lora(vlm.model, LoraConfig(rank=4))
    with torch.no_grad():  # an adapter away from its zero start, so policy != reference
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    params = [p for p in model.parameters() if p.requires_grad]
    grads, results = [], []
    for pack_prompts in (True, False):
        scorer, out = _scores(model, batch, pack_prompts)
        packed = scorer.packed(model, batch)
        assert (packed is not None) == pack_prompts
        loss = sum(o.chosen.sum() - 0.5 * o.rejected.sum() for o in out.values())
        grads.append(torch.autograd.grad(loss, params))
        results.append(out)
    packed_out, plain_out = results
    for name in PAIRS:
        for side in ("chosen", "rejected", "ref_chosen", "ref_rejected"):
            a, b = getattr(packed_out[name], side), getattr(plain_out[name], side)
            assert torch.allclose(a, b, atol=1e-5), (name, side, a, b)
        assert torch.equal(packed_out[name].chosen_len, plain_out[name].chosen_len)
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_packing_shares_the_prompt_and_saves_tokens(models):
    vlm = load_vlm(models["llava"])
    batch = PairCollator(vlm.processor, PAIRS)(pair_rows())
    packed = VLMPairScorer(vlm.model, "none").packed(vlm.model, batch)
    assert packed is not None
    # per row: the shown image's prompt (chosen, rejected, blind) and the retrieved one's
    assert packed.input_ids.shape[0] == 4 and batch.input_ids.shape[0] == 8
    real = int((packed.position_ids > 0).sum()) + packed.input_ids.shape[0]
    assert real < int(batch.attention_mask.sum())


def test_models_without_one_position_per_token_are_not_packed(models):
    qwen = load_vlm(models["qwen"])  # M-RoPE: three positions per token, set by the image grid
    assert not supports_packing(qwen.core)
    batch = PairCollator(qwen.processor, ("main",))(pair_rows())
    assert VLMPairScorer(qwen.model, "none").packed(qwen.model, batch) is None
    llava = load_vlm(models["llava"])
    assert supports_packing(llava.core)
    llava.model.set_attn_implementation("eager")
    assert supports_packing(llava.core)
