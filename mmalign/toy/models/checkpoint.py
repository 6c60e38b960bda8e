"""Resumable-training checkpoints of the toy builders: one safetensors file per stage.

Tensors (each module's weights under `<prefix>.`, the optimizer state flattened to
`opt.<param index>.<name>`, optionally the torch RNG as `rng.torch`) plus JSON metadata (the
step and the settings' fingerprint); written to a temporary file and renamed, so a crash never
leaves half a checkpoint. toy-sd and toy-vlm both save and resume through `save_checkpoint` and
`load_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

OPTIMIZER = "opt."  # the prefix of the optimizer state
RNG = "rng.torch"  # the torch RNG state, for a trainer whose steps draw from the global RNG


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={"meta": json.dumps(meta)})  # fmt: skip
    tmp.replace(path)


def read_meta(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["meta"])


def fingerprint_of(settings: dict[str, Any]) -> str:
    """A short stable hash of the settings a checkpoint was trained under."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def check_fingerprint(path: Path, fingerprint: str, start_over: str, model: str = "") -> dict:
    """`path`'s metadata, if it was written under `fingerprint`; otherwise raise, because
    resuming it would silently mix two recipes. `start_over` says how to begin afresh;
    `model` names the model in the message."""
    meta = read_meta(path)
    if meta.get("fingerprint") != fingerprint:
        settings = f"{model} settings" if model else "settings"
        raise ValueError(f"checkpoint {path} was written by different {settings}; {start_over}")
    return meta


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    out = {}
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            out[f"{prefix}{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict, prefix: str) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, name = key[len(prefix) :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    sd["state"] = state
    opt.load_state_dict(sd)


def save_checkpoint(
    path: Path,
    states: dict[str, dict[str, torch.Tensor]],
    opt: torch.optim.Optimizer,
    meta: dict,
    *,
    rng: bool = False,
) -> None:
    """Save each state dict of `states` under its prefix, `opt`'s state, the torch RNG when
    `rng`, and `meta` (which must hold "step" and "fingerprint")."""
    tensors = {f"{prefix}.{k}": v for prefix, state in states.items() for k, v in state.items()}
    tensors.update(optimizer_tensors(opt, OPTIMIZER))
    if rng:
        tensors[RNG] = torch.get_rng_state()
    save_tensors(path, tensors, meta)


def load_checkpoint(
    path: Path,
    fingerprint: str,
    opt: torch.optim.Optimizer,
    start_over: str,
    *,
    model: str = "",
    rng: bool = False,
) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, metadata) of the checkpoint at `path`, with `opt` (and the torch RNG when
    `rng`) restored from it; None when there is none. One written under another fingerprint is
    refused (see `check_fingerprint`). The caller loads its modules (see `state_under`)."""
    if not path.is_file():
        return None
    meta = check_fingerprint(path, fingerprint, start_over, model)
    tensors = load_file(str(path))
    restore_optimizer(opt, tensors, OPTIMIZER)
    if rng:
        torch.set_rng_state(tensors[RNG])
    return tensors, meta


def state_under(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The state dict a checkpoint holds under `prefix` (as `save_checkpoint` wrote it)."""
    start = f"{prefix}."
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}
