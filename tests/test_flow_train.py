"""`mmalign train` on tiny SD3 and FLUX: LoRA saved for the stock loaders, cache, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusion_helpers import read_metrics, save_tiny, tiny_config
from flow_helpers import MAX_SEQUENCE, save_tiny_flow

from mmalign.config import ConfigError
from mmalign.diffusion.flow_recipe import FlowRecipe, diffusion_recipe
from mmalign.train.loop import train

SAMPLE = {"num_inference_steps": 3, "height": 32, "width": 32, "output_type": "pt",
          "max_sequence_length": MAX_SEQUENCE}  # fmt: skip


def _config(model: Path, out: Path, **diffusion):
    flow = {"resolution": 32, "max_sequence_length": MAX_SEQUENCE, "process": "flow", **diffusion}
    return tiny_config(
        model, out, diffusion=flow, objective=[{"loss": "dpo", "beta": 50.0}],
        train={"max_steps": 4, "learning_rate": 1e-2},
    )  # fmt: skip


def _train(cfg):
    made = []

    def make(c, accelerator):
        recipe = diffusion_recipe(c, accelerator)
        made.append(recipe)
        return recipe

    result = train(cfg, make)
    return result, made[0]


def _sample(pipe, guidance: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return pipe(["a red circle"], generator=gen, guidance_scale=guidance, **SAMPLE).images


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_trained_lora_loads_with_the_stock_pipeline(tmp_path, family):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    model = save_tiny_flow(tmp_path, family)
    extra = {"guidance": 3.5} if family == "flux" else {"sigma_sampling": "logit_normal"}
    cfg = _config(model, tmp_path / "out", **extra)
    cfg.lora.alpha = 8.0  # alpha != rank: the file must load at the trained scale alpha / rank
    result, recipe = _train(cfg)
    assert isinstance(recipe, FlowRecipe) and recipe.diffusion.family == family
    losses = [m["loss"] for m in read_metrics(result.output_dir)]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    cls = StableDiffusion3Pipeline if family == "sd3" else FluxPipeline
    guidance = 2.0 if family == "sd3" else 3.5
    base = cls.from_pretrained(model)
    base.set_progress_bar_config(disable=True)
    before = _sample(base, guidance)
    base.load_lora_weights(str(Path(result.saved["path"]).parent))  # the stock loader
    after = _sample(base, guidance)
    assert (after - before).abs().max() > 1e-3  # the LoRA changes the output
    recipe.diffusion.pipe.to("cpu")
    ours = _sample(recipe.diffusion.pipe, guidance)  # mmalign's trained pipeline, in memory
    torch.testing.assert_close(after, ours, atol=1e-5, rtol=0)


def test_cache_matches_encoding_every_step_and_reports_its_size(tmp_path, capsys):
    model = save_tiny_flow(tmp_path, "sd3")
    cache = tmp_path / "cache"
    cached, recipe = _train(_config(model, tmp_path / "a", precompute=True, cache_dir=str(cache)))
    assert "pre-encoding cache" in capsys.readouterr().out
    size = recipe.describe()["cache_mb"]
    assert size["text_mb"] > 0 and size["total_mb"] >= size["text_mb"] + size["latents_mb"] - 0.01
    from safetensors import safe_open

    with safe_open(str(next(cache.glob("shard-*.safetensors"))), framework="pt") as f:
        assert f.get_tensor("prompt_embeds").dtype == torch.float16  # T5 in half precision
    encoded, _ = _train(_config(model, tmp_path / "b"))
    a = [m["loss"] for m in read_metrics(cached.output_dir)]
    b = [m["loss"] for m in read_metrics(encoded.output_dir)]
    assert a == pytest.approx(b, abs=1e-5)


def test_sd3_without_t5_trains(tmp_path):
    from mmalign.diffusion import load_tuned
    from mmalign.diffusion.sample import generate

    model = save_tiny_flow(tmp_path, "sd3")
    result, recipe = _train(_config(model, tmp_path / "out", drop_t5=True))
    assert not recipe.diffusion.has_t5 and result.saved
    # reloaded, the run samples as it trained: without T5, at its own T5 length
    tuned = load_tuned(result.output_dir)
    assert tuned.pipe.text_encoder_3 is None
    assert tuned.pipe.mmalign_max_sequence_length == MAX_SEQUENCE
    recipe.diffusion.pipe.to("cpu")
    kw = {"seed": 0, "steps": 3, "guidance": 2.0, "batch_size": 2}
    ours = generate(recipe.diffusion.pipe, ["a red circle", "a blue square"], **kw)
    torch.testing.assert_close(generate(tuned.pipe, ["a red circle", "a blue square"], **kw), ours,
                               atol=1e-5, rtol=0)  # fmt: skip


def test_full_transformer_fine_tune(tmp_path):
    model = save_tiny_flow(tmp_path, "sd3")
    cfg = _config(model, tmp_path / "out")
    cfg.lora = None
    cfg.train.gradient_checkpointing = True
    result, recipe = _train(cfg)
    assert recipe.scorer.reference_model is not None
    assert (Path(result.saved["path"]) / "config.json").is_file()


# ------------------------------------------------------------------------------- bad input


def test_flow_recipe_given_a_ddpm_model(tmp_path):
    cfg = _config(save_tiny(tmp_path, "sd"), tmp_path / "out")
    with pytest.raises(ConfigError, match=r"diffusion.process: flow.*DDPM-family.*DDIMScheduler"):
        diffusion_recipe(cfg, None)
    cfg.diffusion.process = "auto"
    with pytest.raises(
        ConfigError, match=r"diffusion.max_sequence_length applies to flow-matching models"
    ):
        diffusion_recipe(cfg, None)  # a flow-only key on a DDPM model


def test_ddpm_recipe_given_a_flow_model(tmp_path):
    cfg = tiny_config(save_tiny_flow(tmp_path, "sd3"), tmp_path / "out",
                      diffusion={"process": "ddpm"})  # fmt: skip
    with pytest.raises(ConfigError, match=r"flow-matching.*FlowMatchEulerDiscreteScheduler"):
        diffusion_recipe(cfg, None)
    # the shipped DDPM recipes say so: pointed at a flow model they are refused, not run
    # as a flow recipe with a DDPM beta
    from mmalign.config import load_config
    from mmalign.train import Config

    flow = save_tiny_flow(tmp_path, "sd3")
    for recipe in ("sd15/dpo_lora", "sdxl/dpo_lora", "toy/dpo", "toy/mapo"):
        shipped = load_config(Config, f"configs/{recipe}.yaml", [f"model.name_or_path={flow}"])
        with pytest.raises(ConfigError, match=r"diffusion.process: ddpm.*flow-matching"):
            diffusion_recipe(shipped, None)


def test_flow_settings_that_would_go_unused_are_refused(tmp_path):
    from accelerate import Accelerator

    from mmalign.config import from_dict
    from mmalign.train.config import DiffusionConfig

    with pytest.raises(ConfigError, match=r"diffusion.mode_scale applies to sigma_sampling: mode"):
        from_dict(DiffusionConfig, {"mode_scale": 1.5}, "diffusion")
    with pytest.raises(ConfigError, match=r"diffusion.logit_std applies to .*logit_normal"):
        from_dict(DiffusionConfig, {"sigma_sampling": "uniform", "logit_std": 2.0}, "diffusion")
    from_dict(DiffusionConfig, {"sigma_sampling": "mode", "mode_scale": 1.0}, "diffusion")
    cfg = _config(save_tiny_flow(tmp_path, "sd3"), tmp_path / "out", guidance=3.5)
    with pytest.raises(ConfigError, match=r"diffusion.guidance: 3.5, but .* embeds no guidance"):
        diffusion_recipe(cfg, Accelerator(cpu=True))


def test_flux_without_guidance(tmp_path):
    from accelerate import Accelerator

    cfg = _config(save_tiny_flow(tmp_path, "flux"), tmp_path / "out")
    with pytest.raises(ConfigError, match=r"diffusion.guidance.*3.5"):
        diffusion_recipe(cfg, Accelerator(cpu=True))


def test_missing_lora_target_names_what_the_transformer_has(tmp_path):
    from accelerate import Accelerator

    cfg = _config(save_tiny_flow(tmp_path, "sd3"), tmp_path / "out")
    cfg.lora.target_modules = ["attn.to_qq"]
    with pytest.raises(ConfigError, match=r"'attn.to_qq'.*SD3Transformer2DModel.*attn.to_q"):
        diffusion_recipe(cfg, Accelerator(cpu=True))
    # a layer that exists but is not one LoRA wraps: named here, not a traceback from peft
    cfg.lora.target_modules = ["norm1"]
    with pytest.raises(ConfigError, match=r"'norm1' names AdaLayerNormZero layers .* cannot wrap"):
        diffusion_recipe(cfg, Accelerator(cpu=True))


def test_reloaded_run_reproduces_samples_and_mmalign_sample_runs(tmp_path):
    from mmalign.cli import main
    from mmalign.diffusion import load_tuned
    from mmalign.diffusion.sample import generate, sampling_defaults

    model = save_tiny_flow(tmp_path, "sd3")
    result, recipe = _train(_config(model, tmp_path / "out"))
    tuned = load_tuned(result.output_dir)  # base and LoRA from mmalign_run.json
    assert tuned.family == "sd3" and sampling_defaults(tuned, None, None) == (28, 7.0)
    recipe.diffusion.pipe.to("cpu")
    kw = {"seed": 0, "steps": 3, "guidance": 2.0, "batch_size": 2}
    ours = generate(recipe.diffusion.pipe, ["a red circle", "a blue square"], **kw)
    reloaded = generate(tuned.pipe, ["a red circle", "a blue square"], **kw)
    torch.testing.assert_close(reloaded, ours, atol=1e-5, rtol=0)
    out = tmp_path / "grid.png"
    code = main(["sample", str(result.output_dir), "--prompt", "a red circle", "--steps", "2",
                 "--out", str(out)])  # fmt: skip
    assert code == 0 and out.is_file()


def test_mmalign_train_runs_a_flow_recipe(tmp_path):
    import json

    from mmalign.cli import main
    from mmalign.config import dump_yaml

    cfg = _config(save_tiny_flow(tmp_path, "flux"), tmp_path / "out", guidance=3.5)
    path = tmp_path / "flux.yaml"
    path.write_text(dump_yaml(cfg))
    assert main(["train", str(path)]) == 0
    run = json.loads((tmp_path / "out" / "mmalign_run.json").read_text())
    assert run["process"] == "flow" and run["family"] == "flux"
    assert run["sigma"]["guidance"] == 3.5 and run["final"]["kind"] == "lora"


def test_two_cpu_processes_match_one(tmp_path):
    """`accelerate launch` (2 CPU processes, DDP) trains a flow recipe like one process at the
    same global batch; the tolerance is tests/test_accelerate.py's (float order, not shards)."""
    import os
    import shutil
    import subprocess
    import sys

    from mmalign.config import dump_yaml

    model = save_tiny_flow(tmp_path, "sd3")
    single = tmp_path / "single"
    cfg = _config(model, single)
    cfg.train.batch_size, cfg.train.max_steps = 4, 3
    _train(cfg)
    multi = _config(model, tmp_path / "multi")
    multi.train.batch_size, multi.train.max_steps = 2, 3  # 2 processes x 2 pairs
    config_file = tmp_path / "multi.yaml"
    config_file.write_text(dump_yaml(multi))
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert launcher is not None
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    proc = subprocess.run(
        [launcher, "launch", "--num_processes", "2", "--multi_gpu", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "mmalign.cli", "train", str(config_file)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_metrics(single), read_metrics(tmp_path / "multi")
    assert [m["step"] for m in a] == [m["step"] for m in b] == [1, 2, 3]
    for x, y in zip(a, b, strict=True):
        assert abs(x["loss"] - y["loss"]) <= 2e-4, (x["step"], x["loss"], y["loss"])
    assert max(m["loss"] for m in a) - min(m["loss"] for m in a) > 2e-3  # training moved it


def test_flow_dpo_fits_its_training_pairs(tmp_path):
    """40 LoRA steps on 16 toy pairs lower the flow DPO loss (measured 0.66 -> 0.40 on tiny SD3,
    mean of the first vs the last 10 steps): the scores carry a learnable preference."""
    cfg = _config(save_tiny_flow(tmp_path, "sd3"), tmp_path / "out", precompute=True,
                  cache_dir=str(tmp_path / "cache"), caption_dropout=0.0)  # fmt: skip
    cfg.train.max_steps, cfg.objective = 40, [{"loss": "dpo", "beta": 500.0}]
    result, _ = _train(cfg)
    losses = [m["loss"] for m in read_metrics(result.output_dir)]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.1, (first, last)


def test_implicit_reward_accuracy_of_a_flow_run(tmp_path):
    """`score_pairs` / `mmalign eval accuracy --model RUN` scores a flow run with the flow scorer
    and the run's settings: the trained LoRA against its adapters-off reference moves the
    margins; the base against itself (a frozen-copy reference) leaves them at exactly 0."""
    from mmalign.data.pickapic import write_pickapic
    from mmalign.diffusion.data import open_pairs
    from mmalign.eval.implicit import implicit_accuracy

    model = save_tiny_flow(tmp_path, "sd3")
    cfg = _config(model, tmp_path / "run")
    result, _ = _train(cfg)
    rows, _ = open_pairs("toy:style", "train", toy_options=dict(cfg.data.toy))
    write_pickapic([dict(r) for r in rows], tmp_path / "pp", "train")
    kw = {"draws": 2, "device": "cpu", "pickapic_root": str(tmp_path / "pp")}
    moved = implicit_accuracy(str(result.output_dir), "pickapic:train", **kw)
    assert moved["pairs"] == 16 and moved["mean_margin"] != 0.0
    still = implicit_accuracy(str(model), "pickapic:train", base=str(model), **kw)
    assert still["mean_margin"] == 0.0 and still["implicit_accuracy"] == 0.5


def test_ddpm_only_recipes_refuse_a_flow_model(tmp_path):
    """PPD (and any caller of DiffusionRecipe directly) names the problem for SD3 / FLUX."""
    from accelerate import Accelerator

    from mmalign.diffusion.recipe import DiffusionRecipe

    cfg = tiny_config(save_tiny_flow(tmp_path, "sd3"), tmp_path / "out")
    with pytest.raises(ConfigError, match=r"flow-matching pipeline \(sd3\); DiffusionRecipe"):
        DiffusionRecipe(cfg, Accelerator(cpu=True))
