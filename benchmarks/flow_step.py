"""The SD3 and FLUX rows of `benchmarks/diffusion_step.py`: one flow-matching preference step.

`diffusion_step.py --families sd3,flux` runs these in its child processes (same timing, same
peak-memory reading, same ratio table). The models are the random tiny pipelines of
`mmalign.diffusion.flow_tiny` (FLUX with its guidance embedding, guidance 3.5).

    ours-{dpo,mapo}-{lora,full}-{encode,cache}   `FlowPairScorer` + `Objective`: chosen and
        rejected in one forward over [chosen; rejected]; the DPO reference is the transformer
        with its adapters off (LoRA) or one frozen copy (full); MaPO runs no reference.
    naive-dpo-{lora,full}-encode   flow DPO written the way flow_grpo's `train_sd3_dpo.py`
        does it: a second LoRA adapter ("ref", zero-initialised like the learner's B) as the
        reference, switched with `set_adapter`, and chosen and rejected in separate forwards
        (policy chosen, policy rejected, reference chosen, reference rejected); a frozen copy
        for the full fine-tune. The encoders run every step; same sigma and noise math.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from mmalign.bench import offload_encoders

FLOW_FAMILIES = ("sd3", "flux")
FLOW_BETA = 50.0  # flow_grpo's SD3.5-M beta 100 in mmalign's scale; no effect on timing
MAX_SEQUENCE = 32  # T5 tokens of the tiny pipelines


def supports(variant: Any) -> bool:
    """Flow rows: DPO and MaPO (ours), DPO (naive); no dense weighting, no SmPO trajectory."""
    return not getattr(variant, "dense", False) and variant.loss in ("dpo", "mapo")


def _model(family: str, device: Any) -> Any:
    from mmalign.diffusion.flow_load import flow_model
    from mmalign.diffusion.flow_tiny import tiny_flux_pipeline, tiny_sd3_pipeline

    pipe = (tiny_sd3_pipeline if family == "sd3" else tiny_flux_pipeline)(seed=0)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return flow_model(pipe, f"tiny-{family}")


def _ours(model: Any, variant: Any, pixels: dict[str, Any], rank: int, device: Any):
    import torch

    from mmalign.diffusion.flow import FlowPairScorer, FlowSettings
    from mmalign.diffusion.flow_encode import FlowEncoder
    from mmalign.diffusion.flow_lora import add_flow_lora
    from mmalign.losses import Objective
    from mmalign.train import LoraConfig

    net = model.transformer
    if variant.train == "lora":
        add_flow_lora(net, model.family, LoraConfig(rank=rank))
    else:
        net.requires_grad_(True)
    spec = {"loss": "dpo", "beta": FLOW_BETA} if variant.loss == "dpo" else {"loss": "mapo"}
    objective = Objective.from_config([spec])
    encoder = FlowEncoder(model, max_sequence_length=MAX_SEQUENCE)
    scorer = FlowPairScorer(
        model, encoder.empty(), settings=FlowSettings(guidance=3.5),
        reference=("adapters" if variant.train == "lora" else "copy")
        if objective.needs_reference else "none",
    )  # fmt: skip
    if scorer.reference_model is not None:
        scorer.reference_model.to(device)
    b = len(pixels["prompt"])
    cached = None
    if variant.cache:
        cached = {k: v.to(device) for k, v in encoder.encode(pixels, list(range(b))).items()}
        offload_encoders(model.pipe, device)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5)
    net.train()

    def step(i: int) -> float:
        if cached is None:
            encoded = encoder.encode(pixels, list(range(i * b, (i + 1) * b)))
            inputs = {k: v.to(device) for k, v in encoded.items()}
        else:
            inputs = cached
        seeds = torch.arange(b) + i * b
        scores = scorer(net, inputs, seeds, with_reference=objective.needs_reference, base=net)
        loss = objective(scores).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, net


def _naive(model: Any, variant: Any, pixels: dict[str, Any], rank: int, device: Any):
    """flow_grpo's shape of the step (their code is not copied; the math is the same)."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig as PeftLoraConfig

    from mmalign.diffusion.flow import image_ids, pack
    from mmalign.diffusion.flow_lora import FLOW_TARGETS

    pipe, family = model.pipe, model.family
    net = pipe.transformer
    ref_net = None
    if variant.train == "lora":
        net.requires_grad_(False)
        for name in ("learner", "ref"):
            net.add_adapter(PeftLoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                           target_modules=FLOW_TARGETS[family]),
                            adapter_name=name)  # fmt: skip
        net.set_adapter("learner")
    else:
        ref_net = copy.deepcopy(net).requires_grad_(False).eval()
        net.requires_grad_(True)
    params = [p for n, p in net.named_parameters() if p.requires_grad and "ref" not in n]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    vae = pipe.vae
    b = len(pixels["prompt"])
    shift_scale = float(vae.config.shift_factor or 0.0), float(vae.config.scaling_factor)
    net.train()

    def encode_text(prompts: list[str]):
        if family == "sd3":
            out = pipe.encode_prompt(prompts, None, None, device=device,
                                     do_classifier_free_guidance=False,
                                     max_sequence_length=MAX_SEQUENCE)  # fmt: skip
            return out[0], out[2]
        out = pipe.encode_prompt(prompts, None, device=device, max_sequence_length=MAX_SEQUENCE)
        return out[0], out[1]

    def forward(module, x_t, sigma, embeds, pooled):
        if family == "sd3":
            return module(hidden_states=x_t, encoder_hidden_states=embeds,
                          pooled_projections=pooled, timestep=sigma * 1000).sample  # fmt: skip
        n, _, h, w = x_t.shape
        return module(hidden_states=pack(x_t), encoder_hidden_states=embeds,
                      pooled_projections=pooled, timestep=sigma,
                      img_ids=image_ids(h, w, x_t.device, x_t.dtype),
                      txt_ids=torch.zeros(embeds.shape[1], 3, device=x_t.device),
                      guidance=torch.full((n,), 3.5, device=x_t.device)).sample  # fmt: skip

    def step(i: int) -> float:
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            px = pixels["pixels"].to(device)
            flat = torch.cat([px[:, 0], px[:, 1]])
            latents = vae.encode(flat).latent_dist.sample()
            latents = (latents - shift_scale[0]) * shift_scale[1]
            embeds, pooled = encode_text(list(pixels["prompt"]))
        lat_c, lat_r = latents[:b], latents[b:]
        noise = torch.randn(lat_c.shape, generator=gen).to(device)
        u = torch.sigmoid(torch.randn(b, generator=gen)).to(device)  # logit-normal(0, 1)
        sigma = (3.0 * u / (1 + 2.0 * u)) if family == "sd3" else u
        s = sigma.view(-1, 1, 1, 1)

        def mse(module, x0):
            pred = forward(module, (1 - s) * x0 + s * noise, sigma, embeds, pooled)
            target = noise - x0
            if family == "flux":
                target = pack(target)
            return (pred.float() - target.float()).pow(2).flatten(1).mean(1)

        mse_c, mse_r = mse(net, lat_c), mse(net, lat_r)
        with torch.no_grad():
            if ref_net is None:
                net.set_adapter("ref")
                ref_c, ref_r = mse(net, lat_c), mse(net, lat_r)
                net.set_adapter("learner")
            else:
                ref_c, ref_r = mse(ref_net, lat_c), mse(ref_net, lat_r)
        inside = -0.5 * (2 * FLOW_BETA) * ((mse_c - ref_c) - (mse_r - ref_r))
        loss = -F.logsigmoid(inside).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, net


def flow_child(
    args: Any, variant: Any, pixels: dict[str, Any], device: Any
) -> tuple[Callable[[int], float], Any]:
    """Build one flow variant on a fresh tiny pipeline: (step function, trained module)."""
    import torch

    if not supports(variant):
        raise SystemExit(f"{variant.name} has no {args.family} row (flow: dpo and mapo only)")
    model = _model(args.family, device)
    torch.manual_seed(0)  # the LoRA initialisation
    build = _ours if variant.impl == "ours" else _naive
    return build(model, variant, pixels, args.rank, device)


def time_steps(step: Callable[[int], float], warmup: int, steps: int, device: Any, sync: Any):
    times: list[float] = []
    loss = float("nan")
    for i in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        loss = step(i)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times, loss
