"""Toy preference datasets: the data every alignment recipe trains on, built from the shapes world.

`build_dataset(kind, out_dir, n=..., seed=...)` writes into `out_dir` (an earlier build there is
replaced only with `overwrite=True`):

- `pairs/`: PreferencePair rows (`save_to_disk`, Arrow inside), validated strictly on write;
- `pickapic/`: image kinds only, the same pairs as Pick-a-Pic v2 parquet shards (split "train"
  unless `split=` says otherwise), so any Pick-a-Pic script runs on toy data;
- `dense/`: kind `flaws` only, single images with heatmaps and the four dense scores;
- `summary.json`: rows, candidates skipped by reason (`skipped`) and tied pairs apart from them
  (`ties`: `dropped` under `ties=drop`, `kept` at label 0.5), label statistics, options, timing.

| kind | analog of | chosen | rejected |
|---|---|---|---|
| pairs | Pick-a-Pic / Diffusion-DPO | toy-sd sample with the higher reward | the other sample |
| style | MaPO's Pick-Style | `outlined` render (toy-sd never draws it) | toy-sd sample |
| users | PPD | candidate the row's user rewards more | the other candidate |
| flaws | RichHF-18K | clean render (zero heatmaps) | render with injected flaws + heatmaps |
| vqa | VLM SFT | correct answer | wrong answer of the same type |
| hallucination | Re-Align rDPO | answer true to the image | answer true to `retrieved_image` |
| safety | BPO / PRISM | refusal (forbidden) / answer (benign) | compliance / over-refusal |
| prism | PRISM-CoT | reasoned refusal / reasoned answer | the chain with the wrong verdict |

VLM questions come from the toy VLM's own generator (`mmalign.toy.qa.sample_qa`), so they use
exactly the phrasings toy-vlm was trained on. Every row is a function of `seed`: the same seed
gives the same prompts, images and labels. Images are quantised to 8 bits before they are
scored, so a reward recomputed from the stored PNGs gives the stored label.

One module per family of kinds (`pairs`: pairs and style, `users`, `flaws`, `questions`: the
VLM kinds), on the shared machinery of `common` (seeded streams, labelling, writing) and
`sampling` (toy-sd samples).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ...suggest import did_you_mean
from ..qa import FORBIDDEN_REQUESTS, REFUSAL
from .common import BUILT, DENSE_SCORES, IMAGE_SIZE, TIE_MARGIN, Built, earlier_build
from .flaws import build_flaws
from .pairs import build_pairs, build_style
from .prism import build_prism
from .questions import NEAR_SYNONYM_REFUSALS, build_hallucination, build_safety, build_vqa
from .users import COOL, USER_TIE_MARGIN, WARM, build_users

KINDS = ("pairs", "style", "users", "flaws", "vqa", "hallucination", "safety", "prism")
MODEL_KINDS = ("pairs", "style", "users")  # may sample toy-sd (the others only render)

BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "pairs": build_pairs,
    "style": build_style,
    "users": build_users,
    "flaws": build_flaws,
    "vqa": build_vqa,
    "hallucination": build_hallucination,
    "safety": build_safety,
    "prism": build_prism,
}


def build_dataset(
    kind: str,
    out_dir: str | Path,
    *,
    n: int = 64,
    seed: int = 0,
    model: Any = None,
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Build the toy dataset `kind` (one of KINDS) into `out_dir`; returns the summary that is
    also written to `out_dir/summary.json`. `model`: toy-sd folder or loaded pipeline for the
    kinds that sample it (default: the shipped toy-sd); `options`: the kind's builder options.

    An earlier build in `out_dir` (its pairs/, pickapic/, dense/ or summary.json) is replaced
    only with `overwrite=True`, else refused before anything is built (FileExistsError), as
    `mmalign toy data` refuses it without `--overwrite`: a build deletes those folders."""
    if model is not None:
        options["model"] = model
    check_options(kind, options)
    out = Path(out_dir)  # as the builder writes it
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out_dir} is a file; the toy dataset is built into a folder")
    earlier = earlier_build(out)
    if earlier is not None and not overwrite:
        raise FileExistsError(
            f"{out_dir} already holds an earlier build ({earlier}); pass overwrite=True to "
            "replace it, or another out_dir"
        )
    return BUILDERS[kind](out_dir, n=n, seed=seed, **options)


def check_options(kind: str, options: Mapping[str, Any]) -> None:
    """A ValueError naming an unknown kind, or an option `kind`'s builder does not take."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown toy dataset kind '{kind}'; {did_you_mean(kind, KINDS)}")
    accepted = [p for p in inspect.signature(BUILDERS[kind]).parameters if p != "out_dir"]
    for name in options:
        if name not in accepted:
            valid = [a for a in accepted if a not in ("seed",)]
            raise ValueError(f"'{kind}' has no option '{name}'; {did_you_mean(name, valid)}")


__all__ = [
    "BUILDERS",
    "BUILT",
    "COOL",
    "DENSE_SCORES",
    "FORBIDDEN_REQUESTS",
    "IMAGE_SIZE",
    "KINDS",
    "MODEL_KINDS",
    "NEAR_SYNONYM_REFUSALS",
    "REFUSAL",
    "TIE_MARGIN",
    "USER_TIE_MARGIN",
    "WARM",
    "Built",
    "build_dataset",
    "build_flaws",
    "build_hallucination",
    "build_pairs",
    "build_prism",
    "build_safety",
    "build_style",
    "build_users",
    "build_vqa",
    "earlier_build",
]
