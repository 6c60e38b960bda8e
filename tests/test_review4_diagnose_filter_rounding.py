"""`keep_lowest=F` keeps round(F * n) pairs rounded half up: Python's `round` rounds halves to
even, so 0.25 of 10 pairs kept 2 (the same as 0.15 of 10) and 0.45 of 10 kept 4 (as 0.35)."""

from __future__ import annotations

import pytest

from mmalign.data.pair_filter import parse_filter


@pytest.mark.parametrize(
    ("fraction", "n", "kept"),
    [
        (0.15, 10, 2),
        (0.25, 10, 3),
        (0.35, 10, 4),
        (0.45, 10, 5),
        (0.05, 50, 3),
        (0.05, 70, 4),
        (0.05, 30, 2),
        (0.05, 10, 1),
        (0.01, 10, 1),
        (1.0, 7, 7),
        (0.5, 3, 2),
        (0.35, 90, 32),
    ],
)
def test_keep_lowest_rounds_a_half_up(fraction, n, kept):
    scores = [float(n - i) for i in range(n)]  # the lowest scores are the last rows
    got = parse_filter(f"ln_ches:keep_lowest={fraction}").keep(scores)
    assert got == list(range(n - kept, n))


def test_keep_lowest_ties_break_by_row_order_and_nan_is_never_kept():
    f = parse_filter("ches:keep_lowest=0.5")
    assert f.keep([1.0, 1.0, float("nan"), 1.0, 1.0]) == [0, 1]
    assert f.keep([float("nan")] * 3) == []
    assert f.keep([]) == []
