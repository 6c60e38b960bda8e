"""Annotator quality: gold accuracy, position bias, time per vote, agreement with the majority
(Cohen's kappa) and Krippendorff's alpha over the whole set; flags from two thresholds.

As in `stats.py`, agreement is on what a vote preferred (`image_0`, `image_1`, `tie`,
`both_bad`), read through the recorded left/right order, never on the side clicked.

- gold accuracy: the share of an annotator's votes on gold pairs (`gold.py`) whose
  preference is the gold answer (skips left out);
- position bias: the share of "left" among their left/right clicks (0.5 = none);
- agreement with the majority: Cohen's kappa (Cohen 1960) between the annotator's
  preferences and, on each pair they rated that at least two others rated, the others'
  majority preference (pairs where the others tie for the most votes are left out);
- Krippendorff's alpha (nominal; Krippendorff 2011, "Computing Krippendorff's
  Alpha-Reliability", Sec. C): alpha = 1 - D_o / D_e over every pair with two or more
  preferences, by its coincidence matrix (below), which allows any number of raters per pair.

Flags use gold accuracy and position bias only: an annotator with at least `min_gold` gold
votes and accuracy below `gold_floor`, or with at least `min_sided` left/right clicks and a
left share above `bias_ceiling` or below 1 - `bias_ceiling`, is flagged.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from .stats import cohen_kappa, preferred

GOLD_FLOOR = 0.7
BIAS_CEILING = 0.8
MIN_GOLD = 5
MIN_SIDED = 10
SETTINGS = {"gold_floor": GOLD_FLOOR, "bias_ceiling": BIAS_CEILING, "min_gold": MIN_GOLD,
            "min_sided": MIN_SIDED}  # fmt: skip
QUALITY_HEADERS = ("annotator", "votes", "gold votes", "gold accuracy", "left share",
                   "median s", "κ vs majority", "flagged")  # fmt: skip


def category(choice: str, left_image: int) -> str | None:
    """What a vote prefers: `image_0`, `image_1`, `tie`, `both_bad`, or None (a skip)."""
    return "both_bad" if choice == "both_bad" else preferred(choice, left_image)


def krippendorff_alpha(units: Iterable[Sequence[Hashable]]) -> float | None:
    """Nominal Krippendorff's alpha over units (pairs), each the list of values it got.

    Coincidences: o_ck = sum over units u with m_u >= 2 values of (number of ordered pairs
    of u's values (c, k), two different raters) / (m_u - 1); n_c = sum_k o_ck, n = sum_c n_c.
    alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k. None when fewer than
    two values can be paired or every value is one category (D_e = 0: undefined).
    """
    coincide: Counter[tuple[Hashable, Hashable]] = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                pairs = n_c * (n_c - 1) if c == k else n_c * n_k
                coincide[(c, k)] += pairs / (m - 1)
    totals: Counter[Hashable] = Counter()
    for (c, _k), o in coincide.items():
        totals[c] += o
    n = sum(totals.values())
    if n < 2:
        return None
    observed = sum(o for (c, k), o in coincide.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if expected == 0:
        return None
    return 1.0 - (n - 1) * observed / expected


def majority_kappa(
    ratings: Mapping[str, Mapping[str, str]], annotator: str
) -> tuple[float | None, int]:
    """(Cohen's kappa of `annotator` against the others' majority, items used); `ratings`
    is pair -> annotator -> preference."""
    mine, majority = [], []
    for by in ratings.values():
        if annotator not in by:
            continue
        others = Counter(v for a, v in by.items() if a != annotator)
        if sum(others.values()) < 2:
            continue
        (top, n_top), *rest = others.most_common()
        if rest and rest[0][1] == n_top:  # the others tie: no majority
            continue
        mine.append(by[annotator])
        majority.append(top)
    return cohen_kappa(mine, majority), len(mine)


def assess(
    votes: Iterable[Mapping[str, Any]], gold: Mapping[str, str], *,
    gold_floor: float = GOLD_FLOOR, bias_ceiling: float = BIAS_CEILING,
    min_gold: int = MIN_GOLD, min_sided: int = MIN_SIDED,
) -> dict[str, Any]:  # fmt: skip
    """Per-annotator quality and flags from votes not undone (`pair_id`, `annotator`,
    `choice`, `left_image`, `decide_ms`) and the gold answers (pair id -> preference)."""
    by_annotator: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    ratings: dict[str, dict[str, str]] = defaultdict(dict)
    for v in votes:
        by_annotator[v["annotator"]].append(v)
        pref = category(v["choice"], v["left_image"])
        if pref is not None:
            ratings[v["pair_id"]][v["annotator"]] = pref
    rows = []
    for name, vs in sorted(by_annotator.items()):
        on_gold = [v for v in vs if v["pair_id"] in gold and v["choice"] != "skip"]
        correct = sum(category(v["choice"], v["left_image"]) == gold[v["pair_id"]] for v in on_gold)
        clicks = Counter(v["choice"] for v in vs)
        sided = clicks["left"] + clicks["right"]
        kappa, items = majority_kappa(ratings, name)
        row = {
            "annotator": name, "votes": len(vs), "gold_votes": len(on_gold),
            "gold_correct": correct,
            "gold_accuracy": correct / len(on_gold) if on_gold else None,
            "left_share": clicks["left"] / sided if sided else None, "sided": sided,
            "median_s": statistics.median(v["decide_ms"] / 1000 for v in vs),
            "kappa_majority": kappa, "kappa_items": items,
        }  # fmt: skip
        reasons = []
        if len(on_gold) >= min_gold and row["gold_accuracy"] < gold_floor:
            reasons.append(f"gold accuracy {row['gold_accuracy']:.2f} < {gold_floor}")
        if sided >= min_sided and max(row["left_share"], 1 - row["left_share"]) > bias_ceiling:
            reasons.append(f"left share {row['left_share']:.2f} outside "
                           f"[{1 - bias_ceiling:.2f}, {bias_ceiling}]")  # fmt: skip
        row["flagged"] = bool(reasons)
        row["reasons"] = reasons
        rows.append(row)
    units = [list(by.values()) for by in ratings.values()]
    return {
        "annotators": rows,
        "flagged": [r["annotator"] for r in rows if r["flagged"]],
        "krippendorff_alpha": krippendorff_alpha(units),
        "alpha_pairs": sum(len(u) >= 2 for u in units),
        "gold_pairs": len(gold),
        "thresholds": {
            "gold_floor": gold_floor,
            "bias_ceiling": bias_ceiling,
            "min_gold": min_gold,
            "min_sided": min_sided,
        },
    }


def quality_settings(store: Any, **given: float | int | None) -> dict[str, Any]:
    """The thresholds: those `given` (not None), else the database's settings, else defaults."""
    out: dict[str, Any] = {}
    for key, default in SETTINGS.items():
        value = given.get(key)
        if value is None:
            value = store.get_setting(f"quality_{key}", str(default))
        out[key] = type(default)(float(value)) if isinstance(default, int) else float(value)
    if not 0 <= out["gold_floor"] <= 1 or not 0.5 <= out["bias_ceiling"] <= 1:
        raise ValueError(f"gold_floor must be in [0, 1] and bias_ceiling in [0.5, 1]: {out}")
    return out


def save_quality_settings(store: Any, **given: float | int | None) -> None:
    for key, value in quality_settings(store, **given).items():
        if given.get(key) is not None:
            store.set_setting(f"quality_{key}", str(value))


def team_quality(store: Any, **thresholds: Any) -> dict[str, Any]:
    """`assess` over the store's votes and gold answers."""
    from .gold import gold_answers

    return assess(store.all_votes(), gold_answers(store), **thresholds)


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else spec.format(value)


def quality_rows(quality: Mapping[str, Any]) -> list[list[Any]]:
    """The admin table (QUALITY_HEADERS) and the `label stats` table."""
    return [[r["annotator"], r["votes"], r["gold_votes"], _fmt(r["gold_accuracy"], "{:.2f}"),
             _fmt(r["left_share"], "{:.2f}"), _fmt(r["median_s"], "{:.2f}"),
             _fmt(r["kappa_majority"], "{:.3f}"),
             "; ".join(r["reasons"]) if r["flagged"] else ""]
            for r in quality["annotators"]]  # fmt: skip


def quality_table(quality: Mapping[str, Any]) -> str:
    """A plain text table for the terminal."""
    rows = [list(QUALITY_HEADERS), *[[str(c) for c in r] for r in quality_rows(quality)]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(QUALITY_HEADERS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([*lines, quality_summary(quality)])


def quality_summary(quality: Mapping[str, Any]) -> str:
    """One line under the table: Krippendorff's alpha over the set, gold pairs, flags."""
    alpha = _fmt(quality["krippendorff_alpha"], "{:.3f}")
    t = quality["thresholds"]
    return (f"Krippendorff's alpha (nominal): {alpha} over {quality['alpha_pairs']} pairs; "
            f"{quality['gold_pairs']} gold pairs; flagged (gold accuracy < {t['gold_floor']} "
            f"or left share outside [{1 - t['bias_ceiling']:.2f}, {t['bias_ceiling']}]): "
            f"{', '.join(quality['flagged']) or 'none'}")  # fmt: skip
