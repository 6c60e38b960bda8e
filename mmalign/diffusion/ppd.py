"""PPD's user branch: decoupled cross-attention on a user embedding (Dang et al. CVPR 2025).

PPD conditions the denoiser on a user embedding through IP-Adapter's decoupled cross-attention
(Ye et al. 2023): every cross-attention layer gets new key/value projections `to_k_ip`,
`to_v_ip` for a few user tokens, and the embedding is projected into those tokens (`proj`:
Linear(D, 4*C), then LayerNorm). The layer's output is `attn(q, K_text, V_text) +
scale * attn(q, K_user, V_user)`; only the new weights train.

This module builds the branch with diffusers' own IP-Adapter machinery: the branch is created
through `UNet2DConditionModel._load_ip_adapter_weights` from a state dict in the IP-Adapter
file layout (`image_proj.proj.*`, `ip_adapter.<k>.to_{k,v}_ip.weight`), so the processors are
diffusers' `IPAdapterAttnProcessor2_0` and the projection is diffusers' `ImageProjection`. A
saved adapter is that same layout as one safetensors file, which a stock pipeline loads with

    pipe.load_ip_adapter(folder, subfolder="", weight_name="ppd_adapter.safetensors",
                         image_encoder_folder=None)

and the user embedding goes in as `ip_adapter_image_embeds=[torch.stack([zeros, e])[:, None]]`
(negative then positive, shape [2, 1, D], when classifier-free guidance is on).

Departure: diffusers' loader fixes the plain IP-Adapter projection at 4 tokens, so PPD here has
4 user tokens (the loader would misread any other count). The branch is initialised as
IP-Adapter's: `to_k_ip`/`to_v_ip` copy the text `to_k`/`to_v`; `proj` is random (seeded).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..config import InputError

USER_TOKENS = 4  # fixed by diffusers' loader for the plain IP-Adapter projection
ADAPTER_FILE = "ppd_adapter.safetensors"


def _cross_attention_names(unet: Any) -> list[str]:
    """Processor names of the cross-attention layers, in diffusers' loader order."""
    return [n for n in unet.attn_processors if not n.endswith("attn1.processor")]


def _attention_module(unet: Any, processor_name: str) -> Any:
    return unet.get_submodule(processor_name.removesuffix(".processor"))


def init_state_dict(
    unet: Any, embed_dim: int, *, seed: int = 0, zero_values: bool = False
) -> dict[str, dict[str, Any]]:
    """A fresh branch in the IP-Adapter layout: `to_k_ip`/`to_v_ip` copy the text projections;
    `proj` is a seeded Linear(embed_dim, USER_TOKENS * C) with a unit LayerNorm.

    zero_values: `to_v_ip` starts at zero instead, so the branch adds nothing at step 0 and the
    policy starts equal to its reference (the branch off), as LoRA's zero B does for DPO."""
    if embed_dim < 1:
        raise InputError(f"the user embedding width must be positive, got {embed_dim}")
    cross = int(unet.config.cross_attention_dim)
    gen = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(embed_dim, USER_TOKENS * cross)
    with torch.no_grad():
        bound = 1 / embed_dim**0.5
        linear.weight.copy_(torch.rand(linear.weight.shape, generator=gen) * 2 * bound - bound)
        linear.bias.copy_(torch.rand(linear.bias.shape, generator=gen) * 2 * bound - bound)
    image_proj = {
        "proj.weight": linear.weight.detach().clone(),
        "proj.bias": linear.bias.detach().clone(),
        "norm.weight": torch.ones(cross),
        "norm.bias": torch.zeros(cross),
    }
    ip_adapter = {}
    for k, name in enumerate(_cross_attention_names(unet)):
        attn = _attention_module(unet, name)
        ip_adapter[f"{2 * k + 1}.to_k_ip.weight"] = attn.to_k.weight.detach().float().clone()
        v = attn.to_v.weight.detach().float().clone()
        ip_adapter[f"{2 * k + 1}.to_v_ip.weight"] = torch.zeros_like(v) if zero_values else v
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def install(unet: Any, state: dict[str, dict[str, Any]]) -> None:
    """Put a branch (IP-Adapter layout) into `unet` through diffusers' own loader."""
    unet._load_ip_adapter_weights([state], low_cpu_mem_usage=False)


def add_user_branch(
    unet: Any, embed_dim: int, *, seed: int = 0, zero_values: bool = False
) -> list[torch.nn.Parameter]:
    """Add a fresh user branch to `unet`; freeze everything else; return the branch's
    parameters (the only ones that train)."""
    install(unet, init_state_dict(unet, embed_dim, seed=seed, zero_values=zero_values))
    unet.requires_grad_(False)
    params = branch_parameters(unet)
    for p in params:
        p.requires_grad_(True)
    return params


def has_user_branch(unet: Any) -> bool:
    return getattr(unet.config, "encoder_hid_dim_type", None) == "ip_image_proj"


def branch_parameters(unet: Any) -> list[torch.nn.Parameter]:
    """The branch's weights: the projection and every `to_k_ip`/`to_v_ip`."""
    if not has_user_branch(unet):
        raise InputError("this UNet has no PPD user branch (add_user_branch or load_adapter)")
    params = list(unet.encoder_hid_proj.parameters())
    for name in _cross_attention_names(unet):
        params += list(unet.attn_processors[name].parameters())
    return params


def embed_width(unet: Any) -> int:
    """The user-embedding width D the branch takes."""
    if not has_user_branch(unet):
        raise InputError("this UNet has no PPD user branch (add_user_branch or load_adapter)")
    return int(unet.encoder_hid_proj.image_projection_layers[0].image_embeds.in_features)


def set_user_scale(unet: Any, scale: float) -> None:
    """The weight of the user branch in every cross-attention layer (0: off, exactly the base
    UNet, since diffusers' processor then skips the branch)."""
    for name in _cross_attention_names(unet):
        unet.attn_processors[name].scale = [float(scale)]


def user_scale(unet: Any) -> float:
    """The branch's weight now (`set_user_scale`; 1 as trained)."""
    return float(unet.attn_processors[_cross_attention_names(unet)[0]].scale[0])


@contextlib.contextmanager
def user_branch_off(unet: Any) -> Iterator[Any]:
    """The base denoiser: PPD's reference (the same UNet with the user branch off)."""
    name = _cross_attention_names(unet)[0]
    before = list(unet.attn_processors[name].scale)
    set_user_scale(unet, 0.0)
    try:
        yield unet
    finally:
        set_user_scale(unet, before[0])


def check_embedding(unet: Any, embedding: torch.Tensor) -> torch.Tensor:
    """`embedding` as [B, D] for this branch; a clear error for the wrong width."""
    if embedding.ndim == 1:
        embedding = embedding[None]
    if embedding.ndim != 2:
        raise InputError(f"a user embedding is [D] or [B, D], got shape {tuple(embedding.shape)}")
    width = embed_width(unet)
    if embedding.shape[1] != width:
        raise InputError(
            f"user embedding has width {embedding.shape[1]} but the PPD adapter takes {width}: "
            "compute the embeddings with the encoder the adapter was trained on"
        )
    return embedding


def user_kwargs(unet: Any, embedding: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """`added_cond_kwargs` entry for a UNet call: `{"image_embeds": [e[:, None, :]]}`."""
    e = check_embedding(unet, embedding)
    return {"image_embeds": [e[:, None, :]]}


def pipeline_guides(pipe: Any, guidance_scale: float | None = None) -> bool:
    """Whether `pipe(..., guidance_scale=g)` runs classifier-free guidance (and so splits
    `ip_adapter_image_embeds` into [negative; positive]): the pipeline's own
    `do_classifier_free_guidance` for g (None: its own default `guidance_scale`). So a base
    whose guidance is embedded or distilled (a UNet with `time_cond_proj_dim`; an LCM pipeline)
    never guides, whatever g, as the stock pipeline decides."""
    import inspect

    if guidance_scale is None:
        param = inspect.signature(pipe.__call__).parameters.get("guidance_scale")
        has_default = param is not None and param.default is not inspect.Parameter.empty
        guidance_scale = param.default if has_default else 7.5  # type: ignore[union-attr]
    prop = getattr(type(pipe), "do_classifier_free_guidance", None)
    if not isinstance(prop, property) or prop.fget is None:  # no property: SD's own rule
        embedded = getattr(pipe.unet.config, "time_cond_proj_dim", None) is not None
        return float(guidance_scale) > 1 and not embedded
    missing = object()
    before = pipe.__dict__.get("_guidance_scale", missing)
    pipe._guidance_scale = guidance_scale  # what the pipeline's call sets before deciding
    try:
        return bool(prop.fget(pipe))
    finally:
        if before is missing:
            del pipe._guidance_scale
        else:
            pipe._guidance_scale = before


def pipeline_embeds(
    pipe: Any, embedding: torch.Tensor, guidance_scale: float | None = None
) -> list[torch.Tensor]:
    """`ip_adapter_image_embeds` conditioning every image of a `pipe` call on one user: [1, 1, D],
    or [zeros; e] ([2, 1, D], the zero user as the negative) when the pipeline guides
    (`pipeline_guides`); the pipeline repeats it for its batch itself."""
    e = check_embedding(pipe.unet, embedding)[:1].to(pipe.unet.device, pipe.unet.dtype)[None]
    return [torch.cat([torch.zeros_like(e), e]) if pipeline_guides(pipe, guidance_scale) else e]


def adapter_state_dict(unet: Any) -> dict[str, torch.Tensor]:
    """The branch as a flat IP-Adapter state dict (`image_proj.*`, `ip_adapter.<k>.*`)."""
    proj = unet.encoder_hid_proj.image_projection_layers[0]
    out = {
        "image_proj.proj.weight": proj.image_embeds.weight,
        "image_proj.proj.bias": proj.image_embeds.bias,
        "image_proj.norm.weight": proj.norm.weight,
        "image_proj.norm.bias": proj.norm.bias,
    }
    for k, name in enumerate(_cross_attention_names(unet)):
        processor = unet.attn_processors[name]
        out[f"ip_adapter.{2 * k + 1}.to_k_ip.weight"] = processor.to_k_ip[0].weight
        out[f"ip_adapter.{2 * k + 1}.to_v_ip.weight"] = processor.to_v_ip[0].weight
    return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def save_adapter(unet: Any, out_dir: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the branch to `out_dir/ppd_adapter.safetensors` (metadata: width, tokens, `meta`)."""
    from safetensors.torch import save_file

    path = Path(out_dir) / ADAPTER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"embed_dim": embed_width(unet), "user_tokens": USER_TOKENS, **(meta or {})}
    save_file(adapter_state_dict(unet), str(path), metadata={"ppd": json.dumps(info)})
    return path


def _adapter_path(path: str | Path) -> Path:
    p = Path(path)
    p = p / ADAPTER_FILE if p.is_dir() else p
    if not p.is_file():
        raise InputError(f"no PPD adapter at {path} (expected {ADAPTER_FILE} from a PPD run)")
    return p


def adapter_meta(path: str | Path) -> dict[str, Any]:
    """The metadata saved with an adapter (embed_dim, user_tokens, encoder, layer, ...)."""
    from safetensors import safe_open

    with safe_open(str(_adapter_path(path)), "pt") as f:
        return dict(json.loads((f.metadata() or {}).get("ppd", "{}")))


def expected_shapes(unet: Any, embed_dim: int) -> dict[str, tuple[int, ...]]:
    """The shape of every adapter tensor (flat layout) a branch of width `embed_dim` has on
    `unet`: the projection's on its cross-attention width, each layer's on its own `to_k` /
    `to_v` (`init_state_dict` copies them)."""
    cross = int(unet.config.cross_attention_dim)
    out: dict[str, tuple[int, ...]] = {
        "image_proj.proj.weight": (USER_TOKENS * cross, embed_dim),
        "image_proj.proj.bias": (USER_TOKENS * cross,),
        "image_proj.norm.weight": (cross,),
        "image_proj.norm.bias": (cross,),
    }
    for k, name in enumerate(_cross_attention_names(unet)):
        attn = _attention_module(unet, name)
        out[f"ip_adapter.{2 * k + 1}.to_k_ip.weight"] = tuple(attn.to_k.weight.shape)
        out[f"ip_adapter.{2 * k + 1}.to_v_ip.weight"] = tuple(attn.to_v.weight.shape)
    return out


def _trained_for(path: Path, meta: dict[str, Any]) -> str:
    """'trained for base X' from the adapter's metadata or its run folder's record."""
    base = meta.get("base")
    if base is None:
        from .recipe import run_info

        base = (run_info(path.parent) or {}).get("base")
    return f"trained for base {base}" if base else "base not recorded"


def check_fits(unet: Any, flat: dict[str, torch.Tensor], path: Path) -> None:
    """An InputError naming the adapter file, each tensor whose shape (or presence) differs
    from what `unet` takes, and the base the adapter was trained for; nothing is loaded."""
    proj = flat.get("image_proj.proj.weight")
    width = int(proj.shape[-1]) if proj is not None else 0
    want = expected_shapes(unet, width)
    problems = [  # in the branch's order: the projection first, then layer by layer
        f"{key}: expected {shape}, found {tuple(flat[key].shape)}"
        for key, shape in want.items()
        if key in flat and tuple(flat[key].shape) != shape
    ]
    layers = len(_cross_attention_names(unet))
    problems += [
        f"{key}: not in this base (it has {layers} cross-attention layers)"
        for key in flat
        if key not in want
    ]
    problems += [f"{key}: missing from the adapter" for key in want if key not in flat]
    if not problems:
        return
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    raise InputError(
        f"{path}: this PPD adapter does not fit the UNet it is loaded into "
        f"({_trained_for(path, adapter_meta(path))}): {'; '.join(problems[:3])}{more}. Load it "
        "on the base it was trained for (a run's --base must have that base's architecture)"
    )


def load_adapter(unet: Any, path: str | Path) -> dict[str, Any]:
    """Load a saved adapter into a bare `unet` (the same diffusers loader a pipeline's
    `load_ip_adapter` uses); returns its metadata. An adapter of other shapes (another base)
    is an InputError naming the tensor, before anything is loaded (`check_fits`)."""
    from safetensors.torch import load_file

    file = _adapter_path(path)
    flat = load_file(str(file))
    state: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if head not in state:
            raise InputError(f"{path}: unexpected key '{key}' in a PPD adapter")
        state[head][rest] = value
    check_fits(unet, flat, file)
    install(unet, state)
    return adapter_meta(path)
