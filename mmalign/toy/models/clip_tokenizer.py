"""A real CLIP byte-level BPE tokenizer for the toy world, built from a word list.

The vocabulary has CLIP's layout (the 256 byte symbols, the same with the
end-of-word marker `</w>`, then one entry per merge, then the two special
tokens), and merges.txt has CLIP's format, so `CLIPTokenizer.from_pretrained`
loads it exactly as it loads SD1.5's tokenizer. The merges spell out every
word of the toy grammar, so each becomes one token; any other text still
tokenizes, byte by byte.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode symbols."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: repeatedly merge the lowest-ranked pair."""
    while len(symbols) > 1:
        pairs = [(ranks.get(p, len(ranks)), i) for i, p in enumerate(itertools.pairwise(symbols))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols = [*symbols[:i], symbols[i] + symbols[i + 1], *symbols[i + 2 :]]
    return symbols


def word_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Merges that turn each word (with `</w>`) into a single symbol.

    Each word is first encoded with the merges learned so far, then its
    remaining symbols are joined left to right; new merges rank last, so the
    earlier words still encode the same way.
    """
    table = bytes_to_unicode()
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted(set(w.lower() for w in words), key=lambda w: (len(w), w)):
        chars = [table[b] for b in word.encode("utf-8")]
        chars[-1] += "</w>"
        symbols = _apply_merges(chars, ranks)
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            symbols = [symbols[0] + symbols[1], *symbols[2:]]
    return merges


def save_clip_tokenizer(words: Iterable[str], out_dir: str | Path, max_length: int) -> Path:
    """Write vocab.json, merges.txt and the tokenizer config of a CLIP tokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = list(bytes_to_unicode().values())
    merges = word_merges(words)
    vocab_list = base + [s + "</w>" for s in base] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_list))}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (out / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer(
        vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"), model_max_length=max_length
    )
    tokenizer.save_pretrained(out)
    return out
