"""Every hub id a recipe needs, checked together before anything loads (`mmalign train`).

An SDXL recipe needs its pipeline, its VAE and its data set; offline, each one missing from the
local cache is named in one message with how to get it, instead of the first loader's
traceback minutes later.
"""

from __future__ import annotations

from ..hub import Need, require
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


def check_sources(cfg: Config) -> None:
    """Raise one `InputError` naming every input of `cfg` that cannot be used as it stands."""
    require(recipe_needs(cfg))
