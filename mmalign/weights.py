"""Cheap identities of weight files, for cache keys that must change when a model does.

A cache built from a model's outputs (toy datasets sampled from toy-sd, a VLM's blind answers
or reference scores) is only valid for the weights that made it. Hashing gigabytes of weights
on every run is too slow, so a key is each weight file's relative path, size and modification
time: rebuilding or replacing a model changes it, reading it does not.
"""

from __future__ import annotations

from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weight_files(folder: str | Path | None, recursive: bool = False) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of each weight file in `folder`, sorted; [] if
    `folder` is not a local folder (a hub id). `recursive` covers a diffusers pipeline's
    component subfolders."""
    if folder is None or not Path(folder).is_dir():
        return []
    root = Path(folder)
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        (f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
        for f in found
        if f.is_file() and f.suffix in WEIGHT_SUFFIXES
    )
