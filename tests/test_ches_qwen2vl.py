"""CHES / LN-CHES (Razin et al., METHODS.md section 1) on a tiny random Qwen2-VL (M-RoPE, a
dynamic image grid) equal a direct computation from the model's own last-layer hidden states,
from a fresh pass and from the cached states: the qwen2vl family of
`test_vlm_diagnose.test_ches_equals_direct_computation` (toy, llava)."""

from __future__ import annotations

import pytest
import torch
from test_vlm_diagnose import no_forward
from vlm_helpers import pair_rows

from mmalign.vlm.collate import PairCollator, user_content
from mmalign.vlm.diagnose import ches_scores, diagnose_batch, diagnose_rows, pair_key
from mmalign.vlm.diagnose_states import StatesKey, load_states
from mmalign.vlm.load import load_vlm
from mmalign.vlm.tiny import tiny_qwen2vl


def direct_hidden(vlm, prompt: str, images: list, answer: str) -> tuple[torch.Tensor, int]:
    """(sum of the last-layer hidden states from the last prompt token through the
    second-to-last answer token, answer tokens), from the model's own full forward. As
    `test_vlm_diagnose.direct_hidden`, plus what Qwen2-VL needs: the processor's per-token
    `mm_token_type_ids` (0 text, 1 image; M-RoPE places tokens by it) extended over the
    answer's text tokens."""
    user = [{"role": "user", "content": user_content(prompt, len(images))}]
    head = vlm.processor.apply_chat_template(user, add_generation_prompt=True)
    turn = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
    full = vlm.processor.apply_chat_template([*user, turn])
    assert full.startswith(head)
    inputs = dict(vlm.processor(text=[head], images=images, return_tensors="pt"))
    comp = torch.tensor([vlm.tokenizer(full[len(head) :], add_special_tokens=False)["input_ids"]])
    p, n = inputs["input_ids"].shape[1], comp.shape[1]
    assert "image_grid_thw" in inputs  # the dynamic grid: the Qwen2-VL path, not LLaVA's
    for key, value in list(inputs.items()):
        if key != "input_ids" and torch.is_tensor(value) and value.shape[:2] == (1, p):
            inputs[key] = torch.cat([value, torch.zeros_like(comp, dtype=value.dtype)], 1)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], comp], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with torch.no_grad():
        out = vlm.model(**inputs, output_hidden_states=True)
    h = out.hidden_states[-1][0].double()
    return h[p - 1 : p - 1 + n].sum(0), n


@pytest.fixture
def qwen(tmp_path):
    """A tiny random Qwen2-VL saved and loaded back as a real checkpoint."""
    tiny_qwen2vl(tmp_path / "qwen")
    vlm = load_vlm(str(tmp_path / "qwen"))
    assert type(vlm.model).__name__ == "Qwen2VLForConditionalGeneration"
    return vlm


def _direct(vlm, row: dict) -> tuple[float, float, int, int, torch.Tensor]:
    """(CHES, LN-CHES, chosen tokens, rejected tokens, chosen sum) computed directly."""
    s_c, n_c = direct_hidden(vlm, row["prompt"], [row["image"]], row["chosen"])
    s_r, n_r = direct_hidden(vlm, row["prompt"], [row["image"]], row["rejected"])
    ches = float(s_c @ s_r - s_c @ s_c)
    ln_ches = float(s_c @ s_r / (n_c * n_r) - s_c @ s_c / n_c**2)
    return ches, ln_ches, n_c, n_r, s_c


def test_ches_equals_direct_computation_qwen2vl(qwen):
    vlm = qwen
    rows = pair_rows()
    batch = PairCollator(vlm.processor, ("main",))(rows)
    got = diagnose_batch(vlm.model, batch)
    for i, row in enumerate(rows):
        ches, ln_ches, n_c, n_r, _ = _direct(vlm, row)
        assert got["chosen_tokens"][i] == n_c and got["rejected_tokens"][i] == n_r
        assert got["ches"][i] == pytest.approx(ches, rel=1e-5, abs=1e-5)
        assert got["ln_ches"][i] == pytest.approx(ln_ches, rel=1e-5, abs=1e-5)
        ranked = got["logp_chosen"][i] > got["logp_rejected"][i]
        assert got["ranking_correct"][i] == ranked
    # the two rows have different answers: the scores must differ (not a constant)
    assert got["ches"][0] != got["ches"][1]


def test_ches_from_cached_states_equals_direct_computation_qwen2vl(qwen):
    """A second diagnosis reads the states the first stored (no forward at all) and gives the
    same columns; CHES / LN-CHES from the file's sums and counts equal the direct ones."""
    vlm = qwen
    rows = pair_rows()
    fresh = diagnose_rows(vlm.model, vlm.processor, rows, model_key=vlm.weights_key,
                          progress=False)  # fmt: skip
    assert fresh.notes == []
    with no_forward() as calls:
        cached = diagnose_rows(vlm.model, vlm.processor, rows, model_key=vlm.weights_key,
                               progress=False)  # fmt: skip
    assert calls == [] and "from the cache" in cached.notes[0]
    assert cached.columns == fresh.columns
    path = StatesKey.of(vlm.weights_key, [pair_key(r) for r in rows], vlm.processor).path()
    t = load_states(path, "test").tensors
    ches, ln_ches = ches_scores(t["chosen_sum"], t["rejected_sum"], t["chosen_tokens"],
                                t["rejected_tokens"])  # fmt: skip
    for i, row in enumerate(rows):
        d_ches, d_ln, n_c, n_r, s_c = _direct(vlm, row)
        assert float(ches[i]) == pytest.approx(d_ches, rel=1e-5, abs=1e-5)
        assert float(ln_ches[i]) == pytest.approx(d_ln, rel=1e-5, abs=1e-5)
        assert (int(t["chosen_tokens"][i]), int(t["rejected_tokens"][i])) == (n_c, n_r)
        assert torch.allclose(t["chosen_sum"][i], s_c, rtol=1e-5, atol=1e-5)
        assert fresh.columns["ches"][i] == pytest.approx(d_ches, rel=1e-5, abs=1e-5)
