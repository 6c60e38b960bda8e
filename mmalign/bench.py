"""Process memory readings shared by the benchmarks (benchmarks/*.py)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any


def rss_mb() -> float:
    """The current resident set size (Linux /proc; elsewhere the peak is the best we have)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return peak_rss_mb()
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    """The process's peak resident set size so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def sync(device: Any) -> None:
    """Wait for queued device work, so a timer around a step measures the step."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_cuda_mb(device: Any) -> float | None:
    """Peak CUDA memory allocated on `device` (None off CUDA)."""
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def step_summary(times: list[float], device: Any, base_rss: float) -> dict[str, Any]:
    """Seconds per step (median, mean, min, all) and peak memory after the timed steps: the
    figures every step benchmark reports. `peak_mb` is CUDA's peak on a GPU, else the RSS peak;
    `train_rss_mb` is the RSS peak above `base_rss` (the process before the model loaded)."""
    import statistics

    peak_rss, peak_cuda = peak_rss_mb(), peak_cuda_mb(device)
    return {
        "s_per_step": statistics.median(times),
        "s_per_step_mean": statistics.fmean(times),
        "s_per_step_min": min(times),
        "step_times": times,
        "peak_mb": peak_cuda if peak_cuda is not None else peak_rss,
        "peak_rss_mb": peak_rss,
        "peak_cuda_mb": peak_cuda,
        "base_rss_mb": base_rss,
        "train_rss_mb": peak_rss - base_rss,
    }


ENCODERS = ("vae", "text_encoder", "text_encoder_2", "text_encoder_3")


def offload_encoders(pipe: Any, device: Any) -> None:
    """After pre-encoding, the encoders back on the CPU (as the recipe keeps them off the
    accelerator while training from the cache), and on CUDA the peak reset, so a step's peak
    memory holds no encoder."""
    import torch

    for name in ENCODERS:
        module = getattr(pipe, name, None)
        if module is not None:
            module.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
