"""Prompt mode: a Generate that finds another user's generation running waits for it (a
bounded time) instead of being refused at once (review 2, defect 1)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("gradio")
from mmalign_label import generate as generate_module
from mmalign_label.testing import make_pairs_dataset

pytestmark = pytest.mark.timeout(60)


def _app(tmp_path: Path) -> tuple[Any, list[str], threading.Event, threading.Event]:
    """A LabelApp whose fake model holds any prompt starting with "hold" until `release`."""
    from mmalign_label.app import LabelApp
    from mmalign_label.images import import_pairs
    from mmalign_label.store import Store
    from mmalign_label.users import Authenticator, add_user

    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw")
    store = Store(tmp_path / "db.sqlite")
    store.add_pairs(import_pairs(make_pairs_dataset(tmp_path / "pairs", 2, size=16),
                                 tmp_path / "img"))  # fmt: skip
    label = LabelApp(store, tmp_path / "img", Authenticator(users), model="fake")
    made: list[str] = []
    running, release = threading.Event(), threading.Event()

    def generate(prompt: str):  # type: ignore[no-untyped-def]
        made.append(prompt)
        if prompt.startswith("hold"):
            running.set()
            release.wait(30)
        return store.next_pair("nobody")

    label.generator = SimpleNamespace(generate=generate)  # type: ignore[assignment]
    return label, made, running, release


def _user(name: str) -> Any:
    return SimpleNamespace(username=name)


def _in_thread(label: Any, prompt: str, user: str, notes: dict[str, str]) -> threading.Thread:
    def run() -> None:
        notes[user] = label.on_generate(prompt, _user(user))[5]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_another_users_generate_waits_for_the_running_one_and_then_runs(tmp_path: Path) -> None:
    label, made, running, release = _app(tmp_path)
    notes: dict[str, str] = {}
    ann = _in_thread(label, "hold: a red circle", "ann", notes)
    assert running.wait(10)
    bob = _in_thread(label, "a blue square", "bob", notes)
    time.sleep(0.3)  # bob is waiting for the lock, not answered
    assert "bob" not in notes and made == ["hold: a red circle"]
    release.set()
    ann.join(10)
    bob.join(10)
    assert made == ["hold: a red circle", "a blue square"]  # bob's ran after ann's
    assert "One generation at a time" not in notes["bob"], notes
    assert "Two images" in notes["bob"]


def test_the_wait_is_bounded_and_then_refused_with_a_clear_message(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(generate_module, "GENERATE_WAIT_S", 0.5)
    label, made, running, release = _app(tmp_path)
    notes: dict[str, str] = {}
    ann = _in_thread(label, "hold: a red circle", "ann", notes)
    try:
        assert running.wait(10)
        start = time.monotonic()
        note = label.on_generate("a blue square", _user("bob"))[5]
        waited = time.monotonic() - start
        assert 0.4 <= waited < 5, waited  # waited out GENERATE_WAIT_S, no longer
        assert "busy" in note and "press Generate again" in note, note
        assert made == ["hold: a red circle"]
        # ann's own second Generate while hers runs: refused at once (no second place)
        start = time.monotonic()
        note = label.on_generate("another", _user("ann"))[5]
        assert time.monotonic() - start < 0.3 and "One generation at a time" in note
    finally:
        release.set()
        ann.join(10)


def test_only_a_few_generates_wait_at_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(generate_module, "GENERATE_WAIT_S", 20.0)
    label, made, running, release = _app(tmp_path)
    notes: dict[str, str] = {}
    threads = [_in_thread(label, "hold: a red circle", "ann", notes)]
    try:
        assert running.wait(10)
        waiters = [f"w{k}" for k in range(generate_module.GENERATE_WAITERS)]
        threads += [_in_thread(label, f"from {w}", w, notes) for w in waiters]
        deadline = time.monotonic() + 5
        while label.gate.waiting < len(waiters) and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.monotonic()
        note = label.on_generate("one too many", _user("late"))[5]
        assert time.monotonic() - start < 0.3, "refused at once, not parked"
        assert "busy" in note
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert sorted(made[1:]) == sorted(f"from {w}" for w in waiters)  # the waiters all ran
