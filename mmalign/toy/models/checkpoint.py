"""Resumable-training checkpoints of the toy builders: one safetensors file per stage.

Tensors (weights and optimizer state, flattened to `PREFIX<param index>.<name>`) plus JSON
metadata; written to a temporary file and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file


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
