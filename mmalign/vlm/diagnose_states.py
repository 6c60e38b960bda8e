"""The per-pair states behind CHES and LN-CHES, kept on disk so the model pass runs once.

CHES and LN-CHES (Razin et al., "Unintentional Unalignment", Definition 2 and Eq. 4; see
`diagnose.ches_scores`) are functions of exactly four per-pair quantities: the sums S+ and S-
of the last-layer hidden states over the positions predicting the chosen and the rejected
response tokens ([N, D] each) and the token counts |y+| and |y-|. With the summed completion
log-probs (ranking accuracy, Chen et al.) and, with a reference, its log-probs (implicit
accuracy, DPO Eq. 5) they are everything `mmalign data diagnose` and `data.filter` read from
the model, so a matching file replaces the whole model pass.

Layout of a states file (safetensors, one row per diagnosed pair, in the order of
pairs.parquet):

    chosen_sum, rejected_sum    [N, D] float64  S+ and S- (summed in float64, as computed)
    chosen_tokens, rejected_tokens  [N] int64   |y+| and |y-|
    logp_chosen, logp_rejected  [N] float64     summed completion log-probs
    ref_chosen, ref_rejected    [N] float64     the reference's (only with a reference)
    row                         [N] int64       the data row of each pair, as the writer saw it

and the metadata (all strings): `format`, `hidden_size` (D), `model` (digest of the loaded
weights, `VLM.weights_key`), `model_name`, `pairs` (digest of the diagnosed pairs' contents,
in order) and `tokens` (digest of the tokenizer size, the chat template and the processor's
image settings). float64 costs 16 * D bytes per pair (64 KiB at D = 4096) and keeps the scores
from a file identical to a fresh pass's: CHES is a difference of two large inner products, and
float32 sums moved toy-vlm's (size ~2e3) by up to 5e-5.

The cache (`$MMALIGN_CACHE/vlm-states/<key>.safetensors`) is keyed by `model`, `pairs` and
`tokens`. `max_length` is not in the key: it never truncates a row (collate.py), it only skips
the rows that do not fit, and those are already out of `pairs`, so `mmalign data diagnose
--max-length L` and a recipe's filter over the rows fitting `vlm.max_length` share one entry.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import InputError
from ..data.cache import cache_root, digest
from ..files import make_readable

STATES_FILE = "states.safetensors"
FORMAT = "mmalign-ches-states/1"
SUMS = ("chosen_sum", "rejected_sum")
REQUIRED = (*SUMS, "chosen_tokens", "rejected_tokens", "logp_chosen", "logp_rejected", "row")
REFERENCE = ("ref_chosen", "ref_rejected")


@dataclass(frozen=True)
class StatesKey:
    """What a states file must have been computed from: the weights (`model`, "" when the
    caller does not know them), the diagnosed pairs and the tokenization."""

    model: str
    model_name: str
    pairs: str
    tokens: str

    @classmethod
    def of(cls, model_key: tuple[Any, ...] | None, pair_keys: list[str],
           processor: Any) -> StatesKey:  # fmt: skip
        """`model_key`: `VLM.weights_key` (dtype, source, revision, files, adapter, files)."""
        from .collate import processor_settings

        tok = getattr(processor, "tokenizer", processor)
        # tokens PRISM's stage tags add, another chat template or other image settings (the
        # image tokens) change the sequences scored ("bos": 1, one BOS where the template
        # writes it; states before that had two there; "eos": 1, an EOS ends the completions
        # of templates that append none, collate.ChatFormat.closed; "answer": 1, an answer
        # found where the template puts it, never inside its end-of-turn text: "d" under Qwen's
        # template scored "d<|im_end|><|im_end|>" before, chat_format.ChatFormat.answer_end)
        tokens = digest({"vocab": len(tok), "template": getattr(processor, "chat_template", None),
                         "bos": 1, "eos": 1, "answer": 1,
                         "processor": processor_settings(processor)})  # fmt: skip
        if not model_key:
            return cls("", "", digest(pair_keys), tokens)
        name = " + ".join(str(p) for p in (model_key[1:2] + model_key[4:5]) if p)
        return cls(digest(list(model_key)), f"{name} ({model_key[0]})", digest(pair_keys), tokens)

    def path(self) -> Path:
        name = digest([self.model, self.pairs, self.tokens])
        return cache_root() / "vlm-states" / f"{name}.safetensors"


@dataclass
class PairStates:
    """The tensors of a states file (names in the module docstring) and its metadata."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, str]

    def __len__(self) -> int:
        return int(self.tensors["row"].shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.tensors["chosen_sum"].shape[-1])

    @property
    def has_reference(self) -> bool:
        return all(k in self.tensors for k in REFERENCE)


def new_states(parts: list[dict[str, torch.Tensor]], rows: list[int], key: StatesKey,
               hidden_size: int) -> PairStates:  # fmt: skip
    """Batches' per-pair tensors (`diagnose.batch_states`) joined into one `PairStates`."""
    names = parts[0].keys() if parts else [n for n in REQUIRED if n != "row"]
    tensors = {n: torch.cat([p[n] for p in parts]) for n in names} if parts else {
        n: torch.zeros((0, hidden_size) if n in SUMS else (0,),
                       dtype=torch.int64 if n.endswith("tokens") else torch.float64)
        for n in names}  # fmt: skip
    tensors["row"] = torch.tensor(rows, dtype=torch.int64)
    meta = {"format": FORMAT, "hidden_size": str(hidden_size), "model": key.model,
            "model_name": key.model_name, "pairs": key.pairs, "tokens": key.tokens}  # fmt: skip
    return PairStates(tensors, meta)


def save_states(path: Path, states: PairStates) -> None:
    """Write `states` to `path` atomically: a temporary file in the same folder, renamed when
    whole, so a reader (another process of the same launch) never sees half a file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in states.tensors.items()}, tmp, states.meta)
        make_readable(tmp)  # safetensors 0.8 (and mkstemp) leave it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_states(path: Path, label: str) -> PairStates:
    """Read a states file; an unreadable one or one missing a tensor is an InputError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise InputError(f"{label} {path}: not a readable states file ({err})") from None
    missing = [k for k in REQUIRED if k not in tensors]
    if meta.get("format") != FORMAT or missing:
        raise InputError(
            f"{label} {path}: not an mmalign CHES states file (format "
            f"{meta.get('format')!r}, missing {', '.join(missing) or 'nothing'}); it is the "
            f"{STATES_FILE} that `mmalign data diagnose --out DIR` writes"
        )
    return PairStates(tensors, meta)


def check_states(states: PairStates, path: Path, label: str, key: StatesKey,
                 hidden_size: int) -> None:  # fmt: skip
    """Refuse states that were not computed from this model, tokenization and data: CHES from
    another model's hidden states would be silently wrong. The hidden size first, as it names
    the mismatch most plainly (another model, or a damaged file)."""
    fix = ("a damaged cache entry: delete the file and it is rebuilt" if label.startswith("cached")
           else f"pass the {STATES_FILE} of a run on this data with this model, or drop "
           f"{label} to compute the states")  # fmt: skip
    stated = states.meta.get("hidden_size")
    if states.hidden_size != hidden_size or stated != str(hidden_size):
        size = str(states.hidden_size) + ("" if stated == str(states.hidden_size)
                                          else f" (metadata: {stated})")  # fmt: skip
        raise InputError(
            f"{label} {path}: the states have hidden size {size}, but the model"
            f"{' ' + key.model_name if key.model_name else ''} has hidden size {hidden_size}; "
            f"they were computed by {states.meta.get('model_name') or 'another model'}: {fix}"
        )
    if key.model and states.meta.get("model") != key.model:
        raise InputError(
            f"{label} {path}: the states were computed by {states.meta.get('model_name')}, not "
            f"by {key.model_name} (weights key {states.meta.get('model')} != {key.model}): {fix}"
        )
    if states.meta.get("tokens") != key.tokens:
        raise InputError(f"{label} {path}: the states were computed with another tokenizer, "
                         f"chat template or image settings than the model's: {fix}")  # fmt: skip
    if states.meta.get("pairs") != key.pairs:
        raise InputError(
            f"{label} {path}: the states cover other pairs ({len(states)} of them) than the "
            "data diagnosed here (another data set, split, --max-samples or --max-length): "
            f"{fix}"
        )
    lengths = {k: int(t.shape[0]) for k, t in states.tensors.items()}
    if set(lengths.values()) != {len(states)}:
        raise InputError(f"{label} {path}: tensors of different lengths {json.dumps(lengths)}")
