"""Prompt mode (`mmalign label --model`): two images for a typed prompt from a diffusion
model, two random seeds, stored as a new pair."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

from .images import encode_png, save_image
from .store import Pair, Store, pair_id_for


class PairGenerator:
    """Generates pairs with `model` (loaded on first use); one generation at a time."""

    def __init__(
        self, store: Store, image_root: str | Path, model: str, *, steps: int | None = None
    ) -> None:
        self.store = store
        self.image_root = Path(image_root)
        self.model_name = model
        self.steps = steps  # sampler steps (default: the model card's)
        self._model: Any = None
        self._lock = threading.Lock()

    def generate(self, prompt: str) -> Pair:
        """Generate two images for `prompt` with two random seeds and store them as a pair."""
        from mmalign.data.schema import to_pil_image
        from mmalign.diffusion import load_pipeline
        from mmalign.diffusion.sample import generate, sampling_defaults

        with self._lock:  # the model is not thread-safe
            if self._model is None:
                name = "toy:sd" if self.model_name == "toy-sd" else self.model_name
                self._model = load_pipeline(name)
            steps, guidance = sampling_defaults(self._model, self.steps, None)
            seed = secrets.randbelow(2**31 - 2)
            images = generate(self._model.pipe, [prompt, prompt], seed=seed, steps=steps,
                              guidance=guidance, batch_size=2, desc="label")  # fmt: skip
        data = [encode_png(to_pil_image(img)) for img in images]
        refs = [save_image(self.image_root, d, f"generated image {i}") for i, d in enumerate(data)]
        pair = Pair(pair_id_for(prompt, *data), prompt, refs[0], refs[1],
                    f"model:{self.model_name}:seeds {seed},{seed + 1}")  # fmt: skip
        self.store.add_pairs([pair])
        return pair
