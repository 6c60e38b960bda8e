"""Where a diffusion pipeline comes from: its folder or hub id, its class and the dtype keyword.

Shared by the DDPM loader (load.py) and the flow-matching one (flow_load.py), so neither
imports the other's module for these.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pipeline_class(name_or_path: str | Path) -> str | None:
    """The `_class_name` in a local folder's model_index.json (None for a hub id)."""
    index = Path(name_or_path) / "model_index.json"
    if index.is_file():
        return str(json.loads(index.read_text()).get("_class_name"))
    return None


def dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """`dtype=` for diffusers' `from_pretrained` where the installed version takes it (it
    deprecates `torch_dtype`, with a warning on every load), else `torch_dtype=`."""
    from diffusers.utils import deprecation_utils

    name = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    return {name: dtype}


def resolve_model(name_or_path: str | Path) -> str:
    """`toy:sd` / `toy:flow` name the shipped toy-sd / toy-flow; anything else is a folder or
    hub id as given."""
    if str(name_or_path) in ("toy:sd", "toy:flow"):
        from ..toy.paths import model_path

        return str(model_path(str(name_or_path)[4:]))
    return str(name_or_path)
