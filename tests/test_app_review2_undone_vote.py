"""A retry of a vote that was undone since is answered `undone`, not `duplicate` (review 2,
defect 4): the client learns that the vote does not count, and the retry does not bring
back a vote its annotator withdrew (an undo after a lost acknowledgement, then the retry)."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from mmalign_label.labeling import Labeling
from mmalign_label.store import Pair, Store, VoteError


@pytest.fixture
def store(label_db: str) -> Store:
    s = Store(label_db, overlap=1)
    s.add_pairs(Pair(f"p{i}", f"prompt {i}", f"a{i}.png", f"b{i}.png", "test") for i in range(3))
    return s


def _vote(store: Store, user: str, pair: str, vid: str, choice: str = "left"):
    return store.record_vote(vote_id=vid, annotator=user, pair_id=pair, choice=choice,
                             left_image=0, decide_ms=500)  # fmt: skip


def test_a_retry_of_an_undone_vote_says_undone_and_stores_nothing(store: Store) -> None:
    vid = uuid.uuid4().hex
    assert _vote(store, "ann", "p0", vid).status == "stored"
    assert store.undo_last("ann") == "p0"
    ack = _vote(store, "ann", "p0", vid)  # the retry of the first send, after the undo
    assert ack.status == "undone", ack
    assert (ack.vote_id, ack.annotator, ack.pair_id) == (vid, "ann", "p0")
    assert store.votes_of("ann") == []  # still withdrawn: the retry brought nothing back
    assert store.next_pair("ann").pair_id == "p0"  # the place is still ann's to vote again
    again = uuid.uuid4().hex  # a new vote (a new id) on the pair is stored
    assert _vote(store, "ann", "p0", again, "right").status == "stored"
    assert _vote(store, "ann", "p0", vid).status == "undone"  # the old id stays undone
    assert _vote(store, "ann", "p0", again, "right").status == "duplicate"  # its retry
    assert [v["vote_id"] for v in store.votes_of("ann")] == [again]
    with pytest.raises(VoteError, match="another annotator"):  # nothing told to others
        _vote(store, "eve", "p0", vid)


def test_the_api_reply_and_the_page_say_undone(store: Store, tmp_path: Path) -> None:
    labeling = Labeling(store)
    vid = uuid.uuid4().hex
    first = labeling.vote("ann", vote_id=vid, pair_id="p1", choice="tie", left_image=1,
                          decide_ms=10)  # fmt: skip
    assert first["status"] == "stored"
    store.undo_last("ann")
    reply = labeling.vote("ann", vote_id=vid, pair_id="p1", choice="tie", left_image=1,
                          decide_ms=10)  # fmt: skip
    assert reply["status"] == "undone" and reply["next"]["pair_id"] == "p1"

    pytest.importorskip("gradio")
    from mmalign_label.app import LabelApp
    from mmalign_label.users import Authenticator, add_user
    from PIL import Image

    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw")
    (tmp_path / "img").mkdir()
    for name in ("a1.png", "b1.png"):  # the pair shown again after the note
        Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "img" / name)
    app = LabelApp(store, tmp_path / "img", Authenticator(users))
    # the page's resend of that vote (the same answer and sides: another answer under the
    # id is a conflict, review 8)
    state = {"pair_id": "p1", "left_image": 1, "vote_id": vid, "shown_at": 0.0, "answers": {}}
    note = app.on_vote("tie", state, SimpleNamespace(username="ann"))[5]
    assert "undone" in note and "✓" not in note and "already saved" not in note, note
