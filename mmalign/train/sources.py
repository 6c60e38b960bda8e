"""Every hub id a recipe needs, checked together before anything loads (`mmalign train`).

An SDXL recipe needs its pipeline, its VAE and its data set; offline, each one missing from the
local cache is named in one message with how to get it, instead of the first loader's
traceback minutes later. An `output_dir` that is a file (or lies under one) is named with them.
"""

from __future__ import annotations

from pathlib import Path

from ..config import InputError
from ..hub import Need, problem
from .config import Config

# The file that shows a model repo is in the cache, by what loads it.
MARKERS = {"diffusion": "model_index.json", "vlm": "config.json", "reward": "config.json"}


def recipe_needs(cfg: Config) -> list[Need]:
    """The model, VAE and data a recipe loads, as `Need`s (toy names need nothing)."""
    m = cfg.model
    needs = []
    if not m.name_or_path.startswith("toy:"):
        needs.append(Need(m.name_or_path, "model.name_or_path", file=MARKERS[m.kind],
                          revision=m.revision))  # fmt: skip
    if m.vae is not None and m.kind == "diffusion":
        needs.append(Need(m.vae, "model.vae", file="config.json"))
    if not cfg.data.path.startswith("toy:"):
        needs.append(Need(cfg.data.path, "data.path", repo_type="dataset"))
    return needs


def output_dir_problem(output_dir: str) -> str | None:
    """Why `output_dir` cannot be made a folder (it, or a folder above it, is a file), or None."""
    path = Path(output_dir).expanduser()
    for where in (path, *path.parents):
        if where.exists():
            if where.is_dir():
                return None
            return f"output_dir: {where} is a file, not a folder; choose another output_dir"
    return None


def check_sources(cfg: Config) -> None:
    """Raise one `InputError` naming every input of `cfg` that cannot be used as it stands."""
    problems = [problem(need) for need in recipe_needs(cfg)]
    problems.append(output_dir_problem(cfg.output_dir))
    found = [p for p in problems if p is not None]
    if found:
        raise InputError("\n".join(found))
