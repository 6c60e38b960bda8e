"""The route guard refuses session hashes and event ids longer than Gradio ever makes
(review 3, defect 1). Every id a signed-in request names is remembered as its user's
(`guard.Owners`, up to 5,000 per user), whatever its length: one annotator naming 5,000
session hashes of 1 MiB each (a JSON body to any `/gradio_api/` route, or 60 KiB in the
query) made the server keep gigabytes."""

from __future__ import annotations

import json

import pytest
from label_helpers import call_status
from mmalign_label.guard import MAX_ID, RouteGuard

_call = call_status


@pytest.fixture
def guard() -> tuple[RouteGuard, list[str]]:
    reached: list[str] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        reached.append(scope["path"])
        body = json.dumps({"event_id": "e" * 32}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return RouteGuard(app, lambda scope: scope["user"]), reached


def _kept(route_guard: RouteGuard) -> int:
    return sum(len(key) for key in route_guard.owners._owner)


def test_long_session_hashes_are_refused_and_not_kept(guard) -> None:
    route_guard, reached = guard
    big = "x" * 200_000
    for k in range(20):
        body = json.dumps({"session_hash": f"{k}{big}", "data": []}).encode()
        assert _call(route_guard, "bob", "POST", "/gradio_api/queue/join", body=body) == 400
        query = f"session_hash={k}{'y' * 30_000}".encode()
        assert _call(route_guard, "bob", "GET", "/gradio_api/queue/data", query) == 400
        assert _call(route_guard, "bob", "GET", f"/gradio_api/heartbeat/{k}{big}") == 400
    assert reached == []  # Gradio never saw them
    assert _kept(route_guard) < 10_000  # nothing of the 20 x 430 KB was kept


def test_ids_gradio_makes_still_work(guard) -> None:
    route_guard, reached = guard
    session = "a1b2c3d4e5f"  # Gradio's client: 11 characters; event ids: 32 hex
    assert _call(route_guard, "bob", "GET", "/gradio_api/queue/data",
                 f"session_hash={session}".encode()) == 200  # fmt: skip
    body = json.dumps({"session_hash": "s" * MAX_ID, "data": []}).encode()
    assert _call(route_guard, "bob", "POST", "/gradio_api/queue/join", body=body) == 200
    assert _call(route_guard, "bob", "GET", f"/gradio_api/call/vote/{'e' * 32}") == 200
    assert _call(route_guard, "alice", "GET", f"/gradio_api/call/vote/{'e' * 32}") == 403
    assert len(reached) == 3
