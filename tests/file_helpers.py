"""Helpers for the tests of the file modes mmalign writes (safetensors 0.8 leaves 0600)."""

from __future__ import annotations

from pathlib import Path


def modes(folder: Path) -> dict[str, int]:
    """Each safetensors file under `folder` (relative path) and its permission bits."""
    return {
        str(p.relative_to(folder)): p.stat().st_mode & 0o777
        for p in sorted(folder.rglob("*.safetensors"))
    }
