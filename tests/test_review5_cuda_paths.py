"""Code paths that only a CUDA device exercises, marked `gpu` (skipped without one).

Each test is small (tiny random models, a few steps) and checks one thing the CPU suite
cannot: a checkpoint's optimizer state back on the GPU, SDXL inversion with the text
embeddings on the GPU, half-precision sampling with the float32 VAE, fp16 / bf16 mixed
precision training with its resume, shared-prompt packing under CUDA's SDPA in bfloat16, the
flow recipe in bfloat16 and `diffusion.compile`. `MMALIGN_REVIEW5_DEVICE=cpu` runs them on the
CPU instead (fp16 cases skipped there), to check the tests themselves.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from diffusion_helpers import read_metrics, save_tiny, tiny_config
from PIL import Image

DEVICE = os.environ.get("MMALIGN_REVIEW5_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu] if DEVICE == "cuda" else []
PRECISIONS = ["fp16", "bf16"] if DEVICE == "cuda" else ["bf16"]


def test_checkpoint_optimizer_state_returns_to_the_gpu(tmp_path):
    from mmalign.train.checkpoint import load_checkpoint, save_checkpoint

    def made(seed: int):
        torch.manual_seed(seed)
        model = torch.nn.Linear(8, 4).to(DEVICE)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        model(torch.randn(2, 8, device=DEVICE)).sum().backward()
        opt.step()
        return model, opt, sched

    model, opt, sched = made(0)
    save_checkpoint(tmp_path, 1, model, opt, sched)
    fresh, fresh_opt, fresh_sched = made(1)
    load_checkpoint(tmp_path / "checkpoints" / "checkpoint-1", fresh, fresh_opt, fresh_sched)
    for p in fresh.parameters():
        state = fresh_opt.state[p]
        assert state["exp_avg"].device == p.device and state["exp_avg_sq"].device == p.device
    fresh(torch.randn(2, 8, device=DEVICE)).sum().backward()
    fresh_opt.step()  # the resumed optimizer steps on the GPU


def _renders(n: int) -> list[Image.Image]:
    gen = torch.Generator().manual_seed(0)
    pixels = (torch.rand(n, 32, 32, 3, generator=gen) * 255).byte().numpy()
    return [Image.fromarray(p) for p in pixels]


def test_sdxl_inversion_on_the_gpu_matches_the_cpu():
    from mmalign.diffusion import DiffusionModel, tiny_sdxl_pipeline
    from mmalign.diffusion.renoise import invert, reconstruct

    images, prompts = _renders(2), ["a red circle", "a blue square"]
    cpu = invert(DiffusionModel(tiny_sdxl_pipeline(0), "sdxl", ""), images, prompts, 3, 1, (0, 2))
    model = DiffusionModel(tiny_sdxl_pipeline(0).to(DEVICE), "sdxl", "")
    gpu = invert(model, images, prompts, 3, 1, (0, 2))
    assert gpu.noise.device.type == torch.device(DEVICE).type
    assert torch.allclose(gpu.noise.cpu(), cpu.noise, atol=1e-3)
    assert torch.isfinite(reconstruct(model, gpu, 3)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_sampling_with_the_float32_vae(dtype):
    from mmalign.diffusion import tiny_sdxl_pipeline
    from mmalign.diffusion.sample import generate

    if DEVICE == "cpu" and dtype == torch.float16:
        pytest.skip("fp16 convolutions: CUDA only")
    pipe = tiny_sdxl_pipeline(0).to(DEVICE)
    for module in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2):
        module.to(dtype)
    images = generate(pipe, ["a red circle"] * 2, seed=0, steps=3, guidance=5.0, batch_size=2)
    assert images.device.type == "cpu" and torch.isfinite(images).all()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_mixed_precision_training_resumes_exactly(tmp_path, precision):
    """Six steps with a checkpoint at 3; steps 4-6 again from it (the fp16 grad scaler's state
    and the CUDA random states come back with it)."""
    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.train.loop import train

    model = save_tiny(tmp_path, "sdxl")
    full, part = tmp_path / "full", tmp_path / "part"
    train(tiny_config(model, full, train={"mixed_precision": precision}), DiffusionRecipe)
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "checkpoint-3", part / "checkpoints" / "checkpoint-3")
    resumed = tiny_config(model, part, train={"mixed_precision": precision,
                                              "resume_from": "latest"})  # fmt: skip
    train(resumed, DiffusionRecipe)
    a = {m["step"]: m["loss"] for m in read_metrics(full)}
    b = {m["step"]: m["loss"] for m in read_metrics(part)}
    assert sorted(b) == [4, 5, 6]
    for step in (4, 5, 6):
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])


def test_packed_vlm_scores_under_sdpa_in_bfloat16(tmp_path):
    from vlm_helpers import pair_rows, tiny_vlms

    from mmalign.vlm.collate import PairCollator
    from mmalign.vlm.load import load_vlm
    from mmalign.vlm.scorer import VLMPairScorer

    vlm = load_vlm(tiny_vlms(tmp_path)["llava"], dtype="bfloat16")
    vlm.model.set_attn_implementation("sdpa")
    model = vlm.model.to(DEVICE)
    batch = PairCollator(vlm.processor, ("main", "blind"))(pair_rows()).to(DEVICE)
    with torch.no_grad():
        packed = VLMPairScorer(model, "none", pack=True)(model, batch, with_reference=False)
        plain = VLMPairScorer(model, "none", pack=False)(model, batch, with_reference=False)
    for name, scores in packed.items():
        for side in ("chosen", "rejected"):
            a, b = getattr(scores, side), getattr(plain[name], side)
            assert torch.isfinite(a).all() and torch.allclose(a, b, rtol=2e-2, atol=0.5), side


def test_flow_recipe_trains_in_bfloat16(tmp_path):
    from flow_helpers import MAX_SEQUENCE, save_tiny_flow

    from mmalign.diffusion.flow_recipe import diffusion_recipe
    from mmalign.train.loop import train

    for family in ("sd3", "flux"):
        model = save_tiny_flow(tmp_path, family)
        diffusion = {"resolution": 32, "max_sequence_length": MAX_SEQUENCE, "process": "flow",
                     **({"guidance": 3.5} if family == "flux" else {})}  # fmt: skip
        cfg = tiny_config(model, tmp_path / family, diffusion=diffusion,
                          objective=[{"loss": "dpo", "beta": 50.0}],
                          train={"max_steps": 3, "mixed_precision": "bf16"})  # fmt: skip
        cfg.model.dtype = "bfloat16"  # transformer and text encoders; VAE and LoRA float32
        result = train(cfg, diffusion_recipe)
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in read_metrics(result.output_dir))


def test_compiled_denoiser_trains(tmp_path):
    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.train.loop import train

    model = save_tiny(tmp_path, "sd")
    cfg = tiny_config(model, tmp_path / "out", diffusion={"compile": True},
                      train={"max_steps": 3, "mixed_precision": "bf16"})  # fmt: skip
    result = train(cfg, DiffusionRecipe)
    assert len(read_metrics(result.output_dir)) == 3
