"""Counts in the summaries commands print: `plural(1, "step")` is "1 step", not "1 steps"."""

from __future__ import annotations


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`n` and `noun`, in the plural unless `n` is 1 (`nouns`: an irregular plural; default
    `noun` + "s"). Only the noun's last word takes the plural: "1 user embedding", "2 user
    embeddings"."""
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"
