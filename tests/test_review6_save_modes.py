"""Weights saved outside a training run get the umask's permissions too.

safetensors 0.8 leaves every file it writes 0600 (safetensors/safetensors#782). Runs, their
checkpoints and the caches were given the umask's mode (`mmalign.files.make_readable`, see
test_review5_file_modes.py), but not weights saved elsewhere: a dense reward model saved with
its own `save_pretrained` (as a user does outside `mmalign train`), and the toy base models
`mmalign toy build` writes into the package, read by every user of an install (a Docker image
built as root and run as another user could not load toy-sd or toy-vlm).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from file_helpers import modes


def test_a_dense_reward_model_saved_by_itself_is_readable(tmp_path, umask):
    from mmalign.rewards.dense import DenseRewardModel

    model = DenseRewardModel.from_backbone("toy", dim=32, depth=1, heads=2)
    folder = model.save_pretrained(tmp_path / "reward")
    assert modes(folder) == {"model.safetensors": 0o644}  # was 0o600
    assert (folder / "config.json").stat().st_mode & 0o777 == 0o644
    umask(0o027)  # the umask's mode, not a forced 0644
    assert modes(model.save_pretrained(tmp_path / "group")) == {"model.safetensors": 0o640}
    reloaded = DenseRewardModel.from_pretrained(folder)
    assert reloaded.config == model.config


def test_a_dense_reward_model_on_a_clip_backbone_saves_readable_files(tmp_path, umask):
    """The tokenizer folder beside the weights: every file the umask's."""
    from test_dense_reward import save_tiny_clip

    from mmalign.rewards.dense import DenseRewardModel

    save_tiny_clip(tmp_path / "clip")
    model = DenseRewardModel.from_backbone(str(tmp_path / "clip"), dim=32, heads=2, depth=1)
    folder = model.save_pretrained(tmp_path / "reward")
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.parent != folder for p in files)  # the tokenizer's own folder
    assert {p.stat().st_mode & 0o777 for p in files} == {0o644}


def test_toy_diffusion_builds_save_readable_weights(tmp_path, umask):
    """toy-sd and toy-flow both finish through `save_and_measure`: here with the shipped
    toy-sd pipeline, and an evaluation that records what it was given (it runs the sampler)."""
    from diffusers import DiffusionPipeline

    from mmalign.toy.models.finish import save_and_measure
    from mmalign.toy.models.sd import ToySDSettings
    from mmalign.toy.paths import model_path

    pipe = DiffusionPipeline.from_pretrained(str(model_path("sd")))
    seen: list[dict[str, int]] = []

    def evaluate(out: Path, prompts: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append(modes(out))  # readable before anyone loads them
        return {}

    save_and_measure(pipe, tmp_path / "toy-sd", 0.0, evaluate, ToySDSettings())
    found = modes(tmp_path / "toy-sd")
    assert {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors"} <= set(found)  # fmt: skip
    assert found == dict.fromkeys(found, 0o644) and seen == [found]  # were 0o600


def test_a_toy_vlm_build_saves_readable_weights(tmp_path, umask):
    from mmalign.toy.models.vlm.build import build_toy_vlm
    from mmalign.toy.models.vlm.training import ToyVLMSettings

    settings = ToyVLMSettings(vision_steps=1, vision_batch=2, eval_n=2, checkpoint_every=1)
    build_toy_vlm(tmp_path / "toy-vlm", work_dir=tmp_path / "work", steps=1, batch_size=2,
                  progress=False, settings=settings)  # fmt: skip
    assert modes(tmp_path / "toy-vlm") == {"model.safetensors": 0o644}  # was 0o600
