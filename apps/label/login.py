"""The login path in front of Gradio's `/login`: the password check off the event loop, and
failed logins limited per client address.

Gradio awaits `auth=` in its async login route when it is an `async def` function
(`inspect.iscoroutinefunction`; an object with an async `__call__` is not detected and
would be called without being awaited) and otherwise calls it on the event loop, where one
scrypt check (about 33 ms) stalls every other request of the server. `off_loop` gives Gradio
an `async def` that runs the check on a small pool of its own, so logins never take the
threads the vote routes run on and at most `workers` cores go to scrypt.

`LoginLimit` answers a client address that has used up its failed logins with 429 before
Gradio sees the request: no scrypt runs, and the answer is the same for every name. An
attempt counts as failed from the moment it starts (a success gives it back), so parallel
attempts cannot overtake the limit. The address is the peer's, or the `X-Forwarded-For` of
a proxy that uvicorn trusts (`FORWARDED_ALLOW_IPS`, default 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

LOGIN_LIMIT = 10  # failed logins per client address per window
LOGIN_WINDOW_S = 60.0
MAX_PENDING = 64  # logins being checked at once, all addresses together
# A core is left to the vote routes on a small machine; scrypt is pure CPU.
_WORKERS = max(1, min(4, (os.cpu_count() or 2) - 1))

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]  # fmt: skip


def off_loop(
    check: Callable[[str, str], bool], workers: int = _WORKERS
) -> Callable[[str, str], Awaitable[bool]]:
    """An `async def` for Gradio's `auth=` that runs `check` on its own worker threads."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="label-login")

    async def login(name: str, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(pool, check, name, password)

    return login


class FailedLogins:
    """A sliding window of failed logins per client address (the event loop's thread only)."""

    def __init__(
        self, limit: int = LOGIN_LIMIT, window_s: float = LOGIN_WINDOW_S, *,
        clock: Callable[[], float] = time.monotonic, max_clients: int = 100_000,
    ) -> None:  # fmt: skip
        if limit < 1 or window_s <= 0:
            raise ValueError(f"login limit must be >= 1 per window > 0 s, got {limit}/{window_s}")
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self.max_clients = max_clients  # bounds the memory a flood of addresses can take
        self._failed: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str) -> deque[float]:
        times = self._failed.get(client)
        if times is None:
            return deque()
        cutoff = self.clock() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failed[client]
        return times

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        times = self._recent(client)
        if len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window_s - self.clock())

    def attempt(self, client: str) -> float:
        """Count an attempt as failed until `succeeded`; returns its time stamp."""
        now = self.clock()
        times = self._failed.setdefault(client, deque())
        self._failed.move_to_end(client)
        times.append(now)
        while len(self._failed) > self.max_clients:
            self._failed.popitem(last=False)
        return now

    def succeeded(self, client: str, stamp: float) -> None:
        times = self._failed.get(client)
        if times is not None and stamp in times:
            times.remove(stamp)


class LoginLimit:
    """ASGI middleware for `POST /login`: limits failed logins per address and logins in
    flight; every other request passes untouched."""

    def __init__(self, app: ASGIApp, failed: FailedLogins | None = None) -> None:
        self.app = app
        self.failed = failed or FailedLogins()
        self.pending = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if not (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"].rstrip("/") == "/login"):  # fmt: skip
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("?", 0))[0]
        wait = self.failed.retry_after(client)
        if wait > 0:
            message = f"Too many failed logins from your address: try again in {wait:.0f} s."
            await answer(send, 429, message, {"retry-after": str(int(wait) + 1)})
            return
        if self.pending >= MAX_PENDING:
            await answer(send, 503, "The server is busy: try again in a few seconds.", {})
            return
        stamp = self.failed.attempt(client)
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        self.pending += 1
        try:
            await self.app(scope, receive, watch)
        finally:
            self.pending -= 1
            if status and status[0] < 400:  # signed in; a refusal (400) stays counted
                self.failed.succeeded(client, stamp)


async def answer(send: Any, status: int, message: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
