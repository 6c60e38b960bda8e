"""Every hub id a recipe needs, checked together before anything loads (`mmalign train`).

An SDXL recipe needs its pipeline, its VAE and its data set; offline, or online with a hub that
cannot be reached, each one missing from the local cache is named in one message with how to
get it, instead of the first loader's traceback minutes later (after a minute of retries). A
model of another kind than `model.kind` (toy:sd in a VLM recipe), an `output_dir` that is a
file (or lies under one), a `toy:<kind>` data set that does not exist and a `train.resume_from`
that is no checkpoint are named with them.
"""

from __future__ import annotations

from pathlib import Path

from ..config import InputError
from ..hub import Need, problems
from ..model_kind import kind_problem
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


def prompts_problem(cfg: Config) -> str | None:
    """Why a diffusion recipe's `validation.prompts` file cannot be read, or None: its prompts
    are drawn after the last step, and a missing file must not wait for the end of a run."""
    from ..data.prompts import prompts_file

    v = cfg.validation
    if cfg.model.kind != "diffusion" or not v.enabled or not isinstance(v.prompts, str):
        return None
    path = prompts_file(v.prompts)
    if path is None or path.exists():
        return None
    return (
        f"validation.prompts: {v.prompts}: {path} does not exist (toy:heldout[:N], "
        "pickapic:<split>, parti:<tsv>, hps:<json or folder>, or a text file)"
    )


def toy_data_problem(cfg: Config) -> str | None:
    """Why `data.path: toy:<kind>` names no toy dataset, or None: a diffusion or VLM recipe
    builds it only after its model has loaded. (A reward recipe's toy names are its own:
    `toy:flaws[:heldout]`, `toy:sd-samples`.)"""
    from ..toy.cache import TOY_PREFIX, unknown_kind
    from ..toy.datasets import KINDS

    path = cfg.data.path
    if cfg.model.kind == "reward" or not path.startswith(TOY_PREFIX):
        return None
    kind = path[len(TOY_PREFIX) :]
    return None if kind in KINDS else unknown_kind(kind)


def resume_problem(cfg: Config) -> str | None:
    """Why `train.resume_from` names no checkpoint, or None: the loop resolves it only after
    the data is built and the model loaded. `latest` is left to the loop (it may recover a
    checkpoint an interrupted rotation set aside, which a check must not do)."""
    from .checkpoint import resolve_resume

    resume_from = cfg.train.resume_from
    if resume_from is None or resume_from == "latest":
        return None
    try:
        resolve_resume(cfg.output_dir, resume_from)
    except FileNotFoundError as err:  # its message, with the hint for the likely mistake
        return str(err)
    return None


def check_sources(cfg: Config) -> None:
    """Raise one `InputError` naming every input of `cfg` that cannot be used as it stands."""
    m = cfg.model
    noun = "toy:dense or a CLIP checkpoint" if m.kind == "reward" else None  # its backbone
    wrong_kind = kind_problem(m.name_or_path, "model.name_or_path", m.kind,
                              f"a model.kind: {m.kind} recipe", noun)  # fmt: skip
    needs = recipe_needs(cfg)
    if wrong_kind is not None:  # named as such: not also looked up as a hub id
        needs = [n for n in needs if n.key != "model.name_or_path"]
    found = [p for p in [wrong_kind, *problems(needs)] if p is not None]
    found += [p for p in (output_dir_problem(cfg.output_dir), prompts_problem(cfg)) if p]
    found += [p for p in (toy_data_problem(cfg), resume_problem(cfg)) if p]
    if found:
        raise InputError("\n".join(found))
