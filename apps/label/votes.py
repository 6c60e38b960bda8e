"""Writing and withdrawing votes: the half of `store.Store` that changes the votes table.

`Store` inherits `VoteWriter`; the methods use its connections (`_tx`, `read`), clock,
`overlap` and lease and gold helpers. How a vote keeps `overlap` a guarantee and a retried
vote is stored once is told in `store.py`'s docstring.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from . import statements as stmt
from .tables import answers as answers_table
from .tables import votes

CHOICES = ("left", "right", "tie", "both_bad", "skip")
# fullmatched: with `match`, `$` also matches before a final newline ("abcdefgh\n" passed)
_VOTE_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_RACED = object()  # _undo_once: the vote was withdrawn by a concurrent undo


class VoteError(ValueError):
    """A vote the store refuses: unknown pair, bad choice, already voted, foreign vote id."""


class VoteConflict(VoteError):
    """The caller's own vote id, sent again for a different vote (another pair, choice, left
    image or answers): refused, nothing stored, the first vote stands. Not a retry, so not
    `duplicate`, which a client reads as "this vote is stored" and would lose the new one."""


@dataclass(frozen=True)
class _Sent:
    """What a vote send says; a retry must say the same as the stored vote (`decide_ms` is
    left out: a resend may measure it again)."""

    pair_id: str
    choice: str
    left_image: int
    answers: Mapping[str, str]


@dataclass(frozen=True)
class Ack:
    """The answer to a vote: `stored` (new), `duplicate` (this vote id was stored before and
    counts) or `undone` (this vote id was stored before, then withdrawn by an undo: it does
    not count, and this send stored nothing).

    A retried send (the same pair, choice, left image and answers: `_Sent`; otherwise
    `VoteConflict`) answers with what became of the vote it repeats. A retry that arrives
    after an undo (its first send was stored, the acknowledgement lost, then the annotator
    pressed undo) must not bring the vote back: the undo came later and stands. Nor may it
    be acknowledged as `duplicate`, which a client reads as "my vote is stored". To vote on
    the pair again, a client sends a new vote id (the page makes one for every pair shown).
    """

    status: str
    vote_id: str
    annotator: str
    pair_id: str


class VoteWriter:
    """record_vote and undo_last, mixed into `store.Store`, which provides what is declared
    here."""

    read: Engine
    overlap: int
    clock: Callable[[], float]
    _tx: Callable[[], AbstractContextManager[Connection]]
    _gold: Callable[[Connection, str], bool]
    _lease: Callable[[Connection, str, str, float], None]

    def record_vote(
        self,
        *,
        vote_id: str,
        annotator: str,
        pair_id: str,
        choice: str,
        left_image: int,
        decide_ms: int,
        answers: Mapping[str, str] | None = None,
    ) -> Ack:
        """Store one vote in one transaction; a repeated `vote_id` is acknowledged, not stored
        (`duplicate`, or `undone` when its vote was withdrawn since: `Ack`), when it repeats
        the stored vote; sent with other fields it is refused (`VoteConflict`).

        `annotator` must come from the authenticated session, never from the client.
        `answers` (criterion -> left/right/tie/both_bad, checked by `criteria.Criteria`) go
        to the `answers` table in the same transaction.
        """
        if not isinstance(vote_id, str) or not _VOTE_ID.fullmatch(vote_id):
            raise VoteError(f"vote_id must be 8-64 characters [A-Za-z0-9_-], got {vote_id!r}")
        if choice not in CHOICES:
            raise VoteError(f"choice must be one of {CHOICES}, got {choice!r}")
        if left_image not in (0, 1):
            raise VoteError(f"left_image must be 0 or 1, got {left_image!r}")
        if answers and any(v not in CHOICES[:-1] for v in answers.values()):
            raise VoteError(f"answers must be among {CHOICES[:-1]}, got {dict(answers)!r}")
        decide_ms = max(0, min(int(decide_ms), 86_400_000))
        sent = _Sent(pair_id, choice, left_image, dict(answers or {}))
        try:
            with self._tx() as conn:
                ack = self._insert_vote(conn, vote_id, annotator, sent, decide_ms)
                if answers and ack.status == "stored":
                    conn.execute(answers_table.insert(), [
                        {"vote_id": vote_id, "criterion": k, "choice": v}
                        for k, v in answers.items()
                    ])  # fmt: skip
                return ack
        except IntegrityError:
            # Two sends of one id raced past the lookup (on PostgreSQL when they lock different
            # pairs): the loser reads the winner's committed row, answers and all, and
            # compares with it there, so a race cannot turn a conflict into a duplicate.
            return self._existing(vote_id, annotator, sent)

    def _insert_vote(
        self, conn: Connection, vote_id: str, annotator: str, sent: _Sent, decide_ms: int
    ) -> Ack:
        pair_id, choice, left_image = sent.pair_id, sent.choice, sent.left_image
        mine = {"annotator": annotator, "pair_id": pair_id, "now": self.clock()}
        locked = conn.execute(stmt.LOCK_PAIR, mine).first()
        # The id is looked up after the pair's lock: on PostgreSQL (READ COMMITTED) a retry
        # that waited on the lock behind its first send sees that send's row here; looked up
        # before, it would find the annotator's vote on the pair but not its id.
        old = conn.execute(stmt.VOTE_BY_ID, {"vote_id": vote_id}).first()
        if old is not None:
            return _ack_existing(conn, old, annotator, sent)
        if locked is None:
            raise VoteError(f"unknown pair {pair_id!r}")
        if conn.execute(stmt.VOTED_ALREADY, mine).first() is not None:
            raise VoteError(f"{annotator} already voted on pair {pair_id} (undo it first)")
        if choice != "skip":  # a skip takes no place
            room = self.overlap - conn.execute(stmt.OTHERS_LEASES, mine).scalar_one()
            if self._gold(conn, pair_id):  # every annotator answers a gold pair
                room = 2**31 - 1
            if conn.execute(stmt.COUNT_VOTE, {"voted_pair": pair_id, "room": room}).rowcount != 1:
                raise VoteError(
                    f"pair {pair_id} already has its {self.overlap} vote(s) or they are "
                    "reserved for other annotators"
                )
        conn.execute(
            stmt.INSERT_VOTE,
            {"vote_id": vote_id, "pair_id": pair_id, "annotator": annotator, "choice": choice,
             "left_image": left_image, "decide_ms": decide_ms, "created_at": time.time(),
             "undone": 0, "undone_at": None},
        )  # fmt: skip
        conn.execute(stmt.DROP_LEASE, mine)  # the place is a vote now, or given back (skip)
        return Ack("stored", vote_id, annotator, pair_id)

    def _existing(self, vote_id: str, annotator: str, sent: _Sent) -> Ack:
        with self.read.begin() as conn:
            old = conn.execute(stmt.VOTE_BY_ID, {"vote_id": vote_id}).first()
            if old is None:
                raise VoteError(f"vote {vote_id} could not be stored")
            return _ack_existing(conn, old, annotator, sent)

    def undo_last(self, annotator: str) -> str | None:
        """Withdraw the annotator's most recent vote; returns its pair id (None: nothing to undo).

        The row stays, marked undone, so the log of what happened is complete; exports
        and statistics leave undone votes out. The pair is leased back to the annotator,
        who is shown it again: their place stays theirs while they vote again.
        """
        while (pair_id := self._undo_once(annotator)) is _RACED:
            pass  # another undo of this annotator took that vote: undo the one before it
        return pair_id

    def _undo_once(self, annotator: str) -> Any:
        """undo_last's transaction: the pair id, None, or _RACED when another undo of the same
        annotator (a second tab) withdrew the vote while this one waited on the pair's lock
        (PostgreSQL: the vote was read before the lock)."""
        with self._tx() as conn:
            row = conn.execute(
                select(votes)
                .where(votes.c.annotator == annotator, votes.c.undone == 0)
                .order_by(votes.c.seq.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            now = self.clock()
            mine = {"annotator": annotator, "pair_id": row.pair_id, "now": now}
            n_votes = conn.execute(stmt.LOCK_PAIR, mine).scalar_one()
            withdraw = votes.update().where(votes.c.seq == row.seq, votes.c.undone == 0)
            if conn.execute(withdraw.values(undone=1, undone_at=now)).rowcount != 1:
                return _RACED
            if row.choice != "skip":
                conn.execute(stmt.UNCOUNT_VOTE, {"voted_pair": row.pair_id})
                n_votes -= 1
            # an undone skip freed no place: lease one back only if the pair has room
            others = conn.execute(stmt.OTHERS_LEASES, mine).scalar_one()
            if n_votes + others < self.overlap or self._gold(conn, row.pair_id):
                self._lease(conn, annotator, row.pair_id, now)
            return str(row.pair_id)


def _ack_existing(conn: Connection, old: Any, annotator: str, sent: _Sent) -> Ack:
    """The answer to a send whose id is stored (`old`): refused when another annotator's,
    `VoteConflict` when the caller's for a different vote, else `duplicate` or `undone`."""
    # Another annotator's id is refused before any field is compared: the answer is the
    # same whatever the send says, so it cannot be used to probe that vote's pair or choice.
    if old.annotator != annotator:  # never reveal or touch another annotator's vote
        raise VoteError("vote id already used by another annotator")
    differ = [k for k in ("pair_id", "choice", "left_image") if getattr(old, k) != getattr(sent, k)]
    if not differ:  # the answers are read only for a send that could be a retry
        stored = conn.execute(stmt.ANSWERS_OF, {"vote_id": old.vote_id}).all()
        if {str(r.criterion): str(r.choice) for r in stored} != dict(sent.answers):
            differ.append("answers")
    if differ:
        raise VoteConflict(
            f"conflict: vote id {old.vote_id} was used before for a different vote "
            f"({', '.join(differ)} differ); nothing was stored and the first vote stands: "
            "send a new vote id for a new vote"
        )
    status = "undone" if old.undone else "duplicate"  # an undone vote stays undone (`Ack`)
    return Ack(status, old.vote_id, old.annotator, old.pair_id)
