"""Build toy-vlm from scratch: train, evaluate as users load it, save with its model card.

`python -m mmalign.toy.models.vlm OUT_DIR` runs `main`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ....files import make_readable
from .card import model_card
from .evaluation import load_toy_vlm, refusal_rates, score
from .model import make_model, make_processor
from .tokenizer import train_tokenizer
from .training import ToyVLMSettings, train


def _default_work_dir(settings: ToyVLMSettings) -> Path:
    # Named by the settings, so a rerun of the same build resumes and another never does.
    return Path(tempfile.gettempdir()) / f"mmalign-toy-vlm-{settings.fingerprint()}"


def build_toy_vlm(
    out_dir: str | Path, *, work_dir: str | Path | None = None, seed: int = 0,
    steps: int | None = None, batch_size: int | None = None, progress: bool = True,
    resume: bool = True, settings: ToyVLMSettings | None = None, command: str | None = None,
    position: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Train toy-vlm from scratch (resumable), evaluate it on held-out renders, and save
    model + processor + model card to `out_dir`. Returns the metrics written to the card."""
    settings = settings or ToyVLMSettings()
    settings.seed = seed
    settings.steps = steps if steps is not None else settings.steps
    settings.batch_size = batch_size if batch_size is not None else settings.batch_size
    work = Path(work_dir) if work_dir is not None else _default_work_dir(settings)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tokenizer = train_tokenizer(settings.arch.vocab_size)
    processor = make_processor(tokenizer, settings.arch)
    model = make_model(tokenizer, settings.arch, seed)
    train(model, tokenizer, settings, work, progress=progress, resume=resume, position=position)
    train_seconds = time.perf_counter() - start
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    make_readable(out)  # package data, read by every user: safetensors 0.8 leaves it 0600
    processor.save_pretrained(out)
    saved, saved_processor = load_toy_vlm(out)  # evaluated as users will load it
    metrics = score(saved, saved_processor, settings.eval_n, seed=1234, styles=settings.styles)
    metrics.update(refusal_rates(saved, saved_processor, n=200), refusal_n=200)
    metrics.update(
        train_seconds=round(train_seconds, 1),
        total_seconds=round(time.perf_counter() - start, 1),
        parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=len(tokenizer),
        settings=asdict(settings),
    )
    (out / "build_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    command = command or f"python -m mmalign.toy.models.vlm {out_dir} --seed {seed}"
    (out / "README.md").write_text(model_card(metrics, command))
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    # Named as it is run: the default would be "__main__.py".
    parser = argparse.ArgumentParser(
        prog="python -m mmalign.toy.models.vlm", description="Build the toy-vlm model."
    )
    parser.add_argument("out_dir")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)
    metrics = build_toy_vlm(
        args.out_dir, work_dir=args.work_dir, seed=args.seed, steps=args.steps,
        batch_size=args.batch_size, resume=not args.no_resume,
    )  # fmt: skip
    metrics.pop("errors", None)
    print(json.dumps(metrics, indent=2))
