"""A vote id reused for a different vote is refused as a conflict, not acknowledged as a
`duplicate` (review 8). A client that reused an id for another pair (or answer) was told
`duplicate` ("your vote is stored") while nothing of the new vote was stored. An exact retry
still answers `duplicate`; another annotator's id is refused as before, whatever it says.
Every test runs on SQLite and on PostgreSQL (`label_db`)."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mmalign_label.criteria import parse_criteria
from mmalign_label.labeling import Labeling
from mmalign_label.store import Pair, Store, VoteConflict, VoteError

FOREIGN = "vote id already used by another annotator"


@pytest.fixture
def store(label_db: str) -> Iterator[Store]:
    s = Store(label_db, overlap=2)
    s.add_pairs(Pair(f"p{i}", f"prompt {i}", f"a{i}.png", f"b{i}.png", "test") for i in range(8))
    yield s
    s.close()


def _vote(store: Store, user: str, vid: str, pair: str = "p0", choice: str = "left",
          left: int = 0, ms: int = 500):  # fmt: skip
    return store.record_vote(vote_id=vid, annotator=user, pair_id=pair, choice=choice,
                             left_image=left, decide_ms=ms)  # fmt: skip


def _counts(store: Store) -> dict[str, int]:
    from mmalign_label.tables import pairs

    with store.read.begin() as conn:
        return {r.pair_id: r.n_votes for r in conn.execute(pairs.select())}


@pytest.mark.parametrize(
    ("change", "field"),
    [({"pair": "p1"}, "pair_id"), ({"choice": "right"}, "choice"), ({"left": 1}, "left_image"),
     ({"pair": "p2", "choice": "skip"}, "pair_id, choice")],
)  # fmt: skip
def test_a_reused_vote_id_for_another_vote_is_a_conflict(
    store: Store, change: dict[str, Any], field: str
) -> None:
    vid = uuid.uuid4().hex
    assert _vote(store, "ann", vid).status == "stored"
    before = (store.votes_of("ann"), _counts(store))
    with pytest.raises(VoteConflict, match=rf"^conflict: .*\({field} differ\)") as err:
        _vote(store, "ann", vid, **change)
    assert isinstance(err.value, VoteError)  # callers that refuse VoteError refuse it too
    assert (store.votes_of("ann"), _counts(store)) == before  # nothing stored or counted
    # an exact retry is still a duplicate, a new time to decide included (a resend measures)
    assert _vote(store, "ann", vid, ms=9_000).status == "duplicate"
    assert [v["decide_ms"] for v in store.votes_of("ann")] == [500]


def test_a_reused_id_of_an_undone_vote_is_a_conflict_too(store: Store) -> None:
    vid = uuid.uuid4().hex
    _vote(store, "ann", vid)
    assert store.undo_last("ann") == "p0"
    with pytest.raises(VoteConflict, match="pair_id differ"):
        _vote(store, "ann", vid, pair="p1")  # not "undone": that is about another vote
    assert _vote(store, "ann", vid).status == "undone"  # the exact retry
    assert store.votes_of("ann") == []


def test_different_answers_under_one_id_are_a_conflict(store: Store) -> None:
    questions = [{"name": "overall", "question": "overall?"}, {"name": "appeal", "question": "?"}]
    criteria = parse_criteria({"criteria": questions})
    lab = Labeling(store, criteria=criteria)
    vid = uuid.uuid4().hex
    sent = {"vote_id": vid, "pair_id": "p0", "choice": "left", "left_image": 0, "decide_ms": 5}
    first = lab.vote("ann", **sent, answers={"overall": "left", "appeal": "tie"})
    assert first["status"] == "stored"
    with pytest.raises(VoteConflict, match=r"\(answers differ\)"):
        lab.vote("ann", **sent, answers={"overall": "left", "appeal": "right"})
    again = lab.vote("ann", **sent, answers={"appeal": "tie", "overall": "left"})
    assert again["status"] == "duplicate"


def test_another_annotators_id_answers_the_same_whatever_it_says(store: Store) -> None:
    """The owner is checked before the fields: a send that matches ann's vote and one that
    does not get the same refusal, so eve learns nothing of ann's pair or choice."""
    vid = uuid.uuid4().hex
    _vote(store, "ann", vid, choice="tie", left=1)
    messages = set()
    for change in ({"choice": "tie", "left": 1}, {}, {"pair": "p3"}, {"pair": "nope"}):
        with pytest.raises(VoteError) as err:
            _vote(store, "eve", vid, **change)
        assert type(err.value) is VoteError, err.value  # never VoteConflict
        messages.add(str(err.value))
    assert messages == {FOREIGN}
    assert store.votes_of("eve") == [] and len(store.votes_of("ann")) == 1


def test_racing_sends_of_one_id_store_one_vote_and_refuse_the_others(label_db: str) -> None:
    """Sends of one id on different pairs lock different rows, so on PostgreSQL they pass
    the id lookup together and meet at the unique key: the loser must still see a conflict
    (and an exact copy of the winner a duplicate), never a second vote or a false ack."""
    s = Store(label_db, overlap=2)
    s.add_pairs(Pair(f"p{i}", "x", "a", "b", "t") for i in range(6))
    sends = [("p0", "left"), ("p0", "left"), ("p1", "left"), ("p2", "right"), ("p3", "tie"),
             ("p0", "right")]  # fmt: skip
    for round_ in range(4):
        vid = f"race-{round_:04d}"
        start = threading.Barrier(len(sends), timeout=60)
        outcome: dict[int, str] = {}
        threads = [
            threading.Thread(target=_send, args=(label_db, vid, pair, choice, start, outcome, k))
            for k, (pair, choice) in enumerate(sends)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert Counter(outcome.values())["stored"] == 1, outcome
        won = sends[next(k for k, o in outcome.items() if o == "stored")]
        for k, o in outcome.items():
            if o != "stored":
                assert o == ("duplicate" if sends[k] == won else "conflict"), (outcome, won)
        row = next(v for v in s.votes_of("ann") if v["vote_id"] == vid)
        assert (row["pair_id"], row["choice"]) == won
        assert s.undo_last("ann") == won[0]  # free the pair for the next round
    assert sum(_counts(s).values()) == 0
    s.close()


def _send(db: str, vid: str, pair: str, choice: str, start: threading.Barrier,
          outcome: dict[int, str], k: int) -> None:  # fmt: skip
    """One send of `vid` from a store (a server) of its own, at the barrier with the others."""
    mine = Store(db)
    start.wait()
    try:
        outcome[k] = _vote(mine, "ann", vid, pair=pair, choice=choice).status
    except VoteConflict:
        outcome[k] = "conflict"
    except VoteError as err:
        outcome[k] = f"refused: {err}"
    finally:
        mine.close()


def _post(app: Any, body: dict, token: str) -> tuple[int, dict]:
    sent: list[dict] = []

    async def main() -> None:
        async def receive() -> dict:
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

        async def reply(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/label_api/vote", "query_string": b"",
                 "headers": [(b"host", b"labels.example.org"),
                             (b"cookie", f"access-token-x={token}".encode()),
                             (b"content-type", b"application/json")]}  # fmt: skip
        await app(scope, receive, reply)

    asyncio.run(main())
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def test_the_fast_route_answers_409_for_a_conflict(store: Store) -> None:
    pytest.importorskip("fastapi")
    from fastapi import FastAPI
    from mmalign_label.fast_routes import add_fast_routes
    from starlette.routing import Mount

    app = FastAPI()
    add_fast_routes(app, Labeling(store))

    async def gradio(scope, receive, send):  # type: ignore[no-untyped-def]
        raise AssertionError("not reached")

    gradio.cookie_id, gradio.tokens = "x", {"ta": "ann", "te": "eve"}  # type: ignore[attr-defined]
    app.router.routes.append(Mount("/", app=gradio))
    vote = {"vote_id": uuid.uuid4().hex, "pair_id": "p0", "choice": "left", "left_image": 0,
            "decide_ms": 5}  # fmt: skip
    assert _post(app, vote, "ta")[1]["status"] == "stored"
    status, body = _post(app, {**vote, "decide_ms": 70}, "ta")
    assert status == 200 and body["status"] == "duplicate", body
    status, body = _post(app, {**vote, "pair_id": "p1"}, "ta")
    assert status == 409 and body["status"] == "conflict", body
    assert body["error"].startswith("conflict:") and "pair_id differ" in body["error"]
    # eve: the same 400 whether her send matches ann's vote or not
    answers = [_post(app, {**vote, **change}, "te") for change in ({}, {"pair_id": "p1"})]
    assert answers == [(400, {"error": FOREIGN})] * 2
    assert [v["pair_id"] for v in store.votes_of("ann")] == ["p0"]
    assert store.votes_of("eve") == []


def test_the_gradio_api_and_the_page_say_conflict(store: Store, tmp_path: Path) -> None:
    gr = pytest.importorskip("gradio")
    from mmalign_label.app import LabelApp
    from mmalign_label.users import Authenticator, add_user
    from PIL import Image

    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw")
    (tmp_path / "img").mkdir()
    for i in range(8):
        for side in "ab":
            Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "img" / f"{side}{i}.png")
    app = LabelApp(store, tmp_path / "img", Authenticator(users))
    ann = SimpleNamespace(username="ann")
    vid = uuid.uuid4().hex
    assert app.api_vote(vid, "p0", "left", 0, 5, ann)["status"] == "stored"
    assert app.api_vote(vid, "p0", "left", 0, 6, ann)["status"] == "duplicate"
    with pytest.raises(gr.Error, match=r"conflict: .*\(choice differ\)"):
        app.api_vote(vid, "p0", "tie", 0, 5, ann)
    # the page: a second click with another answer on the pair it shows (the same state)
    state = {"pair_id": "p1", "left_image": 1, "vote_id": uuid.uuid4().hex, "shown_at": 0.0,
             "answers": {}}  # fmt: skip
    assert "✓ Left saved" in app.on_vote("left", state, ann)[5]
    assert "already saved" in app.on_vote("left", state, ann)[5]  # a double click
    note = app.on_vote("right", state, ann)[5]
    assert "already saved with another answer" in note and "✓" not in note, note
    assert [(v["pair_id"], v["choice"]) for v in store.votes_of("ann")] == [
        ("p0", "left"), ("p1", "left")]  # fmt: skip
