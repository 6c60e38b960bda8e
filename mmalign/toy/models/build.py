"""`mmalign toy build`: train the toy base models from scratch, resumably.

toy-sd and toy-vlm build at once, each in its own process with one thread: on a small CPU two
single-threaded trainings finish sooner than two two-threaded ones in a row (measured on
the 2-core build machine: one toy-sd step takes 0.49 s on one thread, 0.44 s on two).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from ..paths import MODEL_NAMES, MODELS_DIR


def default_work_dir(seed: int) -> Path:
    return Path.home() / ".cache" / "mmalign" / f"toy-build-seed{seed}"


def _build_one(
    kind: str, out: Path, work: Path, seed: int, progress: bool, threads: int | None,
    position: int = 0,
) -> dict:  # fmt: skip
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    if kind == "sd":
        from .sd import ToySDSettings, build_toy_sd

        result = build_toy_sd(out, work / "sd", ToySDSettings(seed=seed), progress, position)
    elif kind == "flow":
        from .flow import ToyFlowSettings, build_toy_flow

        # the toy-sd built beside it, else the shipped one
        toy_sd = out.parent / MODEL_NAMES["sd"]
        toy_sd = toy_sd if (toy_sd / "text_encoder").is_dir() else MODELS_DIR / MODEL_NAMES["sd"]
        result = build_toy_flow(out, work / "flow", toy_sd, ToyFlowSettings(seed=seed),
                                progress, position)  # fmt: skip
    else:
        from .vlm import build_toy_vlm

        result = build_toy_vlm(out, work_dir=work / "vlm", seed=seed, progress=progress,
                               position=position,
                               command=f"mmalign toy build --only vlm --seed {seed}")  # fmt: skip
    result["wall_seconds"] = time.perf_counter() - start
    result["threads"] = torch.get_num_threads()
    return result


def build(
    which: tuple[str, ...] = ("sd", "vlm", "flow"),
    *,
    out_root: str | Path = MODELS_DIR,
    work_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    parallel: bool | None = None,
) -> dict[str, dict]:
    """Build each model in `which` into `out_root/<name>`; checkpoints go to `work_dir`.

    Re-running after an interruption resumes from the last checkpoint of the stage that
    was running. `parallel` (default: when there are at least as many cores as models)
    trains toy-sd and toy-vlm side by side, one process and one thread each. toy-flow starts
    from toy-sd's tokenizer and text encoder, so it builds after them, on every thread.
    """
    for kind in which:
        if kind not in MODEL_NAMES:
            raise ValueError(f"unknown toy model '{kind}'; valid: {', '.join(MODEL_NAMES)}")
    work = Path(work_dir) if work_dir is not None else default_work_dir(seed)
    outs = {kind: Path(out_root) / MODEL_NAMES[kind] for kind in which}
    first = tuple(k for k in which if k != "flow")
    if parallel is None:
        parallel = len(first) > 1 and (os.cpu_count() or 1) >= len(first)
    if not parallel or len(first) < 2:
        results = {k: _build_one(k, outs[k], work, seed, progress, None) for k in first}
    else:
        # Spawned workers: a forked process would inherit this one's OpenMP thread pool.
        with ProcessPoolExecutor(len(first), mp_context=get_context("spawn")) as pool:
            futures = {
                k: pool.submit(_build_one, k, outs[k], work, seed, progress, 1, i)
                for i, k in enumerate(first)
            }
            results = {k: f.result() for k, f in futures.items()}
    if "flow" in which:
        results["flow"] = _build_one("flow", outs["flow"], work, seed, progress, None)
    return results
