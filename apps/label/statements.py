"""The statements of the vote path, built once with bound parameters.

SQLAlchemy caches their compiled form, so a call pays for running them, not for building a
query and looking up its compiled form. Measured on this machine, one thread: next_pair
0.69-1.06 -> 0.24-0.27 ms, record_vote 1.14-1.57 -> 0.43 ms; 32 threads alternating the two:
303-387 -> 845-892 votes/s.

`overlap` is enforced in the write transactions (`store.py`): each locks the pair's row
first (`LOCK_PAIR`: FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises
writers and drops the clause), so the counts read after it see every earlier vote and lease
of that pair, and the vote's `COUNT_VOTE` only adds a vote while there is room (its row
count says whether it did).
"""

from __future__ import annotations

from sqlalchemy import bindparam, delete, func, select, update

from .tables import answers, gold, leases, pairs, votes

_MINE = select(votes.c.pair_id).where(
    votes.c.annotator == bindparam("annotator"), votes.c.undone == 0
)
# Gold pairs (`goldmix.py`) are not in the regular queue: they are mixed in at a rate.
_OPEN = (
    (pairs.c.n_votes < bindparam("overlap"))
    & pairs.c.pair_id.not_in(_MINE)
    & pairs.c.pair_id.not_in(select(gold.c.pair_id))
)
# Pairs whose free places are all reserved by other annotators' live leases. Leases are
# few (one per annotator), so this is computed once per query, not once per pair.
_RESERVED = (
    select(leases.c.pair_id)
    .join(pairs, pairs.c.pair_id == leases.c.pair_id)
    .where(leases.c.annotator != bindparam("annotator"), leases.c.expires_at > bindparam("now"))
    .group_by(leases.c.pair_id, pairs.c.n_votes)
    .having(pairs.c.n_votes + func.count() >= bindparam("overlap"))
)
MAX_SEQ = select(func.max(pairs.c.seq))
# Each annotator walks the pairs from their own starting point: (seq + shift) % n.
NEXT_PAIR = (
    select(pairs)
    .where(_OPEN & pairs.c.pair_id.not_in(_RESERVED))
    .order_by(pairs.c.n_votes, (pairs.c.seq + bindparam("shift")) % bindparam("n"))
    .limit(1)
)
# The pair the annotator holds a live lease on (and has not voted on): shown again as is.
MY_LEASE = (
    select(pairs)
    .join(leases, leases.c.pair_id == pairs.c.pair_id)
    .where(
        leases.c.annotator == bindparam("annotator"),
        leases.c.expires_at > bindparam("now"),
        pairs.c.pair_id.not_in(_MINE),
    )
    .limit(1)
)
COUNT_OPEN = select(func.count()).select_from(pairs).where(_OPEN)
COUNT_MINE = (
    select(func.count())
    .select_from(votes)
    .where(votes.c.annotator == bindparam("annotator"), votes.c.undone == 0)
)
VOTE_BY_ID = select(votes).where(votes.c.vote_id == bindparam("vote_id"))
# A vote's stored answers: a resent id is a retry only if they are the send's (`votes.py`).
ANSWERS_OF = select(answers.c.criterion, answers.c.choice).where(
    answers.c.vote_id == bindparam("vote_id")
)
LOCK_PAIR = select(pairs.c.n_votes).where(pairs.c.pair_id == bindparam("pair_id")).with_for_update()
OTHERS_LEASES = (
    select(func.count())
    .select_from(leases)
    .where(
        leases.c.pair_id == bindparam("pair_id"),
        leases.c.annotator != bindparam("annotator"),
        leases.c.expires_at > bindparam("now"),
    )
)
VOTED_ALREADY = select(votes.c.vote_id).where(
    votes.c.annotator == bindparam("annotator"),
    votes.c.pair_id == bindparam("pair_id"),
    votes.c.undone == 0,
)
INSERT_VOTE = votes.insert()
# Adds the vote only while the pair has room (`room` = overlap minus others' live leases):
# a row count of 0 means the pair is full, whatever raced with this transaction.
COUNT_VOTE = (
    update(pairs)
    .where(pairs.c.pair_id == bindparam("voted_pair"))  # a column's name is reserved here
    .where(pairs.c.n_votes < bindparam("room"))
    .values(n_votes=pairs.c.n_votes + 1)
)
UNCOUNT_VOTE = (
    update(pairs)
    .where(pairs.c.pair_id == bindparam("voted_pair"))
    .values(n_votes=pairs.c.n_votes - 1)
)
INSERT_LEASE = leases.insert()
DROP_MY_LEASES = delete(leases).where(leases.c.annotator == bindparam("annotator"))
DROP_LEASE = delete(leases).where(
    leases.c.annotator == bindparam("annotator"), leases.c.pair_id == bindparam("pair_id")
)
