"""BPO's blind responses (`VLMRecipe._blind`) are generated while the recipe is being built,
before the model is moved to the accelerator: they ran on the device the model was loaded on,
the CPU, on a GPU machine too (for a 7B VLM, hours of CPU generation instead of minutes, with
the GPU idle). They now run on the accelerator's device, as `data.filter`'s pass does.

No GPU here: the accelerator's device is `meta`, standing for the GPU; generation is replaced
by a stub that records where the model's weights are.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from mmalign.vlm import blind
from mmalign.vlm.recipe import VLMRecipe


def _recipe(device: str) -> VLMRecipe:
    recipe = VLMRecipe.__new__(VLMRecipe)
    recipe.cfg = SimpleNamespace(vlm=SimpleNamespace(blind_batch_size=2, blind_max_new_tokens=3))
    recipe.accelerator = SimpleNamespace(device=torch.device(device), is_main_process=True)
    recipe.vlm = SimpleNamespace(model=torch.nn.Linear(2, 2), processor=None)
    return recipe


def test_blind_responses_run_on_the_accelerator_device(tmp_path, monkeypatch):
    seen = []

    def stub(model, processor, prompts, **kwargs):
        seen.append(next(model.parameters()).device)
        return blind.BlindAnswers([f"blind {p}" for p in prompts], [False] * len(prompts))

    monkeypatch.setattr(blind, "blind_responses", stub)
    recipe = _recipe("meta")
    path = tmp_path / "blind.json"
    assert recipe._blind(path, ["a", "b"]).answers == ["blind a", "blind b"]
    assert seen == [torch.device("meta")]
    assert json.loads(path.read_text())["answers"] == ["blind a", "blind b"]
    # a cached answer set is read back without touching the model
    recipe.vlm.model = torch.nn.Linear(2, 2)
    assert recipe._blind(path, ["a", "b"]).answers == ["blind a", "blind b"]
    assert len(seen) == 1 and next(recipe.vlm.model.parameters()).device.type == "cpu"


def test_on_a_cpu_run_they_stay_on_the_cpu(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(blind, "blind_responses", lambda model, processor, prompts, **kw: (
        seen.append(next(model.parameters()).device)
        or blind.BlindAnswers(["x"] * len(prompts), [False] * len(prompts))))  # fmt: skip
    _recipe("cpu")._blind(tmp_path / "b.json", ["a"])
    assert seen == [torch.device("cpu")]
