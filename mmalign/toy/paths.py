"""Where the shipped toy models live (package data, built by `mmalign toy build`)."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
MODEL_NAMES = {"sd": "toy-sd", "vlm": "toy-vlm", "flow": "toy-flow"}


def model_path(kind: str, *, must_exist: bool = True) -> Path:
    """Folder of the shipped toy model `kind` ("sd", "vlm" or "flow")."""
    if kind not in MODEL_NAMES:
        raise ValueError(f"unknown toy model '{kind}'; valid: {', '.join(MODEL_NAMES)}")
    path = MODELS_DIR / MODEL_NAMES[kind]
    if (
        must_exist
        and not (path / "config.json").exists()
        and not (path / "model_index.json").exists()
    ):
        raise FileNotFoundError(
            f"the toy model '{MODEL_NAMES[kind]}' is not built at {path}; run `mmalign toy build`"
        )
    return path
