"""Filters over per-pair diagnostics: `ln_ches:keep_lowest=0.05`, `ches:max=12.5`.

Spelling: `METRIC:RULE=VALUE`. METRIC is a column of `mmalign data diagnose`'s table (`ches`,
`ln_ches`); RULE is `keep_lowest` (the fraction of pairs with the lowest scores, 0 < VALUE
<= 1, as a count rounded half up and at least one pair: Razin et al., "Unintentional
Unalignment", Section 6 kept the 5% lowest LN-CHES) or `max` (pairs scoring at most VALUE).
The same string is accepted by `mmalign data diagnose --filter` and by a recipe's
`data.filter`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

METRICS = ("ln_ches", "ches")
RULES = ("keep_lowest", "max")


@dataclass(frozen=True)
class PairFilter:
    metric: str
    rule: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}:{self.rule}={self.value:g}"

    def keep(self, scores: Sequence[float]) -> list[int]:
        """Indices of the kept pairs, in their original order. A NaN score is never kept."""
        finite = [i for i, s in enumerate(scores) if not math.isnan(s)]
        if self.rule == "max":
            return [i for i in finite if scores[i] <= self.value]
        # a half rounds up (`round` rounds it to even: 0.25 of 10 kept 2, as 0.15 did); the
        # tolerance absorbs float noise such as 0.35 * 90 = 31.499999999999996
        n = max(1, math.floor(self.value * len(finite) + 0.5 + 1e-9)) if finite else 0
        # ties broken by row order, so the same data always keeps the same rows
        lowest = sorted(finite, key=lambda i: (scores[i], i))[:n]
        return sorted(lowest)


def parse_filter(spec: str) -> PairFilter:
    """`METRIC:RULE=VALUE` -> PairFilter; a ValueError names the bad part (did-you-mean)."""
    from ..suggest import did_you_mean

    metric, sep, rest = spec.partition(":")
    rule, eq, raw = rest.partition("=")
    if not sep or not eq:
        raise ValueError(
            f"filter {spec!r}: expected METRIC:RULE=VALUE, e.g. ln_ches:keep_lowest=0.05"
        )
    metric, rule = metric.strip(), rule.strip()
    if metric not in METRICS:
        raise ValueError(
            f"filter {spec!r}: unknown metric {metric!r}; {did_you_mean(metric, METRICS)}"
        )
    if rule not in RULES:
        raise ValueError(f"filter {spec!r}: unknown rule {rule!r}; {did_you_mean(rule, RULES)}")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"filter {spec!r}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"filter {spec!r}: the value must be finite")
    if rule == "keep_lowest" and not 0 < value <= 1:
        raise ValueError(f"filter {spec!r}: keep_lowest is a fraction in (0, 1], got {value:g}")
    return PairFilter(metric, rule, value)
