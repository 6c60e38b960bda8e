"""Tiny diffusion runs shared by the diffusion tests: saved tiny pipelines and configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmalign.config import from_dict
from mmalign.train import Config


def save_tiny(root: Path, family: str = "sd", prediction_type: str = "epsilon") -> Path:
    from mmalign.diffusion import tiny_sd_pipeline, tiny_sdxl_pipeline

    path = root / f"tiny-{family}-{prediction_type}"
    if not (path / "model_index.json").is_file():
        make = tiny_sdxl_pipeline if family == "sdxl" else tiny_sd_pipeline
        make(seed=0, prediction_type=prediction_type).save_pretrained(path)
    return path


def tiny_config(model: Path | str, out: Path, **sections: Any) -> Config:
    """A few-step LoRA Diffusion-DPO run on 16 rendered toy style pairs (no sampling)."""
    raw: dict[str, Any] = {
        "model": {"name_or_path": str(model)},
        "data": {
            "path": "toy:style",
            "split": "train",
            "toy": {"n": 16, "rejected_source": "render", "progress": False},
        },
        "objective": [{"loss": "dpo", "beta": 500.0}],
        "lora": {"rank": 4},
        "train": {
            "max_steps": 6, "batch_size": 4, "learning_rate": 1e-3, "log_every": 1,
            "checkpoint_every": 3, "trackers": [], "lr_scheduler": "constant",
        },
        "validation": {"enabled": False},
        "output_dir": str(out),
    }  # fmt: skip
    return config_with(raw, sections)


def config_with(raw: dict[str, Any], sections: dict[str, Any]) -> Config:
    """`raw` with each of `sections` merged into its section (or replacing it), as a Config."""
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return from_dict(Config, raw)


def read_metrics(out: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
