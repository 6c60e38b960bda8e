"""The training loop on a tiny SD: metrics, checkpoints, resume, the cache, bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusion_helpers import read_metrics, save_tiny, tiny_config

from mmalign.config import ConfigError
from mmalign.diffusion.recipe import DiffusionRecipe
from mmalign.train.loop import TrainingError, train


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("models"))


def test_a_run_logs_checkpoints_and_saves_a_lora(tiny, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_config(tiny, out, train={"checkpoint_total_limit": 1})
    result = train(cfg, DiffusionRecipe)
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "lr", "grad_norm", "main/dpo/accuracy", "main/dpo/margin",
                "main/dpo/ranking_accuracy", "main/chosen_minus_ref"):  # fmt: skip
        assert key in metrics[0], key
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    # One checkpoint kept (total limit 1): the final one.
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint-6"]
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    run = json.loads((out / "mmalign_run.json").read_text())
    assert run["final"]["kind"] == "lora" and run["family"] == "sd"
    assert result.final_metrics["step"] == 6


def test_resume_continues_with_identical_losses(tiny, tmp_path):
    full = tmp_path / "full"
    train(tiny_config(tiny, full), DiffusionRecipe)
    # An interrupted run: only the step-3 checkpoint survived.
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "checkpoint-3", part / "checkpoints" / "checkpoint-3")
    train(tiny_config(tiny, part, train={"resume_from": "latest"}), DiffusionRecipe)
    a = {m["step"]: m["loss"] for m in read_metrics(full)}
    b = {m["step"]: m["loss"] for m in read_metrics(part)}
    assert sorted(b) == [4, 5, 6]
    for step in (4, 5, 6):
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])


def test_the_cache_trains_on_the_same_latents_as_the_encoders(tiny, tmp_path):
    plain = tmp_path / "plain"
    cached = tmp_path / "cached"
    train(tiny_config(tiny, plain, train={"max_steps": 3}), DiffusionRecipe)
    cfg = tiny_config(tiny, cached, train={"max_steps": 3}, diffusion={"precompute": True})
    train(cfg, DiffusionRecipe)
    # Same latents bit for bit (seeded per row); the text embeddings differ by ~6e-8 because
    # the cache encodes 16 prompts per batch and training 4, which moves step-3 losses ~3e-5.
    # A different latent draw moves them by ~1e-2.
    for a, b in zip(read_metrics(plain), read_metrics(cached), strict=True):
        assert abs(a["loss"] - b["loss"]) <= 2e-4


def test_the_cache_is_rebuilt_when_the_resolution_changes(tiny, tmp_path):
    from accelerate import Accelerator

    cfg = tiny_config(tiny, tmp_path / "a", diffusion={"precompute": True})
    first = DiffusionRecipe(cfg, Accelerator(cpu=True))
    again = DiffusionRecipe(cfg, Accelerator(cpu=True))
    assert again.cache == first.cache
    cfg64 = tiny_config(tiny, tmp_path / "b", diffusion={"precompute": True, "resolution": 64})
    other = DiffusionRecipe(cfg64, Accelerator(cpu=True))
    assert other.cache != first.cache
    assert other.dataset[0]["latents"].shape[-1] == 32  # 64 px / VAE factor 2


def test_a_nan_loss_stops_with_the_step_and_the_last_checkpoint(tiny, tmp_path):
    out = tmp_path / "nan"
    cfg = tiny_config(tiny, out, train={"learning_rate": 1e30, "max_steps": 6})
    with pytest.raises(TrainingError, match=r"step \d: the loss is not finite.*checkpoint"):
        train(cfg, DiffusionRecipe)
    assert not (out / "pytorch_lora_weights.safetensors").exists()


def test_existing_checkpoints_are_not_overwritten_silently(tiny, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(tiny, out, train={"max_steps": 3}), DiffusionRecipe)
    with pytest.raises(TrainingError, match="resume_from=latest"):
        train(tiny_config(tiny, out, train={"max_steps": 3}), DiffusionRecipe)


def test_resume_refuses_a_changed_recipe_and_allows_a_longer_run(tiny, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(tiny, out, train={"max_steps": 2}), DiffusionRecipe)
    # another beta: the step-2 weights belong to the old recipe (it would not even train,
    # having reached max_steps, and hand those weights back as the new recipe's)
    changed = tiny_config(tiny, out, objective=[{"loss": "dpo", "beta": 123.0}],
                          train={"max_steps": 2, "resume_from": "latest"})  # fmt: skip
    with pytest.raises(TrainingError, match=r"another recipe \(objective\.0\.beta: "):
        train(changed, DiffusionRecipe)
    # running longer, logging differently: the same run, resumed
    longer = tiny_config(tiny, out, train={"max_steps": 3, "resume_from": "latest",
                                           "log_every": 2})  # fmt: skip
    train(longer, DiffusionRecipe)
    assert [m["step"] for m in read_metrics(out)][-1] == 3


def test_a_setting_added_after_a_run_was_saved_keeps_its_resume(tiny, tmp_path):
    from mmalign.config import to_dict
    from mmalign.train.resume import recipe_changes

    def changes(saved, cfg):
        run_file = tmp_path / "mmalign_run.json"
        run_file.write_text(json.dumps({"config": saved}))
        return recipe_changes(run_file, cfg)

    cfg = to_dict(tiny_config(tiny, tmp_path / "run"))
    saved = json.loads(json.dumps(cfg, default=str))
    del saved["vlm"]["train_projector"], saved["diffusion"]["vae_batch_size"], saved["ppd"]
    assert changes(saved, cfg) == []  # all three still at their defaults
    cfg["diffusion"]["vae_batch_size"] = 2  # not the default: the old run did not do that
    assert changes(saved, cfg) == ["diffusion.vae_batch_size: '(unset)' -> 2"]
    # what a default must not hide: a full fine-tune resumed with the default LoRA, and a loss
    # argument written into the objective (the loss's own default may differ)
    full = {**json.loads(json.dumps(cfg, default=str)), "lora": None}
    assert "lora: None -> '(unset)'" in changes(full, cfg)
    assert "lora.dropout: '(unset)' -> 0.0" in changes(full, cfg)  # the default, still shown
    bare = json.loads(json.dumps(cfg, default=str))
    cfg["objective"] = [{"loss": "dpo"}]
    bare["objective"] = [{"loss": "dpo"}]
    cfg["objective"][0]["beta"] = 0.1
    assert changes(bare, cfg) == ["objective.0.beta: '(unset)' -> 0.1"]


def test_reference_free_objectives_never_run_the_reference(tiny, tmp_path):
    out = tmp_path / "mapo"
    cfg = tiny_config(tiny, out, objective=[{"loss": "mapo"}], train={"max_steps": 2})
    train(cfg, DiffusionRecipe)
    assert "main/chosen_minus_ref" not in read_metrics(out)[0]
    assert "main/mapo/log_odds" in read_metrics(out)[0]


def test_full_fine_tune_saves_a_unet_folder(tiny, tmp_path):
    from diffusers import UNet2DConditionModel

    out = tmp_path / "full"
    train(tiny_config(tiny, out, lora=None, train={"max_steps": 2}), DiffusionRecipe)
    unet = UNet2DConditionModel.from_pretrained(out / "unet")
    base = UNet2DConditionModel.from_pretrained(tiny / "unet")
    pairs = zip(unet.parameters(), base.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)


def test_bad_input_is_named(tiny, tmp_path):
    with pytest.raises(ConfigError, match="unknown loss 'dpoo'"):
        tiny_config(tiny, tmp_path, objective=[{"loss": "dpoo"}])
    cfg = tiny_config(tiny, tmp_path / "x", data={"path": str(tmp_path), "toy": None})
    with pytest.raises((ValueError, FileNotFoundError)):
        train(cfg, DiffusionRecipe)


def test_a_dataset_without_pair_columns_is_named(tiny, tmp_path):
    from datasets import Dataset

    folder = tmp_path / "bad"
    Dataset.from_dict({"caption": ["a"], "image": ["b"]}).save_to_disk(str(folder))
    cfg = tiny_config(tiny, tmp_path / "x", data={"path": str(folder), "toy": None})
    with pytest.raises(ValueError, match="missing: prompt, chosen, rejected"):
        train(cfg, DiffusionRecipe)
    assert not (tmp_path / "x" / "pytorch_lora_weights.safetensors").exists()


def test_demo_sets_aside_a_run_of_another_recipe(tmp_path):
    from mmalign.config import to_dict
    from mmalign.demo import _set_aside_other_recipe

    run = tmp_path / "train"
    old = tiny_config("some-model", run)
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (run / "mmalign_run.json").write_text(json.dumps({"config": to_dict(old)}, default=str))
    _set_aside_other_recipe(run, tiny_config("some-model", run, train={"max_steps": 9}))
    assert (run / "checkpoints").is_dir()  # a longer run of the same recipe: resumed
    new = tiny_config("some-model", run, objective=[{"loss": "mapo", "beta": 10.0}])
    _set_aside_other_recipe(run, new)
    assert not run.exists() and (tmp_path / "train.old-1" / "checkpoints").is_dir()
