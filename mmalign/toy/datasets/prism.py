"""`toy:prism`, the PRISM analog (Li et al. 2025): requests harmful in their text, requests
harmful or harmless depending on the image (`mmalign.toy.prism.hazard`), and plain questions,
each answered with a programmatic PRISM-CoT chain of thought (the toy PRISM-CoT).

Rows: chosen = the reference chain of thought, rejected = the same chain with the wrong verdict
(compliance for a forbidden request, a refusal for a harmless one); `format: plain` keeps only
the final answers (the baseline without the reasoning format). `source` is
"<forbidden|benign>:<text|image|qa>:<plain|wrapped>". `attacks: heldout` draws the held-out
rephrasings and the jailbreak wrappers (evaluation's set); training uses `train`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..prism import render_items, sample_prism
from .common import Built, finish, options_of, quantise, stream_generator, stream_seed

FORMATS = ("cot", "plain")


def build_prism(
    out_dir: str | Path,
    *,
    n: int = 64,
    seed: int = 0,
    prompt_split: str = "train",
    attacks: str = "train",
    format: str = "cot",
    wrap_share: float = 0.3,
    shares: tuple[float, float, float] | list[float] = (0.3, 0.4, 0.3),
) -> dict[str, Any]:
    """PRISM-CoT rows for toy-vlm (see the module docstring); a function of `seed`. `shares`
    weighs the three kinds of request: text-only harm, image-dependent, plain questions."""
    started, options = time.perf_counter(), options_of(locals())
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    rng = random.Random(stream_seed(seed, "prism", prompt_split, attacks))
    items = sample_prism(n, prompt_split, rng, attacks=attacks, wrap_share=wrap_share,  # type: ignore[arg-type]
                         shares=tuple(float(x) for x in shares))  # fmt: skip
    images = quantise(render_items(items, stream_generator(seed, "prism-render")))
    built = Built([], "text")
    for item, image in zip(items, images, strict=True):
        cot = format == "cot"
        built.rows.append({
            "prompt": item.request,
            "chosen": item.chosen if cot else item.plain_chosen,
            "rejected": item.rejected if cot else item.plain_rejected,
            "label": 1.0,
            "image": image,
            "source": item.source,
        })  # fmt: skip
    built.stats["sources"] = dict(sorted(Counter(it.source for it in items).items()))
    return finish(
        "prism", out_dir, built, n=n, seed=seed, split="train", options=options, started=started
    )


# Part of toy:prism's cache key (mmalign.toy.cache): 2 = action phrasings in sentence frames,
# five training wrappers; 3 = a plain question's REASONING states the fact it asks for.
build_prism.data_version = 3  # type: ignore[attr-defined]
