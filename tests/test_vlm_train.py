"""VLM training through `mmalign train`: LoRA adapters that PEFT loads, BPO blind responses,
skipped long rows, the precomputed reference, full fine-tuning, resuming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusion_helpers import config_with

from mmalign.train import Config
from mmalign.train.loop import train
from mmalign.vlm.recipe import VLMRecipe


def vlm_config(out: Path, **sections: Any) -> Config:
    raw: dict[str, Any] = {
        "model": {"name_or_path": "toy:vlm", "kind": "vlm"},
        "data": {"path": "toy:safety", "split": "train", "toy": {"n": 24}},
        "objective": [{"loss": "dpo", "beta": 0.1}],
        "lora": {"rank": 4},
        "train": {
            "max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, "log_every": 1,
            "checkpoint_every": 2, "trackers": [], "lr_scheduler": "constant",
        },
        "validation": {"enabled": False},
        "output_dir": str(out),
    }  # fmt: skip
    return config_with(raw, sections)


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_adapter_loads_with_peft_and_changes_the_answer(tmp_path):
    from peft import PeftModel
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from mmalign.toy.paths import model_path
    from mmalign.vlm.evaluate import answer_rows, heldout_rows
    from mmalign.vlm.load import VLM

    out = tmp_path / "run"
    cfg = vlm_config(out, data={"path": "toy:hallucination", "toy": {"n": 64}},
                     train={"max_steps": 20, "batch_size": 8, "learning_rate": 5e-3})  # fmt: skip
    result = train(cfg, VLMRecipe)
    folder = Path(result.saved["path"])
    assert (folder / "adapter_config.json").is_file()
    assert (folder / "adapter_model.safetensors").is_file()

    rows = heldout_rows("hallucination", 96, 0)
    base = LlavaForConditionalGeneration.from_pretrained(model_path("vlm")).eval()
    processor = AutoProcessor.from_pretrained(model_path("vlm"))
    before = answer_rows(VLM(base, processor, "base"), rows)
    tuned = PeftModel.from_pretrained(base, str(folder)).eval()
    after = answer_rows(VLM(tuned, processor, "tuned"), rows)
    changed = sum(a != b for a, b in zip(before, after, strict=True))
    assert changed >= 1, "the trained adapter changes no answer"
    with tuned.disable_adapter():  # the base answers are back without the adapter
        assert answer_rows(VLM(tuned, processor, "base"), rows) == before
    run = json.loads((out / "mmalign_run.json").read_text())
    assert run["task"] == "vlm" and run["final"]["kind"] == "peft_adapter"


def test_resume_reproduces_the_losses(tmp_path):
    full = tmp_path / "full"
    train(vlm_config(full), VLMRecipe)
    part = tmp_path / "part"
    train(vlm_config(part, train={"max_steps": 2}), VLMRecipe)
    train(vlm_config(part, train={"resume_from": "latest"}), VLMRecipe)
    assert losses(part) == pytest.approx(losses(full), abs=1e-6)


def test_bpo_builds_blind_responses_once_and_both_forms_train(tmp_path, monkeypatch):
    import mmalign.vlm.blind as blind_module

    calls = []
    real = blind_module.blind_responses

    def counted(*args, **kwargs):
        calls.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(blind_module, "blind_responses", counted)
    objective = [{"pair": "main", "loss": "dpo"}, {"pair": "blind", "loss": "dpo"}]
    data = {"toy": {"n": 20}}  # a dataset no other test builds blind responses for
    cfg = vlm_config(tmp_path / "bpo", objective=objective, data=data)
    train(cfg, VLMRecipe)
    assert calls == [20]
    metrics = json.loads((tmp_path / "bpo" / "metrics.jsonl").read_text().splitlines()[0])
    assert "blind/dpo/loss" in metrics and "main/dpo/loss" in metrics

    rows = VLMRecipe(cfg, _Accel())
    assert calls == [20]  # read back from the cache, not generated again
    blind = rows.dataset.extra["blind"]
    assert len(blind) == 20 and all(isinstance(b, str) for b in blind)
    extra = vlm_config(tmp_path / "rows", objective=objective, data=data,
                       vlm={"bpo_form": "extra_rows"})  # fmt: skip
    recipe = VLMRecipe(extra, _Accel())
    assert len(recipe.dataset) == 2 * len(rows.dataset)
    _, row = recipe.dataset[len(rows.dataset)]
    assert row["rejected"] == row["blind"]


def test_rows_too_long_are_skipped_and_counted_or_raise(tmp_path):
    cfg = vlm_config(tmp_path / "a", vlm={"max_length": 44})
    recipe = VLMRecipe(cfg, _Accel())
    skipped = recipe.report.skipped.get("too_long", 0)
    assert 0 < skipped < 24 and len(recipe.dataset) == 24 - skipped
    assert recipe.describe()["skipped"]["too_long"] == skipped
    strict = vlm_config(tmp_path / "b", vlm={"max_length": 44, "strict": True})
    with pytest.raises(ValueError, match=r"row \d+: \d+ tokens exceed vlm.max_length 44"):
        VLMRecipe(strict, _Accel())


def test_precomputed_reference_gives_the_same_losses(tmp_path):
    a, b = tmp_path / "adapters", tmp_path / "pre"
    train(vlm_config(a), VLMRecipe)
    train(vlm_config(b, vlm={"reference": "precomputed"}), VLMRecipe)
    assert losses(b) == pytest.approx(losses(a), abs=1e-5)


def test_full_fine_tune_freezes_the_vision_tower_and_saves_a_model(tmp_path):
    from mmalign.vlm.load import load_vlm

    cfg = vlm_config(tmp_path / "full", lora=None, train={"max_steps": 2})
    recipe = VLMRecipe(cfg, _Accel())
    trainable = {n for n, p in recipe.model.named_parameters() if p.requires_grad}
    assert trainable and not any("vision_tower" in n for n in trainable)
    assert any("multi_modal_projector" in n for n in trainable)  # LLaVA's stage 2 trains it
    assert recipe.scorer.reference == "copy"
    frozen = VLMRecipe(vlm_config(tmp_path / "frozen", lora=None,
                                  vlm={"train_projector": False}), _Accel())  # fmt: skip
    left = {n for n, p in frozen.model.named_parameters() if p.requires_grad}
    assert left == {n for n in trainable if "multi_modal_projector" not in n}
    result = train(cfg, VLMRecipe)
    tuned = load_vlm(result.saved["path"])
    assert tuned.family == "llava"


def test_merged_model_answers_like_the_adapter(tmp_path):
    from mmalign.vlm.evaluate import answer_rows, heldout_rows
    from mmalign.vlm.load import load_vlm

    cfg = vlm_config(tmp_path / "m", vlm={"merge": True}, train={"learning_rate": 1e-2})
    result = train(cfg, VLMRecipe)
    rows = heldout_rows("safety", 16, 0)
    adapter = answer_rows(load_vlm(result.saved["path"]), rows)
    merged = answer_rows(load_vlm(result.saved["merged"]), rows)
    assert adapter == merged


def test_qwen2vl_trains_through_the_same_recipe(tmp_path):
    from mmalign.vlm.tiny import tiny_qwen2vl

    tiny_qwen2vl(tmp_path / "qwen")
    cfg = vlm_config(tmp_path / "q", model={"name_or_path": str(tmp_path / "qwen")},
                     train={"max_steps": 2})  # fmt: skip
    result = train(cfg, VLMRecipe)
    assert all(torch.isfinite(torch.tensor(losses(tmp_path / "q"))))
    assert Path(result.saved["path"], "adapter_config.json").is_file()


class _Accel:
    """What the recipe reads from an accelerate.Accelerator, on the CPU."""

    device = torch.device("cpu")
    is_main_process = True


def test_gradient_checkpointing_gives_the_same_step(tmp_path):
    plain, checkpointed = tmp_path / "plain", tmp_path / "gc"
    train(vlm_config(plain, train={"max_steps": 2}), VLMRecipe)
    train(vlm_config(checkpointed, train={"max_steps": 2, "gradient_checkpointing": True}),
          VLMRecipe)  # fmt: skip
    grads = [json.loads(x)["grad_norm"] for x in (checkpointed / "metrics.jsonl").open()]
    assert grads[0] > 0
    assert losses(checkpointed) == pytest.approx(losses(plain), abs=1e-6)
