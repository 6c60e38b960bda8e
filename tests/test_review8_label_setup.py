"""A team lead's set-up mistakes (docs/labeling.md, Quick start): a bad `--overlap` kept in
the database before it was checked (every later command on it, `export` and `stats`
included, then failed with "overlap ... got -1"); a vote whose `left_image` is 0.5 stored as
0 (int() truncated it); `adduser` with `--users` naming a folder ("not found: create it with
`mmalign label adduser`", while running it) or a file in a missing folder (the error named a
`.tmp` file)."""

from __future__ import annotations

import io
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from mmalign.cli import main

pytest.importorskip("fastapi")


def test_a_bad_overlap_is_not_kept_in_the_database(tmp_path: Path, capsys) -> None:
    from mmalign_label.store import Store

    db = tmp_path / "labels.sqlite"
    Store(str(db))
    with pytest.raises(ValueError, match="must be >= 1, got -1"):
        Store(str(db), overlap=-1)
    assert Store(str(db)).overlap == 1  # the database still opens
    assert main(["label", "stats", "--db", str(db)]) == 0, capsys.readouterr().err


def _fast_client(tmp_path: Path) -> Any:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from mmalign_label.fast_routes import add_fast_routes
    from mmalign_label.labeling import Labeling
    from mmalign_label.store import Pair, Store

    store = Store(str(tmp_path / "labels.sqlite"))
    store.add_pairs([Pair("p0", "x", "a.png", "b.png", "t")])
    inner = FastAPI()  # stands in for the mounted Gradio app: its session table
    inner.cookie_id, inner.tokens = "c", {"tok": "maria"}  # type: ignore[attr-defined]
    outer = FastAPI()
    add_fast_routes(outer, Labeling(store, seed=0))
    outer.mount("/", inner)
    client = TestClient(outer)
    client.cookies.set("access-token-c", "tok")
    return client, store


@pytest.mark.parametrize("field", ["left_image", "decide_ms"])
@pytest.mark.parametrize("value", [0.5, 1.7, True, "x"])
def test_a_fractional_left_image_is_refused_not_truncated(tmp_path: Path, field, value) -> None:
    client, store = _fast_client(tmp_path)
    vote = {"vote_id": uuid.uuid4().hex, "pair_id": "p0", "choice": "left", "left_image": 1,
            "decide_ms": 900, field: value}  # fmt: skip
    r = client.post("/label_api/vote", json=vote)
    assert r.status_code == 400 and "must be integers" in r.json()["error"], r.text
    assert store.all_votes() == []


@pytest.mark.parametrize("value", [1, 1.0, "1"])
def test_whole_numbers_are_still_taken(tmp_path: Path, value) -> None:
    client, store = _fast_client(tmp_path)
    vote = {"vote_id": uuid.uuid4().hex, "pair_id": "p0", "choice": "left", "left_image": value,
            "decide_ms": 900}  # fmt: skip
    r = client.post("/label_api/vote", json=vote)
    assert r.status_code == 200 and r.json()["status"] == "stored", r.text
    assert [v["left_image"] for v in store.all_votes()] == [1]


def test_adduser_names_a_users_path_that_cannot_be_a_file(tmp_path: Path, capsys, monkeypatch):
    missing = tmp_path / "nope"
    for users, said in ((tmp_path, "is a folder, not a file"),
                        (missing / "users.txt", f"no folder {missing}")):  # fmt: skip
        monkeypatch.setattr(sys, "stdin", io.StringIO("long enough\n"))
        args = ["label", "adduser", "bob", "--users", str(users), "--password-stdin"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert said in err and "create it with" not in err and ".tmp" not in err, err
