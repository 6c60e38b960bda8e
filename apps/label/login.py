"""The login path in front of Gradio's `/login`: the password check off the event loop, and
failed logins limited per client and per account name.

Gradio awaits `auth=` in its async login route when it is an `async def` function
(`inspect.iscoroutinefunction`; an object with an async `__call__` is not detected and
would be called without being awaited) and otherwise calls it on the event loop, where one
scrypt check stalls every other request of the server. `off_loop` gives Gradio an
`async def` that runs the check on a small pool of its own, so logins never take the
threads the vote routes run on and at most `workers` cores go to scrypt.

`LoginLimit` answers 429 before Gradio sees the request (no scrypt runs) when either
- the client (`addresses.client_key`: an IPv4 address, an IPv6 /64) has used up its failed
  logins (`LOGIN_LIMIT` a minute), or
- the account name has (`NAME_LIMIT` in `NAME_WINDOW_S`, from any number of clients: a
  guesser spread over many addresses). Names are counted whether or not the account
  exists, and the answer is the same as the client's: status, body, headers, and no
  check either way, so it does not tell which accounts exist. The window slides: the
  limit lifts as old failures age out; a success is not needed (nor possible while limited).
An attempt counts as failed from the moment it starts (a success gives it back), so
parallel attempts cannot overtake a limit. The address is the peer's, or the
`X-Forwarded-For` of a proxy that uvicorn trusts (`FORWARDED_ALLOW_IPS`, default 127.0.0.1).

At most `MAX_PENDING` logins are checked at once (503 beyond), shared out so that no flood
takes them all:
- clients with recent failures (an attempt in flight counts) share `FAILING_PENDING` of
  them, so a flood from failing addresses leaves the rest to clients without failures;
- the clients of one IPv6 network (`addresses.network_key`, a /48) hold at most
  `NETWORK_PENDING`: every /64 is a client of its own and a new one has no failures, so
  one holder of a /48 (65,536 clients) could otherwise hold every slot;
- the last `KNOWN_RESERVE` slots are kept for clients that signed in within `KNOWN_S`
  (`KnownClients`; they skip the network share too): a flood from many networks, or a
  botnet's IPv4 addresses, can keep new clients out while it lasts, but not annotators
  who signed in from the same client before (kept in memory: a restart forgets them).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .addresses import client_key, network_key

LOGIN_LIMIT = 10  # failed logins per client per window
LOGIN_WINDOW_S = 60.0
# Per account name: a guesser with many addresses gets this many tries per window in all;
# the same is what one who only wants to lock a user out must keep sending.
NAME_LIMIT = 20
NAME_WINDOW_S = 900.0
MAX_PENDING = 64  # logins being checked at once, all clients together
# Of them, for clients with recent failures together: above the default LOGIN_LIMIT, so one
# client's parallel attempts meet its 429 first; small, because a login without failures
# waits behind the checks already queued (about 0.4 s each, on 1-4 threads).
FAILING_PENDING = 16
# Why a share per network and a reserve (and not a smaller limit per client): a client is
# what can be told apart, and one IPv6 site is 65,536 of them. A share per /48 bounds what a
# site's holder can take (a few free tunnel /48s take 8 slots each); no per-address rule
# can bound a flood from many networks, so a reserve keeps logins open to clients known
# from an earlier sign-in (which takes a password). A /48 of real users (one organisation)
# rarely has 8 logins checked at the same moment; beyond it, they are asked to retry (503).
NETWORK_PENDING = 8  # logins in flight per IPv6 /48 (clients not known), an eighth of all
KNOWN_RESERVE = 16  # of MAX_PENDING, only for clients that signed in before
KNOWN_S = 30 * 86_400.0  # a client counts as known this long after its last sign-in
LIMITED = "Too many failed logins: try again in {wait} s."
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

    def recent(self, client: str) -> int:
        """`client`'s failures in the window (attempts in flight included)."""
        return len(self._recent(client))

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


class KnownClients:
    """Clients (`addresses.client_key`) that signed in within `known_s` (the event loop's
    thread only); the oldest are forgotten first beyond `max_clients`."""

    def __init__(
        self, known_s: float = KNOWN_S, *, clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:  # fmt: skip
        self.known_s, self.clock, self.max_clients = known_s, clock, max_clients
        self._last: OrderedDict[str, float] = OrderedDict()

    def add(self, client: str) -> None:
        self._last[client] = self.clock()
        self._last.move_to_end(client)
        while len(self._last) > self.max_clients:
            self._last.popitem(last=False)

    def __contains__(self, client: object) -> bool:
        if not isinstance(client, str) or client not in self._last:
            return False
        if self.clock() - self._last[client] > self.known_s:
            del self._last[client]
            return False
        return True


class LoginLimit:
    """ASGI middleware for `POST /login`: limits failed logins per client and per account
    name, and logins in flight (see the module docstring); every other request passes
    untouched."""

    def __init__(
        self, app: ASGIApp, failed: FailedLogins | None = None,
        names: FailedLogins | None = None, known: KnownClients | None = None,
    ) -> None:  # fmt: skip
        self.app = app
        self.failed = failed or FailedLogins()
        self.names = names or FailedLogins(NAME_LIMIT, NAME_WINDOW_S)
        self.known = known or KnownClients()
        self.pending = 0
        self.pending_failing = 0  # of `pending`, from clients with recent failures
        self.pending_network: dict[str, int] = {}  # of `pending`, per IPv6 /48 (not known)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if not (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"].rstrip("/") == "/login"):  # fmt: skip
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("", 0))[0]
        client = client_key(address)
        wait = self.failed.retry_after(client)
        if wait > 0:
            await _limited(send, wait)
            return
        name, receive = await login_name(scope, receive)
        wait = self.names.retry_after(name)
        if wait > 0:  # the same answer as the client's own limit: nothing about the name
            await _limited(send, wait)
            return
        failing = self.failed.recent(client) > 0
        # the reserve and the network share bind clients not known from a sign-in
        known = client in self.known
        network = None if known else network_key(address)  # an IPv6 /48, counted
        if (
            self.pending >= MAX_PENDING
            or (failing and self.pending_failing >= FAILING_PENDING)
            or (not known and self.pending >= MAX_PENDING - KNOWN_RESERVE)
            or (network is not None and self.pending_network.get(network, 0) >= NETWORK_PENDING)
        ):
            await answer(send, 503, "The server is busy: try again in a few seconds.", {})
            return
        stamp, name_stamp = self.failed.attempt(client), self.names.attempt(name)
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        self.pending += 1
        self.pending_failing += failing
        if network is not None:
            self.pending_network[network] = self.pending_network.get(network, 0) + 1
        try:
            await self.app(scope, receive, watch)
        finally:
            self.pending -= 1
            self.pending_failing -= failing
            if network is not None:
                left = self.pending_network.pop(network) - 1
                if left:  # no key kept for a network with nothing in flight
                    self.pending_network[network] = left
            if status and status[0] < 400:  # signed in; a refusal (400) stays counted
                self.failed.succeeded(client, stamp)
                self.names.succeeded(name, name_stamp)
                self.known.add(client)


async def _limited(send: Any, wait: float) -> None:
    message = LIMITED.format(wait=f"{wait:.0f}")
    await answer(send, 429, message, {"retry-after": str(int(wait) + 1)})


_FORMS = (b"application/x-www-form-urlencoded", b"multipart/form-data")


async def login_name(scope: Scope, receive: Any) -> tuple[str, Any]:
    """(the key the login form's account name is counted under, `receive` for the app).

    The form is parsed as Gradio's route parses it (Starlette's parser, the last
    `username`, stripped), so a name cannot be dressed up to be counted apart from the
    account it logs in to. The key is a digest: bounded memory whatever the name's length.
    A body that is not a form, or does not parse, counts under the empty name (Gradio
    refuses it without a password check)."""
    content_type = b""
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-type":  # the first, as Starlette (and so Gradio) reads it
            content_type = value.split(b";", 1)[0].strip().lower()
            break
    name: Any = ""
    if content_type in _FORMS:
        from starlette.requests import Request

        body = await read_body(receive)  # read already, and capped, by `RequestLimits`
        original, receive = receive, replay(body, receive)
        try:
            form = await Request(scope, replay(body, original)).form()
            name = form.get("username", "")
            await form.close()
        except Exception:  # a malformed form: Gradio answers it (422) without a check
            name = ""
    name = name.strip() if isinstance(name, str) else ""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest(), receive


async def read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Any) -> Any:
    """`receive` that gives the body read already, then the client's later messages."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def answer(send: Any, status: int, message: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
