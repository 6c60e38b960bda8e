"""A user starts at most `NEW_SESSIONS` Gradio sessions per `NEW_SESSIONS_S` (review 3,
defect 3). Gradio keeps the state of its last 10,000 sessions (`state_session_capacity`)
and forgets the least recently used beyond it; the guard let a signed-in annotator start
as many as they liked (a fresh session hash per request, or `/call/{api}` without one), so
one annotator could push every other user's page state out (the pair on screen, the vote
id, the answers given) and their next vote met "Nothing to vote on"."""

from __future__ import annotations

import json

import pytest
from label_helpers import call_status
from mmalign_label.guard import NEW_SESSIONS, NEW_SESSIONS_S, Owners, RouteGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_call = call_status


@pytest.fixture
def world() -> tuple[RouteGuard, list[str], Clock]:
    reached: list[str] = []
    events = iter(range(10**6))

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        reached.append(scope["user"])
        body = json.dumps({"event_id": f"event{next(events):027d}"}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    clock = Clock()
    guard = RouteGuard(app, lambda scope: scope["user"])
    guard.owners = Owners(clock=clock)
    return guard, reached, clock


def _join(guard: RouteGuard, user: str, session: str) -> int:
    body = json.dumps({"session_hash": session, "data": [], "fn_index": 0}).encode()
    return _call(guard, user, "POST", "/gradio_api/queue/join", body=body)


def test_one_user_cannot_start_sessions_without_end(world) -> None:
    guard, reached, clock = world
    statuses = [_join(guard, "mallory", f"m{k:010d}") for k in range(NEW_SESSIONS + 50)]
    assert statuses[:NEW_SESSIONS] == [200] * NEW_SESSIONS
    assert set(statuses[NEW_SESSIONS:]) == {429}
    # nor by other ways of naming a new session ...
    assert _call(guard, "mallory", "GET", "/gradio_api/queue/data", b"session_hash=new1") == 429
    assert _call(guard, "mallory", "GET", "/gradio_api/heartbeat/new2") == 429
    assert _call(guard, "mallory", "POST", "/gradio_api/run/vote",
                 body=b'{"session_hash": "new3", "data": []}') == 429  # fmt: skip
    # ... or by a call that names none (Gradio gives it a session of its own)
    assert _call(guard, "mallory", "POST", "/gradio_api/call/vote", body=b'{"data": []}') == 429
    assert reached == ["mallory"] * NEW_SESSIONS  # Gradio saw none of the refused ones
    # her sessions already started go on, and other users start theirs
    assert _join(guard, "mallory", "m0000000007") == 200
    assert _call(guard, "mallory", "GET", "/gradio_api/queue/data",
                 b"session_hash=m0000000007") == 200  # fmt: skip
    assert _join(guard, "bob", "b0000000001") == 200
    assert _call(guard, "bob", "POST", "/gradio_api/call/vote", body=b'{"data": []}') == 200
    # the window slides
    clock.now += NEW_SESSIONS_S + 1
    assert _join(guard, "mallory", "m-later-001") == 200


def test_calls_without_a_session_hash_count_as_new_sessions(world) -> None:
    guard, reached, _ = world
    body = b'{"data": []}'
    statuses = [_call(guard, "eve", "POST", "/gradio_api/call/vote", body=body)
                for _ in range(NEW_SESSIONS + 5)]  # fmt: skip
    assert statuses.count(200) == NEW_SESSIONS and statuses[-1] == 429
    assert reached == ["eve"] * NEW_SESSIONS
    # the keyword form /call/v2/ is closed to everyone (review 4: a 500 with a stack trace)
    assert _call(guard, "carol", "POST", "/gradio_api/call/v2/vote", body=body) == 404
    # a page's usual traffic: one new session, then its result stream and heartbeats
    assert _join(guard, "carol", "c0000000001") == 200
    for _ in range(NEW_SESSIONS + 5):
        assert _call(guard, "carol", "GET", "/gradio_api/queue/data",
                     b"session_hash=c0000000001") == 200  # fmt: skip
        assert _call(guard, "carol", "GET", "/gradio_api/heartbeat/c0000000001") == 200
