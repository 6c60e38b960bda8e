"""The labeling server's log stays bounded whatever a signed-in user sends: calls of events the
app does not have are a 4xx before Gradio fails on them (`endpoints.py`), refused votes leave
no stack trace, lines are limited per user (`logbudget.py`), and an exception escaping a route
is one line (`guard.py`). And Gradio calls without a session hash share no page state."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio")
from label_helpers import Clock, call_status, login_cookie
from mmalign_label.endpoints import Endpoints, Event
from mmalign_label.guard import RouteGuard
from mmalign_label.logbudget import LogBudget
from mmalign_label.store import Store
from mmalign_label.testing import cheap_password_hashes, make_pairs_dataset, serve
from mmalign_label.users import add_user

pytestmark = pytest.mark.timeout(300)


def _endpoints() -> Endpoints:
    # next_pair: no inputs; ui_skip: the page state only (skip_api); vote: six values
    return Endpoints({0: Event("next_pair", 0, 0), 1: Event("ui_skip", 1, 0),
                      2: Event("vote", 6, 6)})  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/gradio_api/run/predict", {"data": [], "fn_index": 999}, 404),
        ("/gradio_api/run/predict", {"data": [], "fn_index": -1}, 404),
        ("/gradio_api/run/predict", {"data": [], "fn_index": "x"}, 422),
        ("/gradio_api/run/predict", {"data": [], "fn_index": 1.5}, 422),
        ("/gradio_api/run/nosuch", {"data": []}, 404),
        ("/gradio_api/api/nosuch", {"data": []}, 404),
        ("/gradio_api/call/nosuch", {"data": []}, 404),
        ("/gradio_api/queue/join", {"data": [], "fn_index": 999, "session_hash": "s1234567"}, 404),
        ("/gradio_api/queue/join", {"data": [], "session_hash": "s1234567"}, 422),
        ("/gradio_api/run/vote", {"data": ["x"] * 5}, 422),
        ("/gradio_api/call/vote", {"data": ["x"]}, 422),
        ("/gradio_api/run/ui_skip", {"data": []}, 422),  # /run fills in nothing
        # what Gradio runs (or answers itself, without a stack trace)
        ("/gradio_api/call/ui_skip", {"data": []}, None),  # /call/ fills in the page state
        ("/gradio_api/run/vote", {"data": ["x"] * 6}, None),
        ("/gradio_api/run/vote", {"data": [], "fn_index": 0}, None),  # fn_index wins
        ("/gradio_api/run/predict", {"data": [None], "fn_index": "1"}, None),
        ("/gradio_api/queue/join", {"data": []}, None),  # Gradio's 400: no session hash
        ("/gradio_api/run/nosuch", {"data": "not a list"}, None),  # Gradio's 422
        ("/label_api/vote", {"data": []}, None),
    ],
)
def test_calls_of_unknown_events_or_too_few_inputs_are_refused(path, body, status) -> None:
    refusal = _endpoints().refusal("POST", path, body)
    assert (refusal[0] if refusal else None) == status, refusal


def test_the_log_takes_a_bounded_number_of_lines_per_user() -> None:
    out, clock = io.StringIO(), Clock()
    log = LogBudget(lines=5, window_s=60, stream=out, clock=clock)
    assert sum(log.write("mallory", f"label: line {k}") for k in range(1000)) == 5
    assert log.write("ann", "label: ann's line")  # another user's budget is their own
    assert out.getvalue().count("\n") == 6
    clock.now = 61.0
    assert log.write("mallory", "label: later")
    assert "995 earlier lines about mallory left out" in out.getvalue().splitlines()[-1]
    log.write("ann", "evil \x1b[2J\rname\nsecond line \x07")
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert "\x07" not in out.getvalue() and "\\x1b[2J\\rname" in out.getvalue()


def _fail(k: int) -> None:
    raise KeyError(f"key {k}")


def test_an_error_has_its_stack_trace_once_per_place() -> None:
    out = io.StringIO()
    log = LogBudget(lines=100, stream=out)
    for k in range(50):
        try:
            _fail(k)
        except KeyError as err:
            log.error("mallory", "POST /x", err)
    text = out.getvalue()
    assert text.count("Traceback") == 1 and text.count("label: POST /x failed") == 50


def test_an_error_message_of_many_lines_is_one_line() -> None:
    out = io.StringIO()
    log = LogBudget(lines=3, traces=0, stream=out)  # no stack traces: the message alone
    for _ in range(3):
        log.error("mallory", "POST /x", ValueError("x\n" * 5000))
    assert out.getvalue().count("\n") == 3  # three budgeted lines, newlines escaped


def test_an_exception_escaping_a_route_is_one_short_line() -> None:
    calls = 0

    async def broken(scope, receive, send) -> None:
        nonlocal calls
        calls += 1
        if calls % 2:  # after its answer began (Starlette's 500), and before
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        raise KeyError(999)

    out = io.StringIO()
    guard = RouteGuard(broken, lambda scope: scope["user"], log=LogBudget(lines=10, stream=out))
    for _ in range(200):  # the exception does not reach uvicorn, which logs a stack trace
        assert call_status(guard, "mallory", "POST", "/label_api/vote", body=b"{}") == 500
    assert out.getvalue().count("Traceback") == 1
    assert out.getvalue().count("label: POST /label_api/vote failed for mallory") == 10


# ------------------------------------------------------------------ the server itself


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    data = make_pairs_dataset(root / "pairs", 6, size=16)
    users = root / "users.txt"
    with cheap_password_hashes():
        for name in ("alice", "bob"):
            add_user(users, name, f"pw-{name}")
    db = root / "labels.sqlite"
    args = ["--data", str(data), "--users", str(users), "--db", str(db), "--overlap", "2"]
    with serve(args, log=root / "server.log") as s:
        s.db = db
        yield s


def _post(url: str, body: object, cookie: str) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", "Cookie": cookie}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    if status == 200 and "/gradio_api/call/" in url:  # the result stream
        event = json.loads(text)["event_id"]
        req = urllib.request.Request(f"{url}/{event}", headers={"Cookie": cookie})
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    return status, text


def _login(url: str, user: str) -> str:
    return login_cookie(url, user, f"pw-{user}")


def _log_since(server, start: int) -> str:
    time.sleep(0.5)  # the queue's worker writes after the answer
    return Path(server.log).read_bytes()[start:].decode(errors="replace")


def test_calls_of_events_the_app_lacks_are_a_4xx_without_a_stack_trace(server) -> None:
    url, alice = server.url, _login(server.url, "alice")
    start = Path(server.log).stat().st_size
    bad = [
        ("/gradio_api/run/predict", {"data": [], "fn_index": 999}),
        ("/gradio_api/run/predict", {"data": [], "fn_index": -5}),
        ("/gradio_api/run/nosuch", {"data": []}),
        ("/gradio_api/api/nosuch", {"data": []}),
        ("/gradio_api/call/nosuch", {"data": []}),
        ("/gradio_api/call/v2/nosuch", {}),
        ("/gradio_api/call/v2/vote", {"bogus": 1}),
        ("/gradio_api/queue/join", {"data": [], "fn_index": 999, "session_hash": "abcdefgh1"}),
        ("/gradio_api/run/vote", {"data": ["abcdefgh12"]}),
        ("/gradio_api/call/vote", {"data": ["abcdefgh12"]}),
    ]
    for _ in range(5):
        for path, body in bad:
            status, text = _post(url + path, body, alice)
            assert 400 <= status < 500, (path, status, text[:200])
    log = _log_since(server, start)
    assert "Traceback" not in log and len(log) < 1000, log[:3000]


def test_refused_votes_leave_no_stack_trace(server) -> None:
    url, alice = server.url, _login(server.url, "alice")
    start = Path(server.log).stat().st_size
    refused = {"data": ["abcdefgh12", "no-such-pair", "left", 0, 5, None]}
    for _ in range(10):
        for path in ("/gradio_api/run/vote", "/gradio_api/call/vote"):
            status, text = _post(url + path, refused, alice)
            assert b"unknown pair" in text, (path, status, text[:200])
        status, text = _post(url + "/gradio_api/run/admin_stats", {"data": []}, alice)
        assert b"admin only" in text
    log = _log_since(server, start)
    assert "Traceback" not in log and len(log) < 1000, log[:3000]


def test_calls_without_a_session_hash_share_no_state(server) -> None:
    """Each Gradio call without a session hash runs on a page state of its own (Gradio's
    `restore_session_state` makes a new one; the queue uses the event's id): bob's vote
    button pressed without a session cannot vote on the pair alice was just shown."""
    alice, bob = _login(server.url, "alice"), _login(server.url, "bob")
    calls = [("/gradio_api/run/predict", {"data": [None], "fn_index": 5}),  # ui_skip
             ("/gradio_api/run/ui_skip", {"data": [None]}),
             ("/gradio_api/api/ui_left", {"data": [None]}),
             ("/gradio_api/call/ui_left", {"data": []})]  # fmt: skip
    for cookie in (alice, bob, alice, bob):
        for path, body in calls:
            status, text = _post(server.url + path, body, cookie)
            assert status == 200 and b"Nothing to vote on" in text, (path, text[:300])
    assert Store(server.db).all_votes() == []
