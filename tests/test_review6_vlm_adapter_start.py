"""Training a VLM recipe whose `model.name_or_path` is a PEFT adapter folder (DPO after an SFT
run). `load_vlm` loads such a folder as a PeftModel; the recipe used it as it was: LoRA targeted
the old adapter's own layers (`NoMatchingPeftModuleError`: lora_A.default, base_layer ...), and
a full fine-tune trained the base weights but saved the adapter files alone, the updates lost.

The adapter is now merged into its base first (`load.merge_adapter`, as PRISM's policy is):
new LoRA goes on the base's layers, a full fine-tune saves every weight, and the reference
(LoRA off, precomputed, a copy) is the starting model, base + adapter. A LoRA run's adapter
names the starting adapter as its base, and `load_vlm` applies that one, merged, first (also
where the adapter is given on top of the base model: review 7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_vlm_train import _Accel, vlm_config

from mmalign.train.config import LoraConfig
from mmalign.train.loop import train
from mmalign.vlm.adapter_chain import BASE_LINK
from mmalign.vlm.collate import SequenceBatch
from mmalign.vlm.load import load_vlm, merge_adapter
from mmalign.vlm.lora import add_lora, save_adapter
from mmalign.vlm.recipe import VLMRecipe
from mmalign.vlm.scorer import VLMPairScorer


@pytest.fixture(scope="module")
def sft(tmp_path_factory) -> str:
    """An SFT adapter on toy-vlm, far from the base (random LoRA B, so it is not the identity)."""
    vlm = load_vlm("toy:vlm")
    torch.manual_seed(0)
    model = add_lora(vlm.model, LoraConfig(rank=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return str(save_adapter(model, vlm.processor, tmp_path_factory.mktemp("sft")))


def _config(out: Path, sft: str, **sections: Any):
    sections.setdefault("train", {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-2})
    return vlm_config(out, model={"name_or_path": sft}, data={"toy": {"n": 8}}, **sections)


def _chosen(model: Any, batch: SequenceBatch) -> torch.Tensor:
    return VLMPairScorer(model, "none")(model, batch, with_reference=False)["main"].chosen


@pytest.mark.parametrize("reference", ["adapters", "precomputed"])
def test_lora_from_an_adapter_starts_from_it_merged(tmp_path, monkeypatch, sft, reference):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    recipe = VLMRecipe(_config(tmp_path / "run", sft, vlm={"reference": reference}), _Accel())
    assert recipe.start_adapters == (sft,)
    names = [n for n, _ in recipe.model.named_modules()]
    assert sum(n.endswith("lora_A.default") for n in names) > 0  # one new adapter, on the base
    assert not any(".base_layer.base_layer" in n or "lora_A.default.lora_A" in n for n in names)
    batch = recipe.collate([recipe.dataset[i] for i in range(4)])
    scores = recipe.scorer(recipe.model, batch, with_reference=True)["main"]
    start = load_vlm(sft)  # the SFT policy: base + adapter
    base = load_vlm("toy:vlm")
    expected = _chosen(start.model, batch)
    assert not torch.allclose(expected, _chosen(base.model, batch), atol=1e-2)  # a real start
    assert torch.allclose(scores.ref_chosen, expected, atol=1e-4)  # the reference is the start
    assert torch.allclose(scores.chosen, expected, atol=1e-4)  # so is the policy at step 0
    assert recipe.describe()["start_adapters"] == [sft]


def test_a_lora_run_from_an_adapter_saves_an_adapter_that_loads_on_it(tmp_path, sft):
    result = train(_config(tmp_path / "run", sft, vlm={"merge": True}), VLMRecipe)
    folder = Path(result.saved["path"])
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(sft).resolve())
    # and relative to the adapter, so the run folders can move together (review 7)
    link = json.loads((folder / BASE_LINK).read_text())["relative"]
    assert (folder / link).resolve() == Path(sft).resolve()
    loaded = load_vlm(folder)
    assert loaded.adapters == (str(Path(sft).resolve()), str(folder))
    recipe = VLMRecipe(_config(tmp_path / "again", sft), _Accel())
    batch = recipe.collate([recipe.dataset[i] for i in range(4)])
    merged = _chosen(load_vlm(result.saved["merged"]).model, batch)  # the trained model, whole
    assert torch.allclose(_chosen(loaded.model, batch), merged, atol=1e-4)
    # on its base model, the new adapter brings its SFT start too (review 7: it was left out)
    on_base = load_vlm("toy:vlm", adapter=folder)
    assert on_base.adapters == loaded.adapters
    assert torch.allclose(_chosen(on_base.model, batch), merged, atol=1e-4)


def test_full_fine_tune_from_an_adapter_saves_every_weight(tmp_path, sft):
    cfg = _config(tmp_path / "full", sft, lora=None)
    recipe = VLMRecipe(cfg, _Accel())
    start = load_vlm(sft)
    assert merge_adapter(start)
    batch = recipe.collate([recipe.dataset[i] for i in range(4)])
    scores = recipe.scorer(recipe.model, batch, with_reference=True)["main"]
    assert recipe.scorer.reference == "copy"
    assert torch.allclose(scores.ref_chosen, _chosen(start.model, batch), atol=1e-4)

    result = train(cfg, VLMRecipe)
    folder = Path(result.saved["path"])
    assert result.saved["kind"] == "model" and not (folder / "adapter_config.json").exists()
    saved = load_vlm(folder)
    assert saved.adapters == () and not hasattr(saved.model, "peft_config")
    after, before = saved.model.state_dict(), start.model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert any(".language_model." in k and "lora" not in k for k in changed)  # base weights
    assert not any("vision_tower" in k for k in changed)  # frozen, as from any start


def test_an_adapter_chain_that_loops_is_refused(tmp_path, sft):
    loop = tmp_path / "loop"
    loop.mkdir()
    config = json.loads((Path(sft) / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(loop)
    (loop / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="loop"):
        load_vlm(loop)
