"""What an annotator does, for the user of an authenticated session: get the next pair (with
a random left side) and vote (the reply carries the next pair).

Shared by the Gradio API (`app.py`) and the fast routes outside Gradio's queue
(`fast_routes.py`); neither takes a user name from the client, both pass the session's.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from typing import Any

from .criteria import DEFAULT, Criteria, CriteriaError, stored_criteria
from .store import Store, VoteError


class Labeling:
    """The vote path over one store; thread-safe (the store is, the coin has a lock)."""

    def __init__(
        self, store: Store, *, seed: int | None = None, criteria: Criteria | None = None
    ) -> None:
        self.store = store
        self.criteria = stored_criteria(store) if criteria is None else criteria
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def coin(self) -> int:
        """Which pair image goes on the left (0 or 1): random, so position bias averages out."""
        with self._rng_lock:
            return self._rng.randrange(2)

    def next_for(self, user: str) -> dict[str, Any]:
        """`user`'s next pair as plain data ({} when the queue is empty); `user` is the
        authenticated session's name, never a name the client sent."""
        pair = self.store.next_pair(user)
        if pair is None:
            return {}
        return {"pair_id": pair.pair_id, "prompt": pair.prompt, "left_image": self.coin()}

    def vote(
        self, user: str, *, vote_id: str, pair_id: str, choice: str, left_image: int,
        decide_ms: int, answers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Store `user`'s vote (VoteError when refused); returns only after it is committed,
        with the next pair in the same reply: one round trip per vote instead of two.
        `answers`: criterion -> answer, one per question of the run (`criteria.py`)."""
        try:
            full = self.criteria.check_answers(choice, answers)
        except CriteriaError as err:
            raise VoteError(str(err)) from err
        ack = self.store.record_vote(
            vote_id=vote_id, annotator=user, pair_id=pair_id, choice=choice,
            left_image=left_image, decide_ms=decide_ms,
            answers=full if self.criteria != DEFAULT else None,
        )  # fmt: skip
        return {"status": ack.status, "vote_id": ack.vote_id, "pair_id": ack.pair_id,
                "annotator": ack.annotator, "next": self.next_for(user)}  # fmt: skip
