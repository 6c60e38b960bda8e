"""The labeling server's outer limits (apps/label/hardening.py): sessions that end, bodies and
heads with a deadline and a size cap, cross-site requests refused, no CORS answers, and
session ids owned per user. Unit tests on the ASGI layer, then one server in a subprocess."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio")
from label_helpers import Clock
from mmalign_label.guard import Owners
from mmalign_label.hardening import RequestLimits, SessionTokens, cross_site, same_host
from mmalign_label.testing import make_pairs_dataset, serve
from mmalign_label.users import Authenticator, add_user, load_users

pytestmark = pytest.mark.timeout(300)


def test_sessions_end_after_their_lifetime_a_new_password_or_the_users_removal() -> None:
    hashes = {"alice": "h1", "bob": "h2"}
    clock = Clock()
    tokens = SessionTokens(hashes.get, ttl_s=100, clock=clock)
    tokens["t-alice"], tokens["t-bob"] = "alice", "bob"
    assert tokens.get("t-alice") == "alice" and "t-bob" in tokens
    assert tokens.get("nope") is None and tokens.get(None) is None
    hashes["alice"] = "h1-new"  # `mmalign label adduser alice` with a new password
    assert tokens.get("t-alice") is None and "t-alice" not in dict(tokens)
    del hashes["bob"]  # bob's line removed from the users file
    assert "t-bob" not in tokens and len(tokens) == 0
    tokens["t2"] = "alice"
    clock.now = 100.0
    assert tokens.get("t2") == "alice"  # still inside its lifetime
    clock.now = 100.5
    assert tokens.get("t2") is None and len(tokens) == 0
    with pytest.raises(ValueError):
        SessionTokens(hashes.get, ttl_s=0)


def test_a_token_removed_by_another_thread_reads_as_gone() -> None:
    tokens = SessionTokens({"alice": "h"}.get)
    tokens["t"] = "alice"
    keys = list(tokens.keys())  # Gradio's logout: list the keys, then read and delete each
    del tokens["t"]  # meanwhile another request's logout
    assert [tokens[k] for k in keys] == [None]
    del tokens["t"]  # no KeyError


def test_an_unreadable_users_file_keeps_the_last_good_users(tmp_path: Path, capsys) -> None:
    users = tmp_path / "users.txt"
    add_user(users, "alice", "pw")
    auth = Authenticator(users)
    tokens = SessionTokens(auth.credential)
    tokens["t"] = "alice"
    good = users.read_text()
    users.write_text(good + "bob:annotater:scrypt$1$2$3$00$00\n")  # a typo in a hand edit
    assert tokens.get("t") == "alice" and auth("alice", "pw")
    assert auth.role("alice") == "annotator"
    assert capsys.readouterr().err.count("keeping the users read before") == 1  # warned once
    users.write_text(good.replace("alice", "carol"))  # a good file again: alice is gone
    assert tokens.get("t") is None
    users.unlink()
    assert auth.credential("carol") is not None  # a file briefly gone keeps the users too


def test_origins_match_hosts_with_default_ports_and_without_the_ports_a_proxy_drops() -> None:
    assert same_host("https://labels.example.org", "labels.example.org")
    assert same_host("https://labels.example.org", "labels.example.org:443")
    assert same_host("https://Labels.Example.org:8443", "labels.example.org")  # Host $host
    assert same_host("https://labels.example.org:8443", "labels.example.org:8443")
    assert same_host("http://[::1]:7860", "[::1]:7860")
    assert not same_host("https://labels.example.org", "labels.example.org:80")
    assert not same_host("https://labels.example.org:8443", "labels.example.org:443")
    assert not same_host("https://evil.example", "labels.example.org")
    assert not same_host("null", "labels.example.org")
    assert not same_host("https://labels.example.org", None)
    assert not same_host("https://labels.example.org:x", "labels.example.org")


def test_a_password_reset_during_a_login_ends_that_login(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    add_user(users, "bob", "old")
    auth = Authenticator(users)
    tokens = SessionTokens(auth.credential, verified=auth.verified)
    assert auth("bob", "old")  # the check passes with the old password ...
    time.sleep(0.01)
    add_user(users, "bob", "new")  # ... the admin resets it before the token is stored ...
    tokens["t"] = "bob"  # ... and Gradio stores the token
    assert tokens.get("t") is None
    assert auth("bob", "new")
    tokens["t2"] = "bob"
    assert tokens.get("t2") == "bob"


def test_each_user_keeps_a_bounded_number_of_sessions() -> None:
    clock = Clock()
    tokens = SessionTokens({"alice": "h", "bob": "h"}.get, ttl_s=1e9, per_user=3, clock=clock)
    tokens["bob-1"] = "bob"
    for k in range(10):
        clock.now += 1
        tokens[f"alice-{k}"] = "alice"
    assert sorted(t for t, u in dict(tokens).items() if u == "alice") == [
        "alice-7", "alice-8", "alice-9"
    ]  # fmt: skip
    assert tokens.get("bob-1") == "bob"  # another user's session is not pushed out


def test_session_ids_are_owned_per_user_and_one_user_cannot_evict_another() -> None:
    owners = Owners(per_user=5)
    assert owners.claim("alice-session", "alice")
    for k in range(50):  # mallory claims many ids of her own
        assert owners.claim(f"m{k}", "mallory")
    assert not owners.claim("alice-session", "mallory")  # still alice's
    assert owners.owned("alice-session", "alice") and not owners.owned("m0", "mallory")


def _scope(method: str = "GET", path: str = "/", **headers: str) -> dict:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": method, "path": path, "query_string": b"all_session=false",
            "headers": [(b"host", b"labels.example.org"), *raw]}  # fmt: skip


def test_cross_site_requests_are_named() -> None:
    evil, own = "https://evil.example", "https://labels.example.org"
    assert cross_site(_scope(origin=evil)) and cross_site(_scope("POST", "/login", origin=evil))
    assert cross_site(_scope(origin="null"))
    assert cross_site(_scope(origin=own)) is None and cross_site(_scope()) is None
    two = _scope(origin=own)
    two["headers"].append((b"origin", b"https://evil.example"))
    assert cross_site(two)  # no browser sends two Origins
    assert cross_site(_scope(path="/x", sec_fetch_site="Cross-Site", sec_fetch_mode="cors"))
    fetch = {"sec_fetch_site": "cross-site", "sec_fetch_mode": "cors"}
    assert cross_site(_scope(path="/gradio_api/token", **fetch))
    link = {"sec_fetch_site": "cross-site", "sec_fetch_mode": "navigate"}
    assert cross_site(_scope(**link)) is None  # a link to the app opens it
    assert cross_site(_scope(path="/logout", **link))  # but does not log anyone out
    assert cross_site(_scope("POST", "/login", sec_fetch_site="same-site",
                             sec_fetch_mode="navigate"))  # fmt: skip


def _run(limits: RequestLimits, scope: dict, chunks: list[tuple[bytes, float]]) -> list[dict]:
    """Send `scope` with body `chunks` ((bytes, delay before it)) through `limits`."""
    sent: list[dict] = []

    async def main() -> None:
        queue = list(chunks)

        async def receive() -> dict:
            if not queue:  # a request without a body
                return {"type": "http.request", "body": b"", "more_body": False}
            data, delay = queue.pop(0)
            await asyncio.sleep(delay)
            return {"type": "http.request", "body": data, "more_body": bool(queue)}

        async def send(message: dict) -> None:
            sent.append(message)

        await limits(scope, receive, send)

    asyncio.run(main())
    return sent


def test_bodies_are_read_whole_within_a_deadline_and_a_size_cap() -> None:
    seen: list[tuple[dict, bytes]] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        message = await receive()
        seen.append((scope, message["body"]))
        headers = [(b"access-control-allow-origin", b"https://evil.example"),
                   (b"Access-Control-Allow-Credentials", b"true"),
                   (b"set-cookie", b"access-token-x=abc; HttpOnly; SameSite=none; Secure"),
                   (b"content-type", b"application/json")]  # fmt: skip
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    def signed_in(scope: dict) -> bool:
        return dict(scope["headers"]).get(b"cookie") == b"access-token-abc=t"  # a live one

    limits = RequestLimits(app, timeout_s=0.3, max_body=1000, signed_in=signed_in)
    vote = _scope("POST", "/label_api/vote", cookie="access-token-abc=t")
    sent = _run(limits, vote, [(b"a" * 600, 0), (b"b" * 300, 0.05)])
    assert sent[0]["status"] == 200 and seen[-1][1] == b"a" * 600 + b"b" * 300
    headers = dict(sent[0]["headers"])
    assert not any(k.lower().startswith(b"access-control-") for k in headers)
    assert b"SameSite=lax" in headers[b"set-cookie"] and b"none" not in headers[b"set-cookie"]
    twin = [(b"set-cookie", b"access-token-unsecure-x=abc; HttpOnly"), (b"x", b"y")]

    async def login(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": twin})
        await send({"type": "http.response.body", "body": b"{}"})

    plain, tls = _scope("POST", "/login"), {**_scope("POST", "/login"), "scheme": "https"}
    assert dict(_run(RequestLimits(login), plain, [(b"", 0)])[0]["headers"]) == dict(twin)
    assert dict(_run(RequestLimits(login), tls, [(b"", 0)])[0]["headers"]) == {b"x": b"y"}
    signed_in = {"cookie": "access-token-abc=t"}
    big = [(b"a" * 600, 0), (b"b" * 600, 0)]
    assert _run(limits, _scope("POST", "/x", **signed_in), big)[0]["status"] == 413
    assert _run(limits, _scope("POST", "/login"), [(b"a" * 17_000, 0)])[0]["status"] == 413
    assert _run(limits, _scope("POST", "/x"), [(b"a" * 17_000, 0)])[0]["status"] == 413  # anon.
    forged = _scope("POST", "/x", cookie="access-token-abc=forged")
    assert _run(limits, forged, [(b"a" * 17_000, 0)])[0]["status"] == 413
    told = _scope("POST", "/x", content_length="5000000", **signed_in)
    assert _run(limits, told, [(b"a", 0), (b"b", 5.0)])[0]["status"] == 413  # nothing read
    assert _run(limits, _scope("GET", "/x", cookie="a" * 70_000), [])[0]["status"] == 431
    slow = [(b"a", 0), (b"b", 0.2), (b"c", 0.2)]  # each chunk in time, the whole body not
    assert _run(limits, _scope("POST", "/x"), slow)[0]["status"] == 408
    assert len(seen) == 1  # none of them reached the app
    assert _run(limits, _scope("POST", "/x", **signed_in), [(b"a" * 900, 0)])[0]["status"] == 200
    assert _run(limits, _scope("GET", "/x", origin="https://evil.example"), [])[0]["status"] == 403
    sent_ws: list[dict] = []

    async def websocket() -> None:
        async def receive() -> dict:
            return {"type": "websocket.connect"}

        async def send(message: dict) -> None:
            sent_ws.append(message)

        await limits({"type": "websocket", "path": "/x", "headers": []}, receive, send)

    asyncio.run(websocket())
    assert sent_ws == [{"type": "websocket.close", "code": 1008}] and len(seen) == 2
    _run(limits, _scope("GET", "/logout"), [])
    assert seen[-1][0]["query_string"] == b""  # logout ends every session of the user


# ---------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    data = make_pairs_dataset(root / "pairs", 8, size=24)
    users = root / "users.txt"
    for name in ("alice", "bob", "carol"):
        add_user(users, name, f"pw-{name}")
    add_user(users, "boss", "pw-boss", "admin")
    args = ["--data", str(data), "--users", str(users), "--db", str(root / "labels.sqlite"),
            "--request-timeout", "2"]  # fmt: skip
    with serve(args, log=root / "server.log") as s:
        s.users = users
        yield s


def _request(url: str, *, body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


def _status_or_closed(url: str, *, body: bytes, headers: dict) -> int | str:
    """The answer's status, or "closed" when the server closed the connection while the
    client was still sending (an early 413 for a body too large)."""
    try:
        return _request(url, body=body, headers=headers)[0]
    except (urllib.error.URLError, ConnectionError):
        return "closed"


def _login(url: str, user: str) -> tuple[str, str]:
    """(the Cookie header, the secure cookie's own Set-Cookie line)."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, headers = _request(
        url + "/login", body=f"username={user}&password=pw-{user}".encode(), headers=form
    )
    assert status == 200
    lines = headers.get_all("Set-Cookie")
    secure = next(c for c in lines if c.startswith("access-token-") and "unsecure" not in c)
    return "; ".join(c.split(";")[0] for c in lines), secure


def test_another_site_cannot_read_the_session_token(server) -> None:
    cookie, set_cookie = _login(server.url, "boss")
    assert "samesite=lax" in set_cookie.lower() and "samesite=none" not in set_cookie.lower()
    # a page on another site, server reached under its public name (as behind a TLS proxy)
    evil = {"Cookie": cookie, "Origin": "https://evil.example", "Host": "labels.example.org"}
    for path in ("/gradio_api/token", "/gradio_api/user", "/config", "/label_api/next_pair"):
        status, body, headers = _request(server.url + path, headers=evil)
        assert status == 403 and b"token" not in body, (path, status, body[:100])
        assert headers.get("access-control-allow-origin") is None
    no_cors = {"Cookie": cookie, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    assert _request(server.url + "/gradio_api/token", headers=no_cors)[0] == 403
    own = {"Cookie": cookie, "Origin": server.url, "Host": server.url.split("//")[1]}
    status, body, headers = _request(server.url + "/gradio_api/token", headers=own)
    assert status == 200 and json.loads(body)["user"] == "boss"
    assert headers.get("access-control-allow-origin") is None


def test_sessions_end_when_the_user_is_removed_or_gets_a_new_password(server) -> None:
    alice, _ = _login(server.url, "alice")
    bob, _ = _login(server.url, "bob")
    assert _request(server.url + "/label_api/next_pair", headers={"Cookie": alice})[0] == 200
    add_user(server.users, "bob", "a-new-password")  # bob's password reset
    lines = Path(server.users).read_text().splitlines()
    kept = [ln for ln in lines if ln.split(":")[0] != "alice"]
    Path(server.users).write_text("\n".join(kept) + "\n")  # alice removed
    assert "alice" not in load_users(server.users)
    for cookie in (alice, bob):
        assert _request(server.url + "/label_api/next_pair", headers={"Cookie": cookie})[0] == 401
        assert _request(server.url + "/config", headers={"Cookie": cookie})[0] == 401


def test_slow_heads_and_bodies_are_cut_off_and_login_stays_open(server) -> None:
    host, port = server.url.split("//")[1].split(":")
    slow = []
    for _ in range(3):  # connections that never finish their request head
        s = socket.create_connection((host, int(port)))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    body = socket.create_connection((host, int(port)))  # a login body that never finishes
    body.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
                 b"urlencoded\r\nContent-Length: 1000\r\n\r\nusername=carol")  # fmt: skip
    time.sleep(0.5)
    assert _login(server.url, "carol")  # meanwhile a login works
    start = time.monotonic()
    for s in slow:
        s.settimeout(10)
        assert s.recv(1024) == b""  # closed by the server, unanswered
    assert time.monotonic() - start < 6
    body.settimeout(10)
    assert b" 408 " in body.recv(1024).split(b"\r\n")[0]
    huge = socket.create_connection((host, int(port)))  # a head past h11's cap
    huge.sendall(b"GET /" + b"a" * (100 << 10))
    huge.settimeout(10)
    answer = huge.recv(1024)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4")
    status = _status_or_closed(
        server.url + "/login", body=b"username=carol&password=" + b"x" * (64 << 10),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert status in (413, "closed")  # refused from its Content-Length, before it is sent
    cookie, _ = _login(server.url, "carol")
    vote = {"vote_id": "v", "pair_id": "p", "choice": "left", "left_image": 0, "decide_ms": 1}
    status = _status_or_closed(
        server.url + "/label_api/vote", body=json.dumps({**vote, "pad": "x" * (2 << 20)}).encode(),
        headers={"Cookie": cookie, "Content-Type": "application/json"},
    )  # fmt: skip
    assert status in (413, "closed")
    status, body, _ = _request(
        server.url + "/label_api/vote",
        body=json.dumps(vote).replace('"left_image": 0', '"left_image": Infinity').encode(),
        headers={"Cookie": cookie, "Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 400 and b"integers" in body


def test_a_user_who_queues_many_generations_gets_one_at_a_time(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from mmalign_label.app import LabelApp
    from mmalign_label.generate import GENERATE_GAP_S
    from mmalign_label.images import import_pairs
    from mmalign_label.store import Store
    from mmalign_label.users import Authenticator

    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw")
    add_user(users, "bob", "pw")
    store = Store(tmp_path / "db.sqlite")
    store.add_pairs(import_pairs(make_pairs_dataset(tmp_path / "pairs", 2, size=16),
                                 tmp_path / "img"))  # fmt: skip
    app = LabelApp(store, tmp_path / "img", Authenticator(users), model="fake")
    made: list[str] = []

    def generate(prompt: str):  # type: ignore[no-untyped-def]
        made.append(prompt)
        return store.next_pair("nobody")

    app.generator = SimpleNamespace(generate=generate)  # type: ignore[assignment]
    ann, bob = SimpleNamespace(username="ann"), SimpleNamespace(username="bob")
    notes = [app.on_generate(f"a red circle {k}", ann)[5] for k in range(5)]  # ann's queue
    assert len(made) == 1 and all("One generation at a time" in n for n in notes[1:])
    assert "One generation" not in app.on_generate("a blue square", bob)[5]  # bob is not held
    assert len(made) == 2
    app.gate.last_end["ann"] -= GENERATE_GAP_S  # ann's gap has passed
    app.on_generate("a red circle again", ann)
    assert made[-1] == "a red circle again"


def test_a_pipelined_request_whose_body_comes_later_is_served(server) -> None:
    host, port = server.url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall(b"GET /label_api/next_pair HTTP/1.1\r\nHost: x\r\n\r\n"
              b"POST /label_api/vote HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
              b"\r\nContent-Length: 2\r\n\r\n")  # fmt: skip
    time.sleep(0.5)
    s.sendall(b"{}")
    s.settimeout(5)
    received = b""
    while received.count(b"HTTP/1.1 ") < 2:
        chunk = s.recv(4096)
        if not chunk:
            break
        received += chunk
    assert received.count(b"HTTP/1.1 401") == 2, received[:300]  # both answered (no login)


def test_a_request_whose_body_is_never_read_does_not_keep_its_connection(server) -> None:
    host, port = server.url.split("//")[1].split(":")
    cases = [
        b"GET /config HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab",  # answered 401
        b"POST /label_api/vote HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n"
        b"Content-Length: 100\r\n\r\nab",  # answered 403
    ]
    for request in cases:
        s = socket.create_connection((host, int(port)))
        s.sendall(request)
        s.settimeout(0.5)
        start, received = time.monotonic(), b""
        while time.monotonic() - start < 8:
            try:
                chunk = s.recv(4096)
            except TimeoutError:
                s.sendall(b"c")  # a byte of the body now and then
                continue
            except OSError:  # reset: closed by the server
                break
            if not chunk:
                break
            received += chunk
        assert time.monotonic() - start < 6 and received.startswith(b"HTTP/1.1 4"), received[:80]


def test_vote_answers_must_be_an_object_and_bad_limits_are_refused_at_start(server) -> None:
    from mmalign.cli import main

    cookie, _ = _login(server.url, "carol")
    vote = {"vote_id": "w", "pair_id": "p", "choice": "left", "left_image": 0, "decide_ms": 1}
    for answers in ([1], "x", {"overall": 3}):
        status, body, _ = _request(
            server.url + "/label_api/vote", body=json.dumps({**vote, "answers": answers}).encode(),
            headers={"Cookie": cookie, "Content-Type": "application/json"},
        )  # fmt: skip
        assert status == 400 and b"answers" in body
    for option in ("--session-hours", "--request-timeout"):  # refused by argparse: usage, 2
        with pytest.raises(SystemExit) as end:
            main(["label", "--users", str(server.users), option, "nan"])
        assert end.value.code == 2


def _raw(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    """`request` sent from `source` (any 127.x address reaches the server); the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as s:  # fmt: skip
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_one_address_cannot_take_every_connection(server) -> None:
    from mmalign_label.connections import PER_CLIENT

    port = int(server.url.rsplit(":", 1)[1])
    page = b"GET /theme.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(PER_CLIENT)]  # idle
    try:
        time.sleep(0.3)  # accepted (the head deadline, 2 s, closes them later)
        assert _raw(port, page).startswith(b"HTTP/1.1 503 ")  # one more from 127.0.0.1
        assert _raw(port, page, source="127.0.0.2").startswith(b"HTTP/1.1 200 ")  # another
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while not _raw(port, page).startswith(b"HTTP/1.1 200 ") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _raw(port, page).startswith(b"HTTP/1.1 200 ")


def _api(url: str, path: str, body: bytes, cookie: str) -> tuple[int, bytes]:
    headers = {"Cookie": cookie, "Content-Type": "application/json"}
    status, text, _ = _request(url + path, body=body, headers=headers)
    if status == 200 and path.startswith("/gradio_api/call/"):  # the result stream
        event = json.loads(text)["event_id"]
        status, text, _ = _request(f"{url}{path}/{event}", headers={"Cookie": cookie})
    return status, text


def test_malformed_votes_get_clean_errors_without_sql_or_paths(server) -> None:
    cookie, _ = _login(server.url, "carol")
    leaks = (b"SELECT", b"sqlalchemy", b"sqlite", b"Traceback", b"File \"",
             str(Path(server.users).parent).encode(), b"/work/")  # fmt: skip
    cases = [
        (["abcdefgh12", ["x"], "left", 0, 1, None], b"pair_id must be a string"),
        (["abcdefgh12", {"a": 1}, "left", 0, 1, None], b"pair_id must be a string"),
        (["abcdefgh12", "p", ["left"], 0, 1, None], b"choice must be a string"),
        (["abcdefgh12", "p", "left", "zero", 1, None], b"must be integers"),
        (["abcdefgh12", "p", "left", 0, 1, ["x"]], b"answers must be an object"),
    ]
    for data, reason in cases:
        for path in ("/gradio_api/call/vote", "/gradio_api/api/vote"):
            status, text = _api(server.url, path, json.dumps({"data": data}).encode(), cookie)
            assert reason in text, (path, data, status, text[:300])
            assert not any(leak in text for leak in leaks), (path, data, text[:300])
    # too few arguments: refused before Gradio fails on them (its error names the inputs)
    for path in ("/gradio_api/call/vote", "/gradio_api/api/vote"):
        status, text = _api(server.url, path, json.dumps({"data": ["x"]}).encode(), cookie)
        assert status == 422 and b"takes 6 inputs, got 1" in text, (path, text[:300])
        assert b"input values" not in text, (path, text[:300])
    vote = {"vote_id": "abcdefgh13", "pair_id": {"a": 1}, "choice": "left", "left_image": 0,
            "decide_ms": 1}  # fmt: skip
    status, text = _api(server.url, "/label_api/vote", json.dumps(vote).encode(), cookie)
    assert status == 400 and b"pair_id must be a string" in text


def test_deeply_nested_json_is_a_400(server) -> None:
    cookie, _ = _login(server.url, "carol")
    deep = b"[" * 200_000 + b"]" * 200_000  # past Python's recursion limit
    nested = json.dumps(json.loads("{" + '"a":{' * 100 + "}" * 101))  # parses, too deep
    for path in ("/label_api/vote", "/gradio_api/call/vote", "/gradio_api/queue/join",
                 "/gradio_api/api/vote"):  # fmt: skip
        for body in (deep, nested.encode()):
            status, text = _api(server.url, path, body, cookie)
            assert status == 400 and b"nests deeper" in text, (path, status, text[:200])


def test_an_image_that_cannot_be_shown_names_no_server_path(tmp_path: Path, capsys) -> None:
    from types import SimpleNamespace

    from mmalign_label.app import LabelApp
    from mmalign_label.images import import_pairs
    from mmalign_label.store import Store

    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw")
    store = Store(tmp_path / "db.sqlite")
    store.add_pairs(import_pairs(make_pairs_dataset(tmp_path / "pairs", 1, size=16),
                                 tmp_path / "img"))  # fmt: skip
    for image in (tmp_path / "img").iterdir():
        image.unlink()  # the image folder lost its files
    app = LabelApp(store, tmp_path / "img", Authenticator(users))
    status = app.on_load(SimpleNamespace(username="ann"))[5]
    assert "cannot show pair" in status and str(tmp_path) not in status
    assert str(tmp_path) in capsys.readouterr().err  # the reason, for the admin
