"""Where inference commands run their models: `--device` and `--dtype`, resolved and checked.

`auto` is CUDA when torch sees a GPU, else the CPU (never Apple's MPS: name `mps` to use it).
An explicit device the machine lacks is an `InputError` naming the option, before any model
loads, instead of a torch error from deep inside a pipeline. `--dtype` is float32 unless asked:
a model in float32 on the CPU samples exactly what mmalign sampled before these options.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch

from .config import InputError

DTYPES = ("float32", "float16", "bfloat16")
# How everything ran before `--device` / `--dtype`: the CPU, in float32. A saved record (win-rate
# images, a prism-mcts search) that names no device and dtype was made so.
CPU_FLOAT32: Mapping[str, str] = MappingProxyType({"device": "cpu", "dtype": "float32"})
DEVICE_HELP = "auto (CUDA if present, else CPU), cpu, cuda, cuda:N or mps"


def resolve_device(device: str | torch.device | None, flag: str = "--device") -> torch.device:
    """The torch device `device` names: `auto` (or None) is `cuda` when
    `torch.cuda.is_available()`, else `cpu`. A named device must exist here (`cuda` needs a
    CUDA build with a GPU, `cuda:N` the N-th GPU, `mps` Apple's backend); `flag` is the option
    named in the error."""
    if device is None or str(device).strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device).strip())
    except (RuntimeError, ValueError):
        raise InputError(f"{flag} {device}: not a device; use {DEVICE_HELP}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"{flag} {device}: torch sees no CUDA GPU on this machine (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use "
                f"{flag} cpu, or {flag} auto to take a GPU only where there is one"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(
                f"{flag} {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"{flag} {device}: the MPS backend is not available here")
        return dev
    raise InputError(f"{flag} {device}: mmalign runs models on {DEVICE_HELP}")


def check_dtype(dtype: str | None, flag: str = "--dtype") -> str:
    """`dtype` (None: float32) checked against `DTYPES`."""
    name = "float32" if dtype is None else str(dtype)
    if name not in DTYPES:
        raise InputError(f"{flag} {dtype}: use one of {', '.join(DTYPES)}")
    return name


def add_device_options(
    p: argparse.ArgumentParser, what: str = "the model", dtype: bool = True
) -> None:
    """`--device` (default auto) and, with `dtype`, `--dtype` (default float32) on a parser."""
    p.add_argument(
        "--device", default="auto", help=f"the device for {what}: {DEVICE_HELP} (default auto)"
    )
    if dtype:
        p.add_argument(
            "--dtype", default="float32", choices=DTYPES,
            help=f"the precision of {what} (default float32; float16 / bfloat16 halve its "
            "memory)",
        )  # fmt: skip


def device_options(args: argparse.Namespace) -> tuple[torch.device, str]:
    """(the resolved `--device`, the checked `--dtype`) of parsed arguments; a namespace
    without them (built by older code) runs where `auto` resolves, in float32."""
    device = resolve_device(getattr(args, "device", "auto"))
    return device, check_dtype(getattr(args, "dtype", "float32"))


def precision_of(module: Any) -> dict[str, str]:
    """{"device": type, "dtype": name} of a model's first parameter: where and at what
    precision it runs (the device's type: `cuda`, not `cuda:1`)."""
    param = next(iter(module.parameters()), None)
    if param is None:
        return dict(CPU_FLOAT32)
    return {"device": param.device.type, "dtype": str(param.dtype).removeprefix("torch.")}


def sampling_precision(pipe: Any) -> dict[str, str]:
    """`precision_of` the denoiser (UNet, or an SD3 / FLUX transformer) a diffusion pipeline
    samples with; one seed draws other images on another device type or in another dtype."""
    return precision_of(pipe.unet if hasattr(pipe, "unet") else pipe.transformer)
