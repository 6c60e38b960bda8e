"""`mmalign toy build`: train the toy base models from scratch, resumably."""

from __future__ import annotations

import time
from pathlib import Path

from .paths import MODEL_NAMES, MODELS_DIR


def default_work_dir(seed: int) -> Path:
    return Path.home() / ".cache" / "mmalign" / f"toy-build-seed{seed}"


def build(
    which: tuple[str, ...] = ("sd", "vlm"),
    *,
    out_root: str | Path = MODELS_DIR,
    work_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, dict]:
    """Build each model in `which` into `out_root/<name>`; checkpoints go to `work_dir`.

    Re-running after an interruption resumes from the last checkpoint of the
    stage that was running.
    """
    work = Path(work_dir) if work_dir is not None else default_work_dir(seed)
    results: dict[str, dict] = {}
    for kind in which:
        if kind not in MODEL_NAMES:
            raise ValueError(f"unknown toy model '{kind}'; valid: {', '.join(MODEL_NAMES)}")
        out = Path(out_root) / MODEL_NAMES[kind]
        start = time.perf_counter()
        if kind == "sd":
            from .sd import ToySDSettings, build_toy_sd

            results[kind] = build_toy_sd(out, work / "sd", ToySDSettings(seed=seed), progress)
        else:
            from .vlm import build_toy_vlm

            results[kind] = build_toy_vlm(out, work_dir=work / "vlm", seed=seed, progress=progress)
        results[kind]["wall_seconds"] = time.perf_counter() - start
    return results
