"""The login path without a server: one scrypt per check whatever the name, the check off
the event loop (the mechanism, not a latency), and failed logins limited per address."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

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


def _form_scope(client: str, name: str) -> tuple[dict, Any]:
    """A login POST from `client` naming `name`, and its `receive`."""
    body = urlencode({"username": name, "password": "guess"}).encode()
    scope = {"type": "http", "method": "POST", "path": "/login", "client": (client, 5555),
             "headers": [(b"content-type", b"application/x-www-form-urlencoded")]}  # fmt: skip

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    return scope, receive


def _attempts(limited: LoginLimit, tries: list[tuple[str, str]]) -> list[tuple[int, dict, bytes]]:
    """(status, headers, body) of each (client, name) login, one after another."""

    async def main() -> list[tuple[int, dict, bytes]]:
        out = []
        for client, name in tries:
            sent: list[dict] = []

            async def send(message: dict, sent: list[dict] = sent) -> None:
                sent.append(message)

            await limited(*_form_scope(client, name), send)
            out.append((sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]))
        return out

    return asyncio.run(main())


async def _wrong_password(scope, receive, send):  # type: ignore[no-untyped-def]
    """Gradio's login refusing every password; the name it read goes in `checked`."""
    form = parse_qs((await receive())["body"].decode())
    _checked.append((scope["client"][0], form["username"][0]))
    await send({"type": "http.response.start", "status": 400, "headers": []})
    await send({"type": "http.response.body", "body": b'{"detail":"Incorrect credentials"}'})


_checked: list[tuple[str, str]] = []


def test_ipv6_clients_are_limited_per_64() -> None:
    _checked.clear()
    limited = LoginLimit(_wrong_password, FailedLogins(limit=10, window_s=60))
    # 40 guesses, each from another address of one /64 (one host can use them all)
    answers = _attempts(limited, [(f"2001:db8::{k:x}", "lead") for k in range(1, 41)])
    assert [s for s, _, _ in answers] == [400] * 10 + [429] * 30
    assert len(_checked) == 10  # the rest never reached the password check
    other = _attempts(limited, [("2001:db8:0:1::1", "lead"), ("::ffff:192.0.2.1", "lead")])
    assert [s for s, _, _ in other] == [400, 400]  # another /64, an IPv4 client: their own


def test_an_account_name_is_limited_across_addresses_the_same_for_any_name() -> None:
    _checked.clear()
    now = [0.0]
    limited = LoginLimit(
        _wrong_password, FailedLogins(limit=3, window_s=60, clock=lambda: now[0]),
        FailedLogins(limit=5, window_s=900, clock=lambda: now[0]),
    )  # fmt: skip
    # an address over its own limit: the answer every limited login must look like
    own = _attempts(limited, [("198.51.100.1", f"x{k}") for k in range(4)])[-1]
    assert own[0] == 429
    for name in ("alice", "no-such-user"):  # an account, and a name no one has
        tries = [(f"203.0.113.{k}", name) for k in range(1, 6)]  # 5 addresses, 1 guess each
        assert [s for s, _, _ in _attempts(limited, tries)] == [400] * 5
        # from new addresses, and the right password too: answered without a check
        status, headers, body = _attempts(limited, [("192.0.2.7", name), ("192.0.2.8", name)])[1]
        assert (status, headers.keys()) == (own[0], own[1].keys())
        assert re.sub(rb"\d+", b"N", body) == re.sub(rb"\d+", b"N", own[2])
    assert [n for _, n in _checked].count("alice") == 5  # 5 checks, none after the limit
    assert _attempts(limited, [("192.0.2.9", " alice ")])[0][0] == 429  # Gradio strips names
    assert _attempts(limited, [("192.0.2.9", "alice2")])[0][0] == 400  # another name
    now[0] = 901.0  # the window slides: no success needed to lift the limit
    assert _attempts(limited, [("192.0.2.10", "alice")])[0][0] == 400


def test_a_flood_from_failing_addresses_leaves_room_for_a_clean_login() -> None:
    from mmalign_label.login import FAILING_PENDING

    async def main() -> tuple[list[int], list[str]]:
        gate = asyncio.Event()
        reached: list[str] = []

        async def gradio_login(scope, receive, send):  # type: ignore[no-untyped-def]
            reached.append(scope["client"][0])
            await gate.wait()  # the checks take long: every attempt stays in flight
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        limited = LoginLimit(gradio_login, FailedLogins(limit=10, window_s=60))
        flood = [f"10.1.{k // 250}.{k % 250}" for k in range(200)]
        for address in flood:  # each has failed before
            limited.failed.attempt(address)
        statuses: list[int] = []

        async def attempt(client: str) -> None:
            sent: list[dict] = []

            async def send(message: dict) -> None:
                sent.append(message)

            await limited(_login_scope(client), None, send)
            statuses.append(sent[0]["status"])

        tasks = [asyncio.ensure_future(attempt(a)) for a in flood]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.ensure_future(attempt("198.51.100.9")))  # a clean login
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(*tasks)
        return statuses, reached

    statuses, reached = asyncio.run(main())
    assert "198.51.100.9" in reached  # checked, not turned away
    assert len(reached) == FAILING_PENDING + 1 and statuses.count(503) == 200 - FAILING_PENDING


def test_new_hashes_cost_n_2_17_and_old_ones_still_verify(tmp_path: Path, monkeypatch) -> None:
    from mmalign_label import users as users_module
    from mmalign_label.users import check_password, hash_params, hash_password

    new = hash_password("pw")
    assert hash_params(new) == (2**17, 8, 1) and check_password("pw", new)
    monkeypatch.setattr(users_module, "SCRYPT_N", 2**14)
    old = hash_password("pw")  # as made before the cost went up
    monkeypatch.undo()
    assert hash_params(old) == (2**14, 8, 1)
    assert check_password("pw", old) and not check_password("nope", old)
    for broken in ("scrypt$16$8$1$zz$00", "scrypt$1048576$8$8$00$00", "md5$x", ""):
        assert not check_password("pw", broken)  # no exception, no match
    file = tmp_path / "users.txt"
    file.write_text(f"ann:annotator:{old}\nbob:annotator:{new}\n")
    assert Authenticator(file).weaker_hashes() == ["ann"]  # named at the server's start


def test_logins_cost_the_same_for_any_name_while_old_hashes_remain(
    tmp_path: Path, monkeypatch
) -> None:
    from mmalign_label import users as users_module

    users = tmp_path / "users.txt"
    monkeypatch.setattr(users_module, "SCRYPT_N", 2**8)
    add_user(users, "old", "pw-old")  # made at the lower cost ...
    monkeypatch.setattr(users_module, "SCRYPT_N", 2**9)
    add_user(users, "new", "pw-new")  # ... and at the current one
    auth = Authenticator(users)
    runs: list[int] = []
    real = hashlib.scrypt

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        runs.append(kwargs["n"])
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    for name, password, ok in [("old", "x", False), ("new", "x", False), ("nobody", "x", False),
                               ("old", "pw-old", True), ("new", "pw-new", True)]:  # fmt: skip
        runs.clear()
        assert auth(name, password) is ok
        assert sorted(runs) == [2**8, 2**9], (name, runs)  # one run at each cost, any name
    add_user(users, "old", "pw-old")  # the admin sets the password again: current cost
    runs.clear()
    assert auth("nobody", "x") is False and runs == [2**9]


def test_the_account_name_is_read_from_the_first_content_type_as_starlette_does():
    """Two Content-Type headers: the name limiter reads the form as Gradio's route will (the
    first header), so a trailing `text/plain` cannot move the guess to the empty name."""
    import asyncio
    import hashlib

    from mmalign_label.login import login_name

    body = b"username=alice&password=wrong"

    def scope(*types: bytes) -> dict:
        return {"type": "http", "method": "POST", "path": "/login",
                "headers": [(b"content-type", t) for t in types]}  # fmt: skip

    async def key(s: dict) -> str:
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return (await login_name(s, receive))[0]

    alice = hashlib.sha256(b"alice").hexdigest()
    form = b"application/x-www-form-urlencoded"
    assert asyncio.run(key(scope(form))) == alice
    assert asyncio.run(key(scope(form, b"text/plain"))) == alice
    assert asyncio.run(key(scope(b"text/plain", form))) == hashlib.sha256(b"").hexdigest()
