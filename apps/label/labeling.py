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
        _check_types(vote_id=vote_id, pair_id=pair_id, choice=choice, left_image=left_image,
                     decide_ms=decide_ms, answers=answers)  # fmt: skip
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


def whole_number(value: Any) -> int:
    """`value` as an int when it is one: an int (not a bool), a float with no fraction (JSON
    clients may send 1.0) or a string of digits; ValueError otherwise. `int()` alone truncated
    0.5 to 0, storing a vote for a left side the client never named."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"not a whole number: {value!r}")


def _check_types(*, vote_id: Any, pair_id: Any, choice: Any, left_image: Any, decide_ms: Any,
                 answers: Any) -> None:  # fmt: skip
    """VoteError for a field of the wrong type: API clients send any JSON, and a list that
    reached the database came back as its driver's error, SQL included."""
    for name, value in (("vote_id", vote_id), ("pair_id", pair_id), ("choice", choice)):
        if not isinstance(value, str):
            raise VoteError(f"{name} must be a string, got {type(value).__name__}")
    for name, value in (("left_image", left_image), ("decide_ms", decide_ms)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise VoteError(f"{name} must be an integer, got {type(value).__name__}")
    if answers is not None and not (
        isinstance(answers, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in answers.items())
    ):
        raise VoteError("answers must be an object of criterion -> answer (text)")
