"""Dropout in VLM preference training. With `reference: adapters` the reference pass (the policy
with its LoRA off) ran in train mode, so a checkpoint's attention dropout made the reference
differ on every call (tiny LLaVA, attention dropout 0.1: three calls, three reference scores).
The reference pass now runs in eval mode, and `vlm.disable_dropout` (default true, TRL's
`DPOConfig.disable_dropout`) zeroes every dropout rate of the model before LoRA is added: the
`nn.Dropout` modules TRL zeroes, and the attention rates transformers keeps as attributes
(Llama's `attention_dropout`), which TRL's leaves on. `lora.dropout` keeps its rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_vlm_train import _Accel, vlm_config

from mmalign.train.config import LoraConfig
from mmalign.vlm.dropout import disable_dropout, evaluating
from mmalign.vlm.lora import add_lora
from mmalign.vlm.recipe import VLMRecipe
from mmalign.vlm.scorer import VLMPairScorer
from mmalign.vlm.tiny import tiny_llava


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> Path:
    """A tiny LLaVA whose checkpoint carries attention dropout 0.1 (language model and vision
    tower), as a fine-tuned one may."""
    folder = tmp_path_factory.mktemp("noisy")
    tiny_llava(folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["attention_dropout"] = 0.1
    config["vision_config"]["attention_dropout"] = 0.1
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _attention_rates(model: torch.nn.Module) -> set[float]:
    rates = set()
    for module in model.modules():
        for name in ("attention_dropout", "dropout"):
            value = getattr(module, name, None)
            if type(value) is float:
                rates.add(value)
    return rates


def _batch(recipe: VLMRecipe):
    return recipe.collate([recipe.dataset[i] for i in range(4)])


def test_the_reference_pass_samples_no_dropout(tmp_path, noisy):
    cfg = vlm_config(tmp_path / "run", model={"name_or_path": str(noisy)},
                     data={"toy": {"n": 8}}, lora={"rank": 4, "dropout": 0.1},
                     vlm={"disable_dropout": False})  # fmt: skip
    recipe = VLMRecipe(cfg, _Accel())
    assert 0.1 in _attention_rates(recipe.model)  # left on: the checkpoint's dropout
    batch = _batch(recipe)
    recipe.model.train()  # as train/loop.py before the first step
    frozen = recipe.model.get_base_model().model.vision_tower.eval()  # a module kept in eval
    scores = [recipe.scorer(recipe.model, batch, with_reference=True)["main"] for _ in range(3)]
    policy = [s.chosen for s in scores]
    assert not torch.allclose(policy[0], policy[1])  # dropout is on in the policy pass
    for s in scores[1:]:
        assert torch.equal(s.ref_chosen, scores[0].ref_chosen)
    assert recipe.model.training and not frozen.training  # each module's mode put back
    recipe.model.eval()
    still = recipe.scorer(recipe.model, batch, with_reference=True)["main"]
    assert torch.allclose(still.ref_chosen, scores[0].ref_chosen, atol=1e-5)


def test_the_recipe_disables_dropout_by_default_and_keeps_lora_dropout(tmp_path, noisy, capsys):
    cfg = vlm_config(tmp_path / "run", model={"name_or_path": str(noisy)},
                     data={"toy": {"n": 8}}, lora={"rank": 4, "dropout": 0.1})  # fmt: skip
    recipe = VLMRecipe(cfg, _Accel())
    assert _attention_rates(recipe.model) == {0.0}
    lora = [m.p for n, m in recipe.model.named_modules() if n.endswith("lora_dropout.default")]
    assert lora and set(lora) == {0.1}  # the rate lora.dropout sets
    assert recipe.vlm.core.config.text_config.attention_dropout == 0.1  # a saved config keeps it
    assert "vlm.disable_dropout:" in capsys.readouterr().out
    batch = _batch(recipe)
    recipe.model.train()
    with recipe.model.disable_adapter():  # the base alone: nothing random left in train mode
        first = recipe.scorer(recipe.model, batch, with_reference=False)["main"].chosen
        again = recipe.scorer(recipe.model, batch, with_reference=False)["main"].chosen
    assert torch.equal(first, again)


def test_disable_dropout_zeroes_modules_and_attention_rates():
    model, _ = tiny_llava()
    model.config.text_config.attention_dropout = 0.1
    model = type(model)(model.config)
    projector = model.model.multi_modal_projector
    projector.add_module("drop", torch.nn.Dropout(0.2))
    layers = model.config.text_config.num_hidden_layers
    assert disable_dropout(model) == layers + 1  # each attention's rate, and the module
    assert _attention_rates(model) == {0.0} and projector.drop.p == 0.0
    assert disable_dropout(model) == 0


def test_evaluating_restores_each_modules_mode():
    model, _ = tiny_llava()
    peft = add_lora(model, LoraConfig(rank=4, dropout=0.5)).train()
    peft.get_base_model().model.vision_tower.eval()
    before = {n: m.training for n, m in peft.named_modules()}
    with evaluating(peft):
        assert not any(m.training for m in peft.modules())
    assert {n: m.training for n, m in peft.named_modules()} == before
    assert VLMPairScorer(peft, "adapters").reference == "adapters"
