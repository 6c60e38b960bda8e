"""Mixing gold pairs into every annotator's queue (the statements and the draw `store` uses).

A gold pair is a pair with a known answer (`gold.py` imports them). It is shown like any
other pair, to every annotator once, and never counts against `overlap`: the point is that
everyone answers it. Whether an annotator's next pair is gold is a draw, not a schedule
("every 10th pair" would tell the annotator which ones are gold): the k-th pair shown to
annotator A is gold when hash(A, k) / 2^32 < rate, while A has gold pairs left to see and
regular pairs left in the queue (gold pairs never pad an empty queue). The draw is a hash,
not a random generator, so a server restart or a second server draws the same; a keyed
hash (HMAC with `GOLD_KEY`, 32 random bytes made once per database and kept in it, like the
pseudonyms' key): annotator A knows A and k (their own votes, `/my_votes`), and with a plain
hash of the two could tell every gold pair before it is shown, answer those with care and
click the rest at random without ever being flagged.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import bindparam, func, select

from .tables import gold, pairs, votes

GOLD_RATE = 0.1  # default share of an annotator's pairs that are gold
GOLD_KEY = "gold_key"  # the setting holding the draw's key (hex)

_MINE = select(votes.c.pair_id).where(
    votes.c.annotator == bindparam("annotator"), votes.c.undone == 0
)
GOLD_RECHECK_S = 5.0  # how often a server looks again whether the database has gold pairs
ANY_GOLD = select(gold.c.pair_id).limit(1)
IS_GOLD = select(gold.c.pair_id).where(gold.c.pair_id == bindparam("pair_id"))
# The annotator's next gold pair: one they have not voted on, walked from their own start.
NEXT_GOLD = (
    select(pairs)
    .join(gold, gold.c.pair_id == pairs.c.pair_id)
    .where(pairs.c.pair_id.not_in(_MINE))
    .order_by((pairs.c.seq + bindparam("shift")) % bindparam("n"))
    .limit(1)
)
COUNT_GOLD_OPEN = select(func.count()).select_from(gold).where(gold.c.pair_id.not_in(_MINE))
COUNT_MY_VOTES = (
    select(func.count())
    .select_from(votes)
    .where(votes.c.annotator == bindparam("annotator"), votes.c.undone == 0)
)


def draw_gold(annotator: str, k: int, rate: float, key: bytes) -> bool:
    """Whether the `k`-th pair shown to `annotator` (k = their votes so far) is gold; `key`:
    the database's secret (`GOLD_KEY`)."""
    if rate <= 0:
        return False
    digest = hmac.new(key, f"gold:{annotator}:{k}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < rate


def expected_gold(regular_left: int, gold_left: int, rate: float) -> int:
    """Gold pairs still to come in a queue with `regular_left` regular pairs: counted in the
    progress bar's total ahead of time, so a gold vote advances the bar like any vote."""
    if rate <= 0 or regular_left <= 0:
        return 0
    if rate >= 1:
        return gold_left
    return min(gold_left, round(regular_left * rate / (1 - rate)))


def check_rate(rate: float) -> float:
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"gold rate must be in [0, 1), got {rate}")
    return rate
