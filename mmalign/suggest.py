"""'Did you mean ...?' for mistyped names (config keys, loss names, loss arguments)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate `name` most likely meant: one that differs only in case first (difflib is
    case-sensitive, so `H03` came out as `t03`), else difflib's closest."""
    options = list(candidates)
    same = [c for c in options if c.lower() == name.lower()]
    if same:
        return same[0]
    matches = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return matches[0] if matches else None


MAX_LISTED = 24  # candidates a message lists when none is close


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A sentence suggesting the closest candidate, or listing them all."""
    options = sorted(candidates)
    guess = closest(name, options)
    if guess is not None:
        return f"did you mean '{guess}'?"
    if len(options) > MAX_LISTED:  # e.g. the scorers: ~180 names, most of them toy users
        shown = ", ".join(options[:MAX_LISTED])
        return f"valid: {shown}, ... ({len(options)} in all)"
    return "valid: " + (", ".join(options) if options else "(none)")
