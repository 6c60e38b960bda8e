"""`vlm.reference: precomputed`: the reference model's log-likelihood of every training
sequence, from one pass over the rows before the first update (DPO's fixed pi_ref,
Rafailov et al. 2023, eq. 7; TRL's `precompute_ref_log_probs`), cached under a key of
everything that sets those sequences, so the reference needs no second model in memory.

Scores are keyed by (dataset row, variant, completion text): the row of the opened data
(`VLMRows`' row id, as the collator's errors and the data report name it), so skipping other
rows never moves a score onto another row.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..train.config import Config
from .collate import SequenceBatch, processor_settings
from .load import VLM

Scores = dict[tuple[int, str, str], float]


def digest(*parts: Any) -> str:
    """A short key of JSON-able parts, in order (other objects by str)."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def reference_key(vlm: VLM, rows: Any, cfg: Config, pairs: Sequence[str],
                  extra: dict[str, list[Any]], blind_as_rows: bool,
                  capped: bool) -> str:  # fmt: skip
    """The cache key of the precomputed scores of `rows` (a `datasets.Dataset`) under `vlm`.

    The mixed precision is part of it (the scores are computed under its autocast), and so are
    the chat template, which renders the prompts the scores are not keyed on, and the
    processor's image settings, which set the image tokens. Tags name each change of the scored
    sequences, so scores saved before it are never read for the new ones:
    "eos-closed": an EOS ends the completions of templates that append none
    (`ChatFormat.closed`); "answer-frame": an answer is found between the template's own text,
    so a short answer inside the end-of-turn text ("d" under Qwen) gets no second end-of-turn
    token (`ChatFormat.answer_end`); "dataset-rows": scores keyed by the dataset's row, not the
    position among the rows kept; "open-unclosed" (vlm.prism only): PRISM's cut stages end
    without the end-of-turn token; "blind-capped-open": BPO blind answers cut by
    `vlm.blind_max_new_tokens` likewise."""
    v, precision = cfg.vlm, cfg.train.mixed_precision
    template = getattr(vlm.processor, "chat_template", None)
    return digest(vlm.weights_key, rows._fingerprint, list(pairs), v.max_length, extra,
                  cfg.data.filter, blind_as_rows, digest(template),
                  processor_settings(vlm.processor), "eos-closed", "answer-frame", "dataset-rows",
                  *(["open-unclosed"] if v.prism else []),
                  *(["blind-capped-open"] if capped else []),
                  *([precision] if precision != "no" else []))  # fmt: skip


@torch.no_grad()
def reference_scores(path: Path, core: Any, dataset: torch.utils.data.Dataset,
                     collate: Callable[[list[Any]], SequenceBatch], *, batch_size: int,
                     device: torch.device, autocast: Callable[[], Any] | None = None,
                     pack: bool = False) -> Scores:  # fmt: skip
    """Reference scores of every sequence of `dataset` (items `collate` turns into a batch),
    read from `path` or computed by `core` (the reference model, as loaded) and written there.
    `autocast`: the context the policy is scored under (the accelerator's)."""
    from .scorer import image_features, pack_batch, sequence_logps

    if path.is_file():
        try:
            return {(r, v, c): s for r, v, c, s in json.loads(path.read_text())}
        except ValueError:  # cut short (a run killed while an older version wrote it)
            pass
    out, n = [], len(dataset)  # type: ignore[arg-type]
    autocast = autocast or contextlib.nullcontext
    for start in tqdm(range(0, n, batch_size), desc="reference scores"):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, n))])
        batch = batch.to(device)
        packed = pack_batch(core, batch) if pack else None
        # under the autocast the policy is scored with (train/loop.py), as TRL's reference
        # pass: a float32 reference against a bf16 policy gives a nonzero margin at step 0
        with autocast():
            logps = sequence_logps(core, batch, image_features(core, batch), packed)[0]
        for (row, variant, completion), s in zip(batch.sequence_keys, logps.tolist(),
                                                 strict=True):  # fmt: skip
            out.append((batch.rows[row], variant, completion, s))
    path.parent.mkdir(parents=True, exist_ok=True)
    # written whole, then renamed: every process of a run writes the same scores, and a
    # reader must never meet a file cut short
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(out))
    part.replace(path)
    return {(r, v, c): s for r, v, c, s in out}
