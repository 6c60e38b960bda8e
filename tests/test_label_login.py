"""The login path without a server: one scrypt per check whatever the name, the check off
the event loop (the mechanism, not a latency), and failed logins limited per address."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import threading
from pathlib import Path

import pytest
from mmalign_label.login import FailedLogins, LoginLimit, off_loop
from mmalign_label.users import Authenticator, add_user


def test_unknown_name_and_wrong_password_take_one_scrypt_each(tmp_path: Path, monkeypatch) -> None:
    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw-ann")
    auth = Authenticator(users)
    calls: list[int] = []
    real = hashlib.scrypt

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    for name, password, ok in [("ann", "wrong", False), ("nobody", "wrong", False),
                               ("nobody", "pw-ann", False), ("ann", "pw-ann", True)]:  # fmt: skip
        calls.clear()
        assert auth(name, password) is ok
        assert len(calls) == 1, (name, password, len(calls))  # the same cost either way


def test_login_check_runs_in_a_worker_thread_while_the_event_loop_runs() -> None:
    started, release = threading.Event(), threading.Event()
    threads: list[int] = []

    def slow_check(name: str, password: str) -> bool:
        threads.append(threading.get_ident())
        started.set()
        # On the event loop this would wait for a release that the loop can never send.
        return release.wait(10) and (name, password) == ("ann", "pw")

    login = off_loop(slow_check)
    assert inspect.iscoroutinefunction(login)  # how Gradio decides to await auth=

    async def main() -> tuple[bool, int]:
        task = asyncio.ensure_future(login("ann", "pw"))
        turns = 0
        while not started.is_set():  # the loop keeps running other work meanwhile
            await asyncio.sleep(0.001)
        for _ in range(3):
            await asyncio.sleep(0)
            turns += 1
        release.set()  # sent from the loop while the check is still running
        return await task, turns

    ok, turns = asyncio.run(main())
    assert ok and turns == 3
    assert threads and threads[0] != threading.get_ident()


def test_the_server_gives_gradio_the_async_login(tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    from mmalign_label.app import LabelApp
    from mmalign_label.server import build_server
    from mmalign_label.store import Store
    from starlette.routing import Mount

    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw-ann")
    label = LabelApp(Store(tmp_path / "db.sqlite"), tmp_path / "img", Authenticator(users))
    outer = build_server(label)
    while not hasattr(outer, "routes"):  # through the login limit and the route guard
        outer = outer.app
    gradio_app = next(r.app for r in outer.routes if isinstance(r, Mount))
    assert inspect.iscoroutinefunction(gradio_app.auth)
    assert asyncio.run(gradio_app.auth("ann", "pw-ann"))
    assert not asyncio.run(gradio_app.auth("ann", "nope"))


def test_failed_logins_slide_out_of_the_window() -> None:
    now = [0.0]
    failed = FailedLogins(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert failed.retry_after("1.2.3.4") == 0
        failed.attempt("1.2.3.4")
        now[0] += 10
    assert failed.retry_after("1.2.3.4") == pytest.approx(30)  # the first one leaves at 60 s
    assert failed.retry_after("5.6.7.8") == 0  # per address
    now[0] = 60.5
    assert failed.retry_after("1.2.3.4") == 0
    failed.succeeded("1.2.3.4", failed.attempt("1.2.3.4"))  # a success is not a failure
    assert failed.retry_after("1.2.3.4") == 0  # the attempts at 10 s and 20 s are left
    failed.attempt("1.2.3.4")
    assert failed.retry_after("1.2.3.4") == pytest.approx(9.5)


def _login_scope(client: str) -> dict:
    return {"type": "http", "method": "POST", "path": "/login", "client": (client, 5555),
            "headers": []}  # fmt: skip


def test_over_limit_logins_are_answered_without_a_check_even_in_parallel() -> None:
    checks: list[str] = []

    async def main() -> list[tuple[int, bytes]]:
        open_gate = asyncio.Event()

        async def gradio_login(scope, receive, send):  # type: ignore[no-untyped-def]
            checks.append(scope["client"][0])  # stands for the scrypt check
            await open_gate.wait()  # every attempt is in flight at once
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b'{"detail":"Incorrect"}'})

        limited = LoginLimit(gradio_login, FailedLogins(limit=10, window_s=60))
        answers: list[tuple[int, bytes]] = []

        async def attempt(client: str) -> None:
            sent: list[dict] = []

            async def send(message: dict) -> None:
                sent.append(message)

            await limited(_login_scope(client), None, send)
            answers.append((sent[0]["status"], sent[1]["body"]))

        tasks = [asyncio.ensure_future(attempt("10.0.0.1")) for _ in range(25)]
        tasks.append(asyncio.ensure_future(attempt("10.0.0.2")))
        await asyncio.sleep(0.01)
        open_gate.set()
        await asyncio.gather(*tasks)
        return answers

    answers = asyncio.run(main())
    assert checks.count("10.0.0.1") == 10 and checks.count("10.0.0.2") == 1
    limited = [body for status, body in answers if status == 429]
    assert len(limited) == 15 and len(set(limited)) == 1  # one answer, whatever the name
    assert "try again" in json.loads(limited[0])["detail"]
