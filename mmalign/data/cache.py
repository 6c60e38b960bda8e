"""mmalign's on-disk cache: where built data, encoded latents and reference scores live, and a
build-once helper that several processes can call at the same time."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock


def cache_root() -> Path:
    """Where mmalign caches built toy data, pre-encoded latents and reference scores
    (`$MMALIGN_CACHE`, default `~/.cache/mmalign`)."""
    return Path(os.environ.get("MMALIGN_CACHE", Path.home() / ".cache" / "mmalign"))


def digest(payload: Any) -> str:
    """A short, stable key for a JSON-able payload (dict keys sorted, other objects by str)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_once(
    folder: Path,
    build: Callable[[Path], Any],
    done: str = "summary.json",
    ready: Callable[[Path], bool] | None = None,
) -> Path:
    """Run `build(tmp)` once for `folder` and return `folder`; later calls find it built.

    Two runs wanting the same data (a DPO and a MaPO run side by side, or the processes of one
    `accelerate launch`) would both build into the same .partial folder: the second waits on
    the lock and then finds the first one's result. The build goes to `<folder>.partial` and is
    renamed when whole, so an interrupted build never looks finished. `ready(folder)` says a
    whole one is there (default: its `done` file exists); a ready folder is returned without
    taking the lock, so a cache on a read-only disk still serves what it holds.
    """
    is_ready = ready or (lambda f: (f / done).is_file())
    if is_ready(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not is_ready(folder):  # else another run built it while this one waited
            tmp = folder.with_name(folder.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            build(tmp)
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
    return folder
