"""The label commands a newcomer mistypes: `export` and `stats` with a --db that does not
exist (opening it created an empty database and the export "succeeded" with 0 rows, which a
recipe then failed to open); an export with no votes (said on stderr); `adduser` without a
terminal (an EOFError traceback) or with a password a network-facing app should not take."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from mmalign.cli import main


@pytest.mark.parametrize("command", ["export", "stats"])
def test_a_missing_database_is_named_not_created(tmp_path: Path, capsys, command: str) -> None:
    db = tmp_path / "nope.sqlite"
    extra = ["--out", str(tmp_path / "out"), "--format", "pairs"] if command == "export" else []
    assert main(["label", command, "--db", str(db), *extra]) == 2
    assert f"--db {db}: no such database file" in capsys.readouterr().err
    assert not db.exists()
    assert not (tmp_path / "out").exists()


def test_an_export_with_no_votes_says_so(tmp_path: Path, capsys) -> None:
    from mmalign_label.store import Store

    db = tmp_path / "labels.sqlite"
    Store(str(db))  # an empty database: no pairs, no votes
    out = tmp_path / "out"
    assert main(["label", "export", "--db", str(db), "--out", str(out), "--format", "pairs"]) == 0
    assert "nothing exported from" in capsys.readouterr().err


def test_adduser_without_a_terminal_says_how(tmp_path: Path, capsys, monkeypatch) -> None:
    users = tmp_path / "users.txt"
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["label", "adduser", "bob", "--users", str(users)]) == 2
    assert "--password-stdin" in capsys.readouterr().err
    assert not users.exists()


@pytest.mark.parametrize(("password", "code"), [("x", 2), ("", 2), ("long enough", 0)])
def test_adduser_refuses_short_passwords(tmp_path: Path, capsys, monkeypatch, password, code):
    users = tmp_path / "users.txt"
    monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
    assert main(["label", "adduser", "bob", "--users", str(users), "--password-stdin"]) == code
    assert users.exists() == (code == 0)
    if code:
        assert "at least 8 characters" in capsys.readouterr().err
