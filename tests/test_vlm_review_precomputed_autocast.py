"""The precomputed VLM reference is scored under the training run's mixed precision.

The loop scores the policy inside `accelerator.autocast()`. A reference pass run outside it
(float32) against a bf16 policy gave a nonzero DPO margin at step 0, when the LoRA adapter is
still zero and policy == reference: on toy-vlm, loss 0.677 and accuracy 0.75 instead of log 2
and 0. The cache key names the precision, so float32 scores cached by an earlier run are not
reused by a bf16 one.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from test_vlm_train import vlm_config

from mmalign.vlm.recipe import VLMRecipe


class _Accel:
    """What the recipe reads from an accelerate.Accelerator, with its autocast (the real
    one is a process-wide singleton: a second precision in one test session cannot start)."""

    device = torch.device("cpu")
    is_main_process = True

    def __init__(self, mixed_precision: str):
        self.mixed_precision = mixed_precision

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.mixed_precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def recipe(out: Path, mixed_precision: str) -> VLMRecipe:
    cfg = vlm_config(out, vlm={"reference": "precomputed"},
                     train={"mixed_precision": mixed_precision})  # fmt: skip
    return VLMRecipe(cfg, _Accel(mixed_precision))


def step_zero(r: VLMRecipe) -> tuple[torch.Tensor, torch.Tensor]:
    """(policy, reference) scores of the first batch's chosen answers, as the loop takes them."""
    batch = r.collate([r.dataset[i] for i in range(4)])
    with r.accelerator.autocast():
        scores = r.score(r.model, batch, torch.zeros(4), with_reference=True)["main"]
    return scores.chosen.detach(), scores.ref_chosen


def test_precomputed_reference_equals_the_bf16_policy_at_step_zero(tmp_path):
    # a float32 recipe first: its cached reference scores must not serve the bf16 one
    policy, ref = step_zero(recipe(tmp_path / "fp32", "no"))
    assert torch.allclose(policy, ref, atol=1e-5)
    # the adapter starts at zero, so policy == reference: margin 0
    policy, ref = step_zero(recipe(tmp_path / "bf16", "bf16"))
    assert torch.allclose(policy, ref, atol=1e-5), (policy, ref)


def test_a_changed_chat_template_is_scored_again(tmp_path, monkeypatch):
    """The cached scores are keyed by completion text, not by the prompt the chat template
    renders: the same model folder with its template reworded gets a cache of its own."""
    import shutil

    from mmalign.data.cache import cache_root
    from mmalign.toy.paths import model_path

    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "toy-vlm"
    shutil.copytree(model_path("vlm"), copy)
    cfg = vlm_config(tmp_path / "a", model={"name_or_path": str(copy), "kind": "vlm"},
                     vlm={"reference": "precomputed"})  # fmt: skip
    VLMRecipe(cfg, _Accel("no"))
    folder = cache_root() / "vlm-reference"
    first = set(folder.iterdir())
    VLMRecipe(cfg, _Accel("no"))  # the same template: the same cache
    assert set(folder.iterdir()) == first
    template = copy / "chat_template.jinja"
    text = template.read_text()
    assert "{{ text + ' ' }}" in text  # the user turn's end
    template.write_text(text.replace("{{ text + ' ' }}", "{{ text + ' . ' }}"))
    VLMRecipe(cfg, _Accel("no"))
    assert len(set(folder.iterdir()) - first) == 1
