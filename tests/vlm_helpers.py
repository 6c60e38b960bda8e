"""Tiny VLMs and preference rows shared by the VLM scorer tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmalign.vlm.tiny import tiny_llava, tiny_qwen2vl


def tiny_vlms(root: Path) -> dict[str, str]:
    """toy-vlm and tiny random LLaVA and Qwen2-VL saved under `root`: name -> path."""
    tiny_llava(root / "llava")
    tiny_qwen2vl(root / "qwen")
    return {"toy": "toy:vlm", "llava": str(root / "llava"), "qwen": str(root / "qwen")}


def random_images(n: int, size: int = 56) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8")) for _ in
            range(n)]  # fmt: skip


def pair_rows() -> list[dict]:
    """Two rows over three images with every VLM pair's columns (main, visual, blind)."""
    a, b, c = random_images(3)
    return [
        {"prompt": "what color is the shape?", "image": a, "chosen": "red",
         "rejected": "blue square", "retrieved_image": b, "blind": "no idea"},
        {"prompt": "is there a star?", "image": a, "chosen": "yes", "rejected": "no",
         "retrieved_image": c, "blind": "maybe"},
    ]  # fmt: skip


def label_zero_copies() -> Any:
    """`pair_rows()` each labelled 1 and followed by its swapped copy labelled 0: the same
    preference twice (the `rejected` answer of a label-0 row is the preferred one)."""
    from datasets import Dataset

    a, b = pair_rows()
    return Dataset.from_list([
        {**a, "label": 1.0}, {**a, "chosen": a["rejected"], "rejected": a["chosen"], "label": 0.0},
        {**b, "label": 1.0}, {**b, "chosen": b["rejected"], "rejected": b["chosen"], "label": 0.0},
    ])  # fmt: skip
