"""The two sides of `benchmarks/diffusion_vs_diffusers.py`: the inputs both train on (a saved
tiny pipeline, Pick-a-Pic-format parquet), and the child process that runs diffusers' script or
`mmalign train` and stamps every optimizer step. That file's docstring says what is measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LR, WEIGHT_DECAY, BETA_DPO = 1e-5, 1e-2, 2500.0  # the script's beta_dpo default
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]


# ------------------------------------------------------------------------------ inputs


def wide_sd_pipeline(seed: int = 0):
    """A random SD1.5-layout pipeline for GPU runs at 512 px: an 8x VAE (64x64 latents, as
    SD1.5) and a UNet that is shallow but wide enough that a GPU step is not launch-bound."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mmalign.diffusion.load import _scheduler, _toy_tokenizer

    tokenizer = _toy_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(128, 256, 256), layers_per_block=1, sample_size=64,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=256, attention_head_dim=8, norm_num_groups=32,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(32, 64, 64, 64), latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
    )  # fmt: skip
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512,
            num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )  # fmt: skip
    return StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer,
        scheduler=_scheduler("epsilon"), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip


def build_inputs(work: Path, model: str, pairs: int, resolutions: list[int]) -> dict[str, Any]:
    """The saved pipeline and one Pick-a-Pic-format parquet folder per resolution, with images
    wider and taller than the resolution (3:2.5), so both sides resize and crop."""
    import numpy as np
    from PIL import Image

    from mmalign.data.pickapic import write_pickapic
    from mmalign.diffusion import tiny_sd_pipeline
    from mmalign.toy.world import sample_prompts

    pipe_dir = work / f"pipe-{model}"
    if not (pipe_dir / "model_index.json").is_file():
        pipe = wide_sd_pipeline() if model == "wide" else tiny_sd_pipeline(seed=0)
        pipe.save_pretrained(pipe_dir)
    data = {}
    rng = np.random.default_rng(0)
    # The toy world's prompts fit the tiny pipelines' tokenizer untruncated.
    prompts = [p.text for p in sample_prompts(pairs, "train", 0)]
    for r in resolutions:
        folder = work / f"pickapic-{r}"
        if not any(folder.glob("train-*.parquet")):
            w, h = r * 3 // 2, r * 5 // 4

            def image(w: int = w, h: int = h) -> Image.Image:
                # Smooth random colour fields: JPEG-decoded like photos, not like noise.
                small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
                return Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)

            rows = [{"prompt": p, "chosen": image(), "rejected": image()} for p in prompts]
            write_pickapic(rows, folder, "train", overwrite=True)
        data[str(r)] = str(folder)
    return {"pipe": str(pipe_dir), "data": data}


# ------------------------------------------------------------------------------ the child


class StepClock:
    """Wall and CPU stamps after every optimizer step, whichever code calls `.step()`;
    optionally a cProfile of the timed steps only."""

    def __init__(self, warmup: int, profile: str | None, cuda: bool):
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.warmup, self.cuda = warmup, cuda
        self.profile_path = profile
        self.profiler: Any = None

    def __call__(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())
        if self.profile_path and len(self.wall) == self.warmup:
            import cProfile

            self.profiler = cProfile.Profile()
            self.profiler.enable()

    def finish(self) -> dict[str, Any]:
        if self.profiler is not None:
            self.profiler.disable()
            self.profiler.dump_stats(self.profile_path)
        gaps = [b - a for a, b in zip(self.wall, self.wall[1:], strict=False)]
        cpu = [b - a for a, b in zip(self.cpu, self.cpu[1:], strict=False)]
        timed = slice(self.warmup - 1, None)  # gap k ends at step k+2 (1-based)
        return {"step_times": gaps[timed], "cpu_times": cpu[timed], "steps_seen": len(self.wall)}


def _peer(args: argparse.Namespace, inputs: dict[str, Any], out_dir: str) -> None:
    import runpy

    try:
        import wandb  # noqa: F401
    except ImportError:  # the script imports it at the top, uses it only for validation
        import importlib.machinery
        import types

        # The libraries ask whether wandb is installed when they are imported: import them
        # first, so they keep the true answer (no), and then put the stand-in in place.
        import accelerate  # noqa: F401
        import diffusers  # noqa: F401
        import transformers  # noqa: F401

        stub = types.ModuleType("wandb")
        stub.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
        sys.modules["wandb"] = stub
    argv = [
        args.peer_script,
        "--pretrained_model_name_or_path", inputs["pipe"],
        "--dataset_name", inputs["data"][str(args.resolution)], "--dataset_split_name", "train",
        "--resolution", str(args.resolution), "--train_batch_size", str(args.batch),
        "--rank", str(args.rank), "--max_train_steps", str(args.warmup + args.steps),
        "--checkpointing_steps", "1000000", "--learning_rate", str(LR),
        "--adam_weight_decay", str(WEIGHT_DECAY), "--max_grad_norm", "1.0",
        "--lr_scheduler", "constant", "--lr_warmup_steps", "0", "--seed", "0",
        "--beta_dpo", str(int(BETA_DPO)), "--output_dir", out_dir,
        "--mixed_precision", "bf16" if args.device == "cuda" else "no",
        "--dataloader_num_workers", "0",
    ]  # fmt: skip
    sys.argv = argv
    runpy.run_path(args.peer_script, run_name="__main__")


def _mmalign(args: argparse.Namespace, inputs: dict[str, Any], out_dir: str) -> None:
    import dataclasses

    from mmalign.config import from_dict
    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.train import Config
    from mmalign.train.config import DiffusionConfig
    from mmalign.train.loop import train

    diffusion: dict[str, Any] = {
        "resolution": args.resolution,
        "caption_dropout": 0.0,
        "precompute": args.side.startswith("mmalign-precompute"),
        "cache_dir": str(Path(out_dir) / "cache"),
    }
    if args.side.endswith("-compile"):
        diffusion["compile"] = True
    # The script's data: bilinear resize and random flips, where this mmalign can do them.
    known = {f.name for f in dataclasses.fields(DiffusionConfig)}
    diffusion.update({k: v for k, v in (("resize_filter", "bilinear"), ("random_flip", True))
                      if k in known})  # fmt: skip
    raw = {
        "model": {"name_or_path": inputs["pipe"]},
        "data": {"path": inputs["data"][str(args.resolution)], "split": "train"},
        # mmalign's dpo beta multiplies the same mse differences the script's beta_dpo does.
        "objective": [{"loss": "dpo", "beta": BETA_DPO}],
        "lora": {"rank": args.rank, "target_modules": TARGET_MODULES},
        "train": {
            "max_steps": args.warmup + args.steps, "batch_size": args.batch,
            "learning_rate": LR, "weight_decay": WEIGHT_DECAY, "max_grad_norm": 1.0,
            "lr_scheduler": "constant", "warmup_steps": 0, "seed": 0,
            "mixed_precision": "bf16" if args.device == "cuda" else "no",
            "checkpoint_every": 1_000_000, "trackers": ["tensorboard"],
        },
        "diffusion": diffusion,
        "validation": {"enabled": False},
        "output_dir": str(Path(out_dir) / "run"),
    }  # fmt: skip
    train(from_dict(Config, raw), DiffusionRecipe)


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from mmalign.bench import peak_rss_mb

    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    inputs = json.loads(args.inputs)
    clock = StepClock(args.warmup, args.profile, cuda)
    handle = register_optimizer_step_post_hook(clock)
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.side}-") as out_dir:
        (_peer if args.side == "peer" else _mmalign)(args, inputs, out_dir)
    handle.remove()
    timed = clock.finish()
    if len(timed["step_times"]) != args.steps:
        raise RuntimeError(f"{args.side}: saw {timed['steps_seen']} optimizer steps")
    return {
        "side": args.side,
        "resolution": args.resolution,
        "s_per_step": statistics.median(timed["step_times"]),
        "cpu_s_per_step": statistics.median(timed["cpu_times"]),
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb(),
        "peak_rss_mb": peak_rss_mb(),
        **timed,
    }
