"""A signed-in client cannot stall the labeling server with JSON bodies of many values.

Every JSON body under /gradio_api/ (RouteGuard) and the fast vote route is parsed on the
event loop, then Gradio parses and walks it again; a 1 MiB body of `[[],[],...]` (330,000
lists) cost over a second of the loop and full garbage collections, and 4 connections of one
annotator sending it made another annotator's `next_pair` take 2.3 s (median; 2 ms quiet).
Bodies with more than `MAX_ITEMS` values are now refused (400) from a count of the raw
bytes, before anything parses them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio")
from mmalign_label import jsonbody
from mmalign_label.guard import RouteGuard
from mmalign_label.jsonbody import MAX_ITEMS, TooDeep, TooMany, parse_json

WIDE = b'{"data": [' + b",".join([b"[]"] * 330_000) + b"]}"  # just under the 1 MiB cap


def _no_parse(monkeypatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a body over the value cap was parsed")

    monkeypatch.setattr(jsonbody.json, "loads", refuse)


def test_bodies_with_too_many_values_are_refused_unparsed(monkeypatch) -> None:
    assert len(WIDE) < 1 << 20
    vote = {"data": ["abcdefgh12", "p" * 24, "left", 0, 1500, {"overall": "left"}],
            "event_data": None, "fn_index": 10, "session_hash": "s1"}  # fmt: skip
    assert parse_json(json.dumps(vote).encode()) == vote
    flat = b"[" + b",".join([b"0"] * MAX_ITEMS) + b"]"  # 1 bracket + MAX_ITEMS - 1 commas
    assert len(parse_json(flat)) == MAX_ITEMS  # at the cap
    _no_parse(monkeypatch)
    for body in (WIDE, WIDE.decode(), flat[:-1] + b",0]", b"[" * 200_000 + b"]" * 200_000):
        with pytest.raises(TooMany, match=f"more than {MAX_ITEMS} values"):
            parse_json(body)
    assert issubclass(TooMany, ValueError) and not issubclass(TooMany, TooDeep)


def _post(app: Any, path: str, body: bytes) -> tuple[int, bytes]:
    sent: list[dict] = []

    async def main() -> None:
        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "query_string": b"",
                 "headers": [(b"host", b"labels.example.org"), (b"cookie", b"access-token-x=t"),
                             (b"content-type", b"application/json")]}  # fmt: skip
        await app(scope, receive, send)

    asyncio.run(main())
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_the_route_guard_answers_400_before_gradio_sees_the_body(monkeypatch) -> None:
    reached: list[str] = []

    async def gradio(scope, receive, send):  # type: ignore[no-untyped-def]
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = RouteGuard(gradio, lambda scope: "alice")  # signed in
    assert _post(guard, "/gradio_api/run/my_votes", b'{"data": []}')[0] == 200
    _no_parse(monkeypatch)
    for path in ("/gradio_api/run/my_votes", "/gradio_api/queue/join", "/gradio_api/call/vote"):
        status, text = _post(guard, path, WIDE)
        assert status == 400 and b"values" in text, (path, status, text)
    assert reached == ["/gradio_api/run/my_votes"]  # only the small body got through


def fast_app(tmp_path: Path) -> tuple[Any, Any]:
    """The app's fast routes over a store with one pair `p0`, alice signed in (token `t`),
    and a stand-in for the Gradio mount that must not be reached: (app, store)."""
    from fastapi import FastAPI
    from mmalign_label.fast_routes import add_fast_routes
    from mmalign_label.labeling import Labeling
    from mmalign_label.store import Pair, Store
    from starlette.routing import Mount

    store = Store(tmp_path / "labels.sqlite")
    store.add_pairs([Pair("p0", "a prompt", "a.png", "b.png", "test")])
    app = FastAPI()
    add_fast_routes(app, Labeling(store))

    async def gradio(scope, receive, send):  # type: ignore[no-untyped-def]
        raise AssertionError("not reached")

    gradio.cookie_id, gradio.tokens = "x", {"t": "alice"}  # type: ignore[attr-defined]
    app.router.routes.append(Mount("/", app=gradio))
    return app, store


def test_the_fast_vote_route_answers_400(tmp_path: Path, monkeypatch) -> None:
    app, store = fast_app(tmp_path)
    vote = {"vote_id": "abcdefgh12", "pair_id": "p0", "choice": "left", "left_image": 0,
            "decide_ms": 5}  # fmt: skip
    status, text = _post(app, "/label_api/vote", json.dumps(vote).encode())
    assert status == 200 and json.loads(text)["status"] == "stored", text
    _no_parse(monkeypatch)
    status, text = _post(app, "/label_api/vote", WIDE)
    assert status == 400 and b"values" in text, (status, text)
    assert len(store.votes_of("alice")) == 1
