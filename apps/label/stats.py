"""Statistics for the admin page: counts, agreement, position bias, time per vote.

Agreement is measured on what annotators preferred, not on the side they clicked:
each vote becomes `image_0`, `image_1` or `tie` using the recorded left/right order, so
two annotators who saw the pair in opposite orders and liked the same image agree.
Skips carry no judgement and are left out of agreement.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

CATEGORIES = ("image_0", "image_1", "tie")  # "both bad" votes: counted, not in agreement


def preferred(choice: str, left_image: int) -> str | None:
    """The pair image a vote prefers (`image_0`/`image_1`), `tie`, or None for a skip."""
    if choice == "tie":
        return "tie"
    if choice == "left":
        return f"image_{left_image}"
    if choice == "right":
        return f"image_{1 - left_image}"
    return None


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa (Cohen 1960): (p_o - p_e) / (1 - p_e) for two raters on the same items.

    None for fewer than 2 items; 1.0 when both raters use one category and agree
    (p_e = 1, where the formula is 0/0).
    """
    if len(a) != len(b):
        raise ValueError(f"rating lists differ in length: {len(a)} vs {len(b)}")
    n = len(a)
    if n < 2:
        return None
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in set(ca) | set(cb)) / (n * n)
    if p_e == 1.0:
        return 1.0 if p_o == 1.0 else 0.0
    return (p_o - p_e) / (1 - p_e)


def fleiss_kappa(items: Iterable[Mapping[str, int]]) -> float | None:
    """Fleiss' kappa (Fleiss 1971) over items rated by >= 2 raters.

    Items may have different numbers of raters n_i: the per-item agreement is
    P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)), P_bar its mean, and the chance
    agreement P_e = sum_j p_j^2 with p_j the share of all ratings in category j
    (with a constant n this is exactly Fleiss' formula). None for < 2 items.
    """
    rated = [dict(c) for c in items if sum(c.values()) >= 2]
    if len(rated) < 2:
        return None
    per_item, totals = [], Counter()
    for counts in rated:
        n_i = sum(counts.values())
        per_item.append((sum(v * v for v in counts.values()) - n_i) / (n_i * (n_i - 1)))
        totals.update(counts)
    total = sum(totals.values())
    p_bar = sum(per_item) / len(per_item)
    p_e = sum((v / total) ** 2 for v in totals.values())
    if p_e == 1.0:
        return 1.0 if p_bar == 1.0 else 0.0
    return (p_bar - p_e) / (1 - p_e)


def summarize(votes: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything on the admin page from the list of votes that are not undone."""
    by_annotator: dict[str, list[dict[str, Any]]] = defaultdict(list)
    ratings: dict[str, dict[str, str]] = defaultdict(dict)  # pair -> annotator -> category
    for v in votes:
        by_annotator[v["annotator"]].append(v)
        category = preferred(v["choice"], v["left_image"])
        if category is not None:
            ratings[v["pair_id"]][v["annotator"]] = category

    annotators = []
    for name, vs in sorted(by_annotator.items()):
        choices = Counter(v["choice"] for v in vs)
        sided = choices["left"] + choices["right"]
        times = [v["decide_ms"] / 1000 for v in vs]
        annotators.append(
            {
                "annotator": name,
                "votes": len(vs),
                "left": choices["left"], "right": choices["right"],
                "tie": choices["tie"], "both_bad": choices["both_bad"],
                "skip": choices["skip"],
                "left_share": choices["left"] / sided if sided else None,
                "median_s": statistics.median(times) if times else None,
                "mean_s": statistics.fmean(times) if times else None,
            }
        )  # fmt: skip

    pairs_kappa = []
    names = sorted(by_annotator)
    for x, y in itertools.combinations(names, 2):
        shared = [p for p, r in ratings.items() if x in r and y in r]
        if len(shared) < 2:
            continue
        kappa = cohen_kappa([ratings[p][x] for p in shared], [ratings[p][y] for p in shared])
        pairs_kappa.append({"annotator_a": x, "annotator_b": y, "shared": len(shared),
                            "cohen_kappa": kappa})  # fmt: skip

    overlapping = [Counter(r.values()) for r in ratings.values() if len(r) >= 2]
    all_choices = Counter(v["choice"] for v in votes)
    sided = all_choices["left"] + all_choices["right"]
    times = [v["decide_ms"] / 1000 for v in votes]
    return {
        "votes": len(votes),
        "annotators": annotators,
        "cohen": pairs_kappa,
        "fleiss_kappa": fleiss_kappa(overlapping),
        "overlapping_pairs": len(overlapping),
        "left_share": all_choices["left"] / sided if sided else None,
        "median_s": statistics.median(times) if times else None,
    }
