"""Shared by the labeling app's tests: one request through an ASGI middleware, in process, and a
clock the tests move by hand."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any


def call_status(app: Any, user: str, method: str, path: str, query: bytes = b"",
                body: bytes = b"") -> int:  # fmt: skip
    """The status `app` (e.g. a `guard.RouteGuard`) answers a signed-in `user`'s JSON request."""
    scope = {"type": "http", "method": method, "path": path, "query_string": query,
             "headers": [(b"content-type", b"application/json")], "user": user}  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return int(sent[0]["status"])


class Clock:
    """A `time.monotonic` stand-in that moves only when a test sets `now`."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def login_cookie(url: str, user: str, password: str) -> str:
    """The session cookie of `user` signed in to the server at `url` through its login form."""
    body = f"username={user}&password={password}".encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    req = urllib.request.Request(url + "/login", data=body, method="POST", headers=form)
    with urllib.request.urlopen(req, timeout=20) as r:
        cookies = r.headers.get_all("Set-Cookie")
    return "; ".join(c.split(";")[0] for c in cookies)
