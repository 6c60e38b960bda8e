"""The route guard reads an empty `?session_hash=` as a session hash like any other, one
that belongs to no caller, and refuses it (review 2, defect 2): parsed as absent, it was
never checked, so a request naming the empty session reached Gradio's queue routes (which
read the empty value as a session hash) whoever had used it."""

from __future__ import annotations

import json

import pytest
from label_helpers import call_status
from mmalign_label.guard import RouteGuard

_call = call_status


@pytest.fixture
def guard() -> tuple[RouteGuard, list[tuple[str, str, bytes]]]:
    reached: list[tuple[str, str, bytes]] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        reached.append((scope["user"], scope["path"], scope.get("query_string", b"")))
        body = json.dumps({"event_id": "e" * 32}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return RouteGuard(app, lambda scope: scope["user"]), reached


@pytest.mark.parametrize("query", [b"session_hash=", b"session_hash", b"session_hash=&x=1",
                                   b"session_hash=mine-1&session_hash="])  # fmt: skip
def test_an_empty_session_hash_in_the_query_is_refused(guard, query: bytes) -> None:
    route_guard, reached = guard
    assert _call(route_guard, "bob", "GET", "/gradio_api/queue/data", query) == 403
    assert reached == []  # Gradio never saw it


def test_an_empty_session_hash_is_nobodys_not_the_first_callers(guard) -> None:
    route_guard, reached = guard
    # alice sends an empty session hash in a join's body: it does not become hers ...
    status = _call(route_guard, "alice", "POST", "/gradio_api/queue/join",
                   body=json.dumps({"session_hash": "", "data": []}).encode())  # fmt: skip
    assert status == 403
    # ... and bob, naming it in the query, cannot read what was sent under it
    assert _call(route_guard, "bob", "GET", "/gradio_api/queue/data", b"session_hash=") == 403
    assert _call(route_guard, "alice", "GET", "/gradio_api/queue/data", b"session_hash=") == 403
    assert reached == []
    # a real session hash still works for its user, and only for them
    assert _call(route_guard, "bob", "GET", "/gradio_api/queue/data", b"session_hash=b0b") == 200
    assert _call(route_guard, "alice", "GET", "/gradio_api/queue/data",
                 b"session_hash=b0b") == 403  # fmt: skip
    assert reached == [("bob", "/gradio_api/queue/data", b"session_hash=b0b")]
