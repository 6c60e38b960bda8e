"""Rates of the VLM evaluations (`mmalign eval vlm`): a share with its standard error and n,
and the line naming the items drawn that no rate counts."""

from __future__ import annotations

from typing import Any


def rate(name: str, hits: list[bool]) -> dict[str, float | int | None]:
    """The share of `hits`, its standard error and n. A group with no rows has no rate: None
    (JSON null), not 0.0, which would read as, say, a perfect 0% attack success rate."""
    n = len(hits)
    if n == 0:
        return {name: None, f"{name}_se": None, f"{name}_n": 0}
    p = sum(hits) / n
    return {name: p, f"{name}_se": (p * (1 - p) / n) ** 0.5, f"{name}_n": n}


def format_rate(results: dict[str, Any], name: str) -> str:
    """`name` of `results` as printed ("12.50% (+- 1.20%, n=80)"), "n/a (n=0)" for a group
    with no rows (`rate` gives None)."""
    value, n = results.get(name), results.get(f"{name}_n")
    if value is None:
        return f"n/a (n={n or 0})"
    se = results.get(f"{name}_se")
    spread = "" if se is None else f" (+- {se:.2%}, n={n})"
    return f"{value:.2%}{spread}"


# why an item drawn is counted by no rate, as `dropped_line` prints it
DROP_NOTES = {
    "no_similar_image": "no held-out image differs from the shown one in just the asked "
    "attribute, so the question has no retrieved answer",
    "unscored_source": "a row neither forbidden nor benign",
    "not_built": "the builder returned fewer rows than drawn",
}


def dropped_line(results: dict[str, Any]) -> str | None:
    """The line of the `dropped` counts of `results` (reason -> count), or None where none
    was: "12 of 40 items drawn dropped, rates over 28: no_similar_image 12 (...)"."""
    dropped = {k: v for k, v in (results.get("dropped") or {}).items() if v}
    if not dropped:
        return None
    reasons = "; ".join(
        f"{reason} {count}" + (f" ({DROP_NOTES[reason]})" if reason in DROP_NOTES else "")
        for reason, count in sorted(dropped.items(), key=lambda kv: -kv[1])
    )
    return (f"{sum(dropped.values())} of {results.get('asked')} items drawn dropped, rates over "
            f"{results.get('n')}: {reasons}")  # fmt: skip
