"""Review 7: the labeling app's validations match the whole string.

`vote_id`, user names and criterion names were checked with `re.match` and a `^...$`
pattern, and `$` also matches before a final newline: `'abcdefgh\\n'` was a valid vote id
(docs/labeling.md: only 8 to 64 characters of [A-Za-z0-9_-]), `'alice\\n'` a user name
written into the users file as a line of its own. Each is now `fullmatch`ed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio")

from test_app_review_json_values import _post, fast_app


def test_a_vote_id_with_a_trailing_newline_is_refused_over_http(tmp_path: Path) -> None:
    app, store = fast_app(tmp_path)
    vote = {"pair_id": "p0", "choice": "left", "left_image": 0, "decide_ms": 5}
    for bad in ("abcdefgh\n", "abcdefgh\r\n", "\nabcdefgh", "abcdefgh \n"):
        status, text = _post(app, "/label_api/vote", json.dumps({**vote, "vote_id": bad}).encode())
        assert status == 400, (bad, status, text)
        assert "vote_id must be 8-64 characters" in json.loads(text)["error"]
    assert store.votes_of("alice") == []  # none stored
    status, text = _post(
        app, "/label_api/vote", json.dumps({**vote, "vote_id": "abcdefgh"}).encode()
    )
    assert status == 200 and json.loads(text)["status"] == "stored", text


def _vote(vote_id: str) -> dict[str, Any]:
    return {"vote_id": vote_id, "annotator": "alice", "pair_id": "p0", "choice": "left",
            "left_image": 0, "decide_ms": 5}  # fmt: skip


def test_the_store_refuses_a_vote_id_with_a_trailing_newline(tmp_path: Path) -> None:
    from mmalign_label.store import Pair, Store, VoteError

    store = Store(tmp_path / "labels.sqlite")
    store.add_pairs([Pair("p0", "a prompt", "a.png", "b.png", "test")])
    with pytest.raises(VoteError, match="vote_id must be 8-64 characters"):
        store.record_vote(**_vote("abcdefgh\n"))
    assert store.record_vote(**_vote("a" * 64)).status == "stored"


def test_user_names_with_a_trailing_newline_are_refused(tmp_path: Path) -> None:
    from mmalign_label.users import add_user, load_users

    users = tmp_path / "users.txt"
    with pytest.raises(ValueError, match="user name"):
        add_user(users, "alice\n", "a long enough password")
    assert not users.exists()  # nothing written
    add_user(users, "alice", "a long enough password")
    assert list(load_users(users)) == ["alice"]


def test_criterion_names_with_a_trailing_newline_are_refused() -> None:
    from mmalign_label.criteria import CriteriaError, parse_criteria

    with pytest.raises(CriteriaError, match="name must match"):
        parse_criteria({"criteria": [{"name": "overall\n", "question": "Which is better?"}]})
    good = parse_criteria({"criteria": [{"name": "overall", "question": "Which?"}]})
    assert [c.name for c in good.items] == ["overall"]
