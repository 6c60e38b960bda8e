"""Votes and pairs in the labeling database (tables in `tables`, connections in `engines`).

Every vote is one transaction and carries a client-generated id (`vote_id`, the primary
key of its row), so a submit that is retried after a lost acknowledgement is stored once
(`duplicate`; `undone` when the vote was withdrawn since, and then the retry stores nothing:
`votes.Ack`). An id sent again with other fields is no retry: it is refused
(`votes.VoteConflict`), decided in the same transaction, or after the unique key's violation.
A vote is acknowledged only after its transaction commits. Inside one process the writers
queue on a lock before SQLite's own: SQLite's busy handler retries with sleeps of up to
100 ms, so 32 threads contending on the database lock starve each other (p99 in seconds
measured without the lock), while a lock hands the database over as soon as it is free.

`overlap` is a guarantee, not a hint: `next_pair` reserves the pair it hands out (a lease
of `lease_s` seconds, one per annotator), a pair is handed out only while its votes plus
other annotators' live leases leave room, and a vote is stored only while there is room
for it (others' live leases count as taken), checked in the vote's own transaction. So a
pair never gets more than `overlap` votes (skips do not count), and an annotator who votes
within their lease always has a place.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select, text

from . import goldmix
from . import statements as stmt
from .engines import dialect_insert, make_engine
from .tables import metadata, pairs, settings, votes
from .votes import CHOICES, Ack, VoteConflict, VoteError, VoteWriter

__all__ = ["CHOICES", "Ack", "Pair", "Store", "VoteConflict", "VoteError", "pair_id_for"]

LEASE_S = 600.0  # how long a handed-out pair stays reserved for its annotator
# Reservations lost to other annotators before `next_pair` gives up: each loss means another
# annotator took a place, so this only bounds a pathological race.
_RESERVE_TRIES = 32
_DDL_LOCK = 0x6D6D616C  # PostgreSQL advisory lock key held while creating the tables


@dataclass(frozen=True)
class Pair:
    pair_id: str
    prompt: str
    image_0: str
    image_1: str
    source: str


def pair_id_for(prompt: str, image_0: bytes, image_1: bytes) -> str:
    """A content id: importing the same dataset twice adds no pairs."""
    h = hashlib.sha256(prompt.encode())
    h.update(hashlib.sha256(image_0).digest())
    h.update(hashlib.sha256(image_1).digest())
    return h.hexdigest()[:24]


class Store(VoteWriter):
    """The labeling database. Thread-safe: every method opens its own connection."""

    def __init__(
        self, db: str | Path, *, overlap: int | None = None, lease_s: float = LEASE_S,
        clock: Callable[[], float] = time.time, gold_rate: float | None = None,
    ) -> None:  # fmt: skip
        if lease_s <= 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s}")
        self.url = str(db)
        self.lease_s = float(lease_s)
        self.clock = clock  # wall clock: leases are shared by every server on the database
        self.write, self.read = make_engine(db)
        # SQLite has one writer at a time anyway; PostgreSQL takes row locks, no queue needed.
        self._write_lock = threading.Lock() if self.write.dialect.name == "sqlite" else None
        if overlap is not None and overlap < 1:  # checked before it is kept: a bad value
            raise ValueError(f"overlap (annotators per pair) must be >= 1, got {overlap}")
        self._create_tables()
        if overlap is not None:
            self.set_setting("overlap", str(overlap))
        self.overlap = int(self.get_setting("overlap", "1"))
        if self.overlap < 1:
            raise ValueError(f"overlap (annotators per pair) must be >= 1, got {self.overlap}")
        if gold_rate is not None:  # share of each queue that is gold pairs (`goldmix.py`)
            self.set_setting("gold_rate", str(goldmix.check_rate(gold_rate)))
        self.gold_rate = goldmix.check_rate(float(self.get_setting("gold_rate", "0.1") or 0.1))
        self._gold_checked, self._has_gold = -float("inf"), False
        self._gold_key_bytes: bytes | None = None

    def close(self) -> None:
        self.write.dispose()
        if self.read is not self.write:
            self.read.dispose()

    def _create_tables(self) -> None:
        """Create missing tables. On PostgreSQL servers starting at once on an empty database
        would race on CREATE TABLE (a unique violation in the catalog): a transaction-scoped
        advisory lock lets one create them while the others wait, then find them."""
        with self._tx() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK})
            metadata.create_all(conn)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        if self._write_lock is None:
            with self.write.begin() as conn:
                yield conn
            return
        with self._write_lock, self.write.begin() as conn:
            yield conn

    # ------------------------------------------------------------------ settings

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with self.read.begin() as conn:
            row = conn.execute(select(settings.c.value).where(settings.c.key == key)).first()
        return default if row is None else row[0]

    def set_setting(self, key: str, value: str) -> None:
        with self._tx() as conn:  # one statement: two servers starting at once both succeed
            row = dialect_insert(conn, settings).values(key=key, value=value)
            conn.execute(row.on_conflict_do_update(index_elements=["key"], set_={"value": value}))

    def setting_once(self, key: str, make: Callable[[], str]) -> str:
        """The value of `key`, set to `make()` first if it has none; every caller, however
        many race, gets the value that was stored first."""
        value = self.get_setting(key)
        if value is None:
            with self._tx() as conn:
                row = dialect_insert(conn, settings).values(key=key, value=make())
                conn.execute(row.on_conflict_do_nothing(index_elements=["key"]))
            value = self.get_setting(key)
        assert value is not None
        return value

    # --------------------------------------------------------------------- pairs

    def add_pairs(self, rows: Iterable[Pair]) -> int:
        """Insert pairs (one transaction); pairs already present are left as they are."""
        added = 0
        now = time.time()
        with self._tx() as conn:
            known = set(conn.execute(select(pairs.c.pair_id)).scalars())
            for p in rows:
                if p.pair_id in known:
                    continue
                known.add(p.pair_id)
                # another server importing the same data at once: its row stands, not an error
                done = conn.execute(
                    dialect_insert(conn, pairs)
                    .values(
                        pair_id=p.pair_id,
                        prompt=p.prompt,
                        image_0=p.image_0,
                        image_1=p.image_1,
                        source=p.source,
                        n_votes=0,
                        created_at=now,
                    )
                    .on_conflict_do_nothing(index_elements=["pair_id"])
                    .returning(pairs.c.pair_id)  # a row back: this call added the pair
                )
                added += done.first() is not None
        return added

    def get_pair(self, pair_id: str) -> Pair | None:
        with self.read.begin() as conn:
            row = conn.execute(select(pairs).where(pairs.c.pair_id == pair_id)).first()
        return None if row is None else _pair(row)

    def count_pairs(self) -> int:
        with self.read.begin() as conn:
            return int(conn.execute(select(func.count()).select_from(pairs)).scalar_one())

    def next_pair(self, annotator: str) -> Pair | None:
        """The annotator's next pair, reserved for them for `lease_s` seconds: the pair they
        hold a live lease on, else one they have not voted on that still has room.

        Pairs with the fewest votes come first; among those each annotator walks the
        pairs from their own starting point (a hash of the name), so concurrent
        annotators rarely race for the same pair (the loser of a race takes another).
        """
        offset = int(hashlib.sha256(annotator.encode()).hexdigest()[:8], 16)
        for _ in range(_RESERVE_TRIES):
            now = self.clock()
            args = {"annotator": annotator, "overlap": self.overlap, "now": now}
            with self.read.begin() as conn:
                held = conn.execute(stmt.MY_LEASE, args).first()
                if held is not None:
                    return _pair(held)
                n = int(conn.execute(stmt.MAX_SEQ).scalar_one() or 0)
                if n == 0:
                    return None
                shift = n - 1 - offset % n
                row = conn.execute(stmt.NEXT_PAIR, {**args, "shift": shift, "n": n}).first()
                if row is not None and self.gold_rate > 0 and self._gold_on():  # while regular left
                    k = conn.execute(goldmix.COUNT_MY_VOTES, args).scalar_one()
                    if goldmix.draw_gold(annotator, int(k), self.gold_rate, self._gold_key()):
                        row = conn.execute(goldmix.NEXT_GOLD, {**args, "shift": shift, "n": n}
                                           ).first() or row  # fmt: skip
            if row is None:
                return None
            if self._reserve(annotator, row.pair_id, now):
                return _pair(row)
        return None

    def _reserve(self, annotator: str, pair_id: str, now: float) -> bool:
        """Lease `pair_id` to `annotator` if it still has room (False: another annotator
        took the place since it was read); the annotator's older lease is dropped."""
        mine = {"annotator": annotator, "pair_id": pair_id, "now": now}
        with self._tx() as conn:
            n_votes = conn.execute(stmt.LOCK_PAIR, mine).scalar_one_or_none()
            if n_votes is None or conn.execute(stmt.VOTED_ALREADY, mine).first() is not None:
                return False
            others = conn.execute(stmt.OTHERS_LEASES, mine).scalar_one()
            if n_votes + others >= self.overlap and not self._gold(conn, pair_id):
                return False
            self._lease(conn, annotator, pair_id, now)
        return True

    def _gold_on(self) -> bool:
        """Whether the database has gold pairs, read at most every GOLD_RECHECK_S seconds (a
        `gold add` from another process takes effect within that): a run without gold pairs
        pays no gold query on the vote path."""
        now = time.monotonic()
        if now - self._gold_checked > goldmix.GOLD_RECHECK_S:
            with self.read.begin() as conn:
                self._has_gold = conn.execute(goldmix.ANY_GOLD).first() is not None
            self._gold_checked = now
        return self._has_gold

    def _gold_key(self) -> bytes:
        """The key of the gold draw (`goldmix.GOLD_KEY`), made by the first server or command
        that needs it; every racing one reads the first one's back."""
        if self._gold_key_bytes is None:
            made = self.setting_once(goldmix.GOLD_KEY, lambda: secrets.token_hex(32))
            self._gold_key_bytes = bytes.fromhex(made)
        return self._gold_key_bytes

    def _gold(self, conn: Connection, pair_id: str) -> bool:
        """Whether `pair_id` is a gold pair (outside `overlap`)."""
        return self._gold_on() and _is_gold(conn, pair_id)

    def _lease(self, conn: Connection, annotator: str, pair_id: str, now: float) -> None:
        conn.execute(stmt.DROP_MY_LEASES, {"annotator": annotator})
        conn.execute(
            stmt.INSERT_LEASE,
            {"pair_id": pair_id, "annotator": annotator, "expires_at": now + self.lease_s},
        )

    def progress(self, annotator: str) -> tuple[int, int]:
        """(votes cast, size of the annotator's queue = votes cast + pairs still open)."""
        with self.read.begin() as conn:
            done = conn.execute(stmt.COUNT_MINE, {"annotator": annotator}).scalar_one()
            left = conn.execute(
                stmt.COUNT_OPEN, {"annotator": annotator, "overlap": self.overlap}
            ).scalar_one()
            gold_left = 0
            if self.gold_rate > 0 and left and self._gold_on():
                gold_left = conn.execute(goldmix.COUNT_GOLD_OPEN, {"annotator": annotator}
                                         ).scalar_one()  # fmt: skip
        # gold pairs still to come are in the total already: a gold vote advances the bar
        # like any other vote, so the bar does not tell which pairs were gold
        upcoming = goldmix.expected_gold(int(left), int(gold_left), self.gold_rate)
        return int(done), int(done) + int(left) + upcoming

    def votes_of(self, annotator: str, *, include_undone: bool = False) -> list[dict[str, Any]]:
        """One annotator's own votes, oldest first."""
        query = select(votes).where(votes.c.annotator == annotator)
        if not include_undone:
            query = query.where(votes.c.undone == 0)
        with self.read.begin() as conn:
            rows = conn.execute(query.order_by(votes.c.seq)).mappings().all()
        return [_plain(r) for r in rows]

    def all_votes(self) -> list[dict[str, Any]]:
        """Every vote not undone, with its pair's prompt and images, oldest first."""
        query = (
            select(votes, pairs.c.prompt, pairs.c.image_0, pairs.c.image_1)
            .join(pairs, pairs.c.pair_id == votes.c.pair_id)
            .where(votes.c.undone == 0)
            .order_by(votes.c.seq)
        )
        with self.read.begin() as conn:
            return [_plain(r) for r in conn.execute(query).mappings().all()]


def _is_gold(conn: Connection, pair_id: str) -> bool:
    return conn.execute(goldmix.IS_GOLD, {"pair_id": pair_id}).first() is not None


def _plain(row: Any) -> dict[str, Any]:
    return {str(k): v for k, v in row.items()}  # keys are str subclasses; JSON wants str


def _pair(row: Any) -> Pair:
    return Pair(row.pair_id, row.prompt, row.image_0, row.image_1, row.source)
