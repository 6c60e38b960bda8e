"""What kind of model a name is, read from its files without loading it: a diffusion model, a
VLM or a dense reward head. A command or recipe given a model of another kind says so ("toy:sd
is a diffusion model; ... needs a VLM") instead of "does not exist", a loader's traceback, or a
hub lookup of a folder's weight file.

Read from the toy names (`toy:sd`, `toy:flow`, `toy:vlm`, `toy:dense`); a training output_dir's
`mmalign_run.json` (its `task`, the recipe's `model.kind`); a folder's `model_index.json` (a
diffusers pipeline), `pytorch_lora_weights.safetensors` (a diffusion LoRA), `adapter_config.json`
(a PEFT adapter: mmalign saves its VLM adapters so) or `config.json` (a dense reward head's
marker, a diffusers component's `_class_name`, a transformers image-text-to-text `model_type`);
for a hub id, the same files where the local cache holds them. Anything else is unknown (None),
for the loader to judge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import InputError
from .toy_names import TOY, Kind

NOUN: dict[Kind, str] = {"diffusion": "a diffusion model", "vlm": "a VLM",
                         "reward": "a dense reward head"}  # fmt: skip
TAKEN_BY: dict[Kind, str] = {
    "diffusion": "`mmalign sample` / `mmalign eval winrate` take it",
    "vlm": "`mmalign chat` / `mmalign eval vlm` take it",
    "reward": "`mmalign eval dense --model` / the `dense:PATH` scorer take it",
}
RUN_FILE = "mmalign_run.json"  # written by mmalign.train.loop (RUN_FILE there)
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LoRA file (diffusion/lora.py)
REWARD_MARKER = "mmalign_dense_reward"  # in a dense head's config.json (rewards/dense)


@dataclass(frozen=True)
class Found:
    kind: Kind
    what: str  # "a diffusion model", "a VLM training run (model.kind: vlm)", ...


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_vlm_type(model_type: str) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def _from_config(config: dict[str, Any]) -> Found | None:
    if REWARD_MARKER in config:
        return Found("reward", NOUN["reward"])
    if "_class_name" in config:  # a diffusers component saved alone (a full-UNet run's unet)
        return Found("diffusion", f"a diffusion model's {config['_class_name']}")
    if _is_vlm_type(str(config.get("model_type", ""))):
        return Found("vlm", NOUN["vlm"])
    return None


def _from_run(run: dict[str, Any]) -> Found | None:
    kind = run.get("task") or (run.get("config") or {}).get("model", {}).get("kind")
    if kind not in NOUN:
        return None
    noun = {"diffusion": "a diffusion", "vlm": "a VLM", "reward": "a dense reward"}[kind]
    return Found(kind, f"{noun} training run (model.kind: {kind})")


def _from_folder(folder: Path) -> Found | None:
    if (folder / RUN_FILE).is_file():
        return _from_run(_json(folder / RUN_FILE) or {})
    if (folder / "model_index.json").is_file():
        return Found("diffusion", "a diffusion model (a diffusers pipeline)")
    if (folder / LORA_FILE).is_file():
        return Found("diffusion", f"a diffusion LoRA ({LORA_FILE})")
    if (folder / "adapter_config.json").is_file():
        return Found("vlm", "a VLM adapter (adapter_config.json)")
    config = _json(folder / "config.json") if (folder / "config.json").is_file() else None
    if config is None and (folder / "reward" / "config.json").is_file():  # a head's run folder
        config = _json(folder / "reward" / "config.json")
    return _from_config(config) if config is not None else None


def _from_cache(name: str) -> Found | None:
    """A hub id's kind from the cached `model_index.json` / `config.json`, if there is one."""
    from huggingface_hub import try_to_load_from_cache

    from .hub import hub_cache, is_repo_id

    if not is_repo_id(name):
        return None
    for file in ("model_index.json", "config.json"):
        found = try_to_load_from_cache(name, file, cache_dir=hub_cache())
        if isinstance(found, str):
            if file == "model_index.json":
                return Found("diffusion", NOUN["diffusion"])
            config = _json(Path(found))
            return _from_config(config) if config is not None else None
    return None


def model_kind(name: str | Path) -> Found | None:
    """What `name` (a toy name, a folder or file, a hub id) is, where its files say; else None."""
    text = str(name)
    if text in TOY:
        return Found(TOY[text], NOUN[TOY[text]])
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_folder(path)
    if path.exists():
        return None
    return _from_cache(text)


def kind_problem(
    name: str | Path, key: str, wanted: Kind, needer: str, noun: str | None = None
) -> str | None:
    """Why `name` (given as `key`) is of the wrong kind for `needer` ("`mmalign chat`", "a
    model.kind: vlm recipe"), naming what does take it; None when it is `wanted` or unknown.
    `noun`: what `needer` needs, where it is more than the kind ("a VLM's PEFT adapter")."""
    found = model_kind(name)
    if found is None or found.kind == wanted:
        return None
    return (
        f"{key}: {name} is {found.what}: {TAKEN_BY[found.kind]}; {needer} needs "
        f"{noun or NOUN[wanted]}"
    )


def require_kind(
    name: str | Path, key: str, wanted: Kind, needer: str, noun: str | None = None
) -> None:
    """Raise `kind_problem` as an `InputError`, if there is one."""
    message = kind_problem(name, key, wanted, needer, noun)
    if message is not None:
        raise InputError(message)


def run_weights(folder: str | Path) -> Path | None:
    """The final weights of a training output_dir (its `mmalign_run.json`), in the folder itself:
    the recorded path is where they were when training ended, relative to that run's working
    directory, so a moved run, or one named from elsewhere, would miss them. None for a folder
    that is no training run; an `InputError` for a run that has not finished."""
    run = _json(Path(folder) / RUN_FILE) if (Path(folder) / RUN_FILE).is_file() else None
    if run is None:
        return None
    final = run.get("final")
    if not final:
        raise InputError(f"{folder} is a training run that has not finished (no final weights)")
    return Path(folder) / Path(final["path"]).name
