"""PPD's user encoder: pairs without a label (PreferencePair reads None as "chosen wins") give
examples instead of a TypeError, and the embedding cache tells apart images with the same
pixel bytes in another shape (the encoder sees other images, so other embeddings)."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset, Features, Value
from PIL import Image

from mmalign.vlm.load import load_vlm
from mmalign.vlm.user_embed import cache_key, embed_users, examples_from_pairs


def test_pairs_without_a_label_prefer_chosen():
    features = Features({k: Value("string") for k in ("prompt", "chosen", "rejected", "user_id")})
    features["label"] = Value("float32")
    ds = Dataset.from_list(
        [
            {"prompt": "p0", "chosen": "a", "rejected": "b", "label": None, "user_id": "u"},
            {"prompt": "p1", "chosen": "c", "rejected": "d", "label": 0.0, "user_id": "u"},
            {"prompt": "p2", "chosen": "e", "rejected": "f", "label": 0.5, "user_id": "u"},
        ],
        features=features,
    )
    examples, ties = examples_from_pairs(ds)
    assert examples == {"u": [("p0", "a", "b"), ("p1", "d", "c")]} and ties == 1


def test_cache_key_follows_the_image_shape():
    px = np.random.default_rng(0).integers(0, 255, (16 * 64, 3), dtype=np.uint8)
    wide, square = Image.fromarray(px.reshape(16, 64, 3)), Image.fromarray(px.reshape(32, 32, 3))
    other = Image.fromarray(px[::-1].reshape(32, 32, 3).copy())
    assert wide.tobytes() == square.tobytes()
    a, b = {"u": [("a red circle", wide, other)]}, {"u": [("a red circle", square, other)]}
    vlm = load_vlm("toy:vlm")
    ea, eb = embed_users(vlm, a, shots=1), embed_users(vlm, b, shots=1)
    assert not torch.allclose(ea["u"], eb["u"])  # other images, other embeddings...
    assert cache_key(vlm, a, 1, -2, "mean") != cache_key(vlm, b, 1, -2, "mean")  # ...other keys
