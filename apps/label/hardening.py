"""Limits in front of everything the labeling server answers, and sessions that end.

- `RequestLimits` (ASGI, the outermost layer, `server.py`):
  - every request body is read in full before any route sees it: at most `max_body` bytes
    (the login form: `MAX_LOGIN_BODY`) within `timeout_s` seconds, else 413 / 408, so a slow or
    huge body holds no login slot, thread or memory (Starlette's form parser and `request.json()`
    read whatever they are sent);
  - cross-site requests are refused (403): an `Origin` other than the request's own host, or
    `Sec-Fetch-Site: cross-site` / `same-site` on anything but a page navigation (GET or HEAD,
    `Sec-Fetch-Mode: navigate`) to the page or its static files (`NAVIGABLE`). A link to the
    app still opens it, but a link to any other route is refused: a top-level navigation
    carries the `SameSite=Lax` session cookie, so a link to `/logout` logged the user out and
    one to `/label_api/next_pair` reserved a pair for them (as any GET under `/gradio_api/`
    ran the app's API for them).
    Same-origin requests and requests without these headers (scripts, curl) are unaffected;
  - no answer carries CORS headers. Gradio's CORS middleware approves any origin, with
    credentials, when the server is reached under a name other than localhost (as behind a
    TLS proxy), which let any page read `/gradio_api/token`: the session token itself;
  - the session cookie is `SameSite=Lax` (Gradio sets `None`, for embedding in other sites,
    which this app does not need), so other sites' requests do not carry it (but for their
    links, top-level navigations: above); over HTTPS
    Gradio's second cookie for plain-HTTP use (no `Secure` flag) is not set;
  - `/logout` always ends every session of its user (with `?all_session=false`, Gradio ends
    only the session of the secure cookie, and a plain-HTTP browser sends the other one).
- `SessionTokens`: Gradio's token table (`app.tokens`, token -> user) with a lifetime, bound
  to the account: a token stops working after `ttl_s`, when its user leaves the users file or
  gets a new password (`mmalign label adduser`), and each user keeps at most `per_user`
  sessions (the oldest end first), so logging in again and again cannot grow the table.
- `header_deadline_protocol`: uvicorn's h11 protocol with deadlines: a request's head must
  arrive `timeout_s` after connecting (or after its first byte, for a later request on the
  same connection) in at most `MAX_HEAD` bytes, and its body within `timeout_s` + 1 s more
  (after `RequestLimits`' 408), or the connection is closed (slowloris); a connection whose
  body is still coming after the answer went out is closed. Connections per client, and
  answers the client does not read: `connections.connection_limits`, around this class.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .login import ASGIApp, Message, Scope, answer, replay

MAX_BODY = 1 << 20  # API bodies here are a few hundred bytes; nothing is uploaded
MAX_LOGIN_BODY = 16 << 10  # a name and a password; any request without a session cookie
MAX_HEAD = 64 << 10  # request line and headers (cookies included)
TIMEOUT_S = 15.0  # to send a request's head, and then its body
SESSION_HOURS = 12.0
_BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_SAMESITE_NONE = re.compile(rb"samesite=none", re.IGNORECASE)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def same_host(origin: str, host: str | None) -> bool:
    """Whether an `Origin` names the server a request reached (its `Host` header). Names
    compare without case; ports only where `Host` has one (a proxy's `Host $host` drops
    it), each side's default port filled in from the origin's scheme."""
    if host is None:
        return False
    try:
        o, h = urlsplit(origin), urlsplit(f"//{host}")
        o_port, h_port = o.port, h.port
    except ValueError:  # a port that is not a number
        return False
    if not o.hostname or o.hostname != h.hostname:
        return False
    if h_port is None:
        return True
    default = _DEFAULT_PORTS.get(o.scheme)
    return (o_port or default) == h_port


# Where a link from another site may lead: the page (the login form before signing in) and
# the static files it loads. A top-level navigation carries the `SameSite=Lax` session
# cookie, so a link to any other GET route (`/label_api/next_pair` reserves a pair, `/logout`
# ends the sessions, `/gradio_api/...` runs the app's API) acted for the signed-in user.
NAVIGABLE = frozenset({"/", "/login", "/favicon.ico", "/manifest.json", "/robots.txt",
                       "/theme.css"})  # fmt: skip
NAVIGABLE_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")


def navigable(path: str) -> bool:
    """Whether another site may link to `path` (see `NAVIGABLE`)."""
    return (path or "/") in NAVIGABLE or path.startswith(NAVIGABLE_PREFIXES)


def cross_site(scope: Scope) -> str | None:
    """Why this request comes from another site (None: it does not)."""
    origins = [v for k, v in scope.get("headers", ()) if k.lower() == b"origin"]
    if len(origins) > 1:  # no browser sends two
        return "cross-origin request refused"
    origin = _header(scope, b"origin")
    if origin is not None and not same_host(origin, _header(scope, b"host")):
        return "cross-origin request refused"
    site = (_header(scope, b"sec-fetch-site") or "").lower()
    if site in ("cross-site", "same-site"):
        navigation = scope["method"] in ("GET", "HEAD") and (
            (_header(scope, b"sec-fetch-mode") or "").lower() == "navigate"
        )
        if not (navigation and navigable(scope["path"])):
            return "cross-site request refused"
    return None


class RequestLimits:
    """The ASGI middleware described in the module docstring."""

    def __init__(
        self, app: ASGIApp, *, timeout_s: float = TIMEOUT_S, max_body: int = MAX_BODY,
        signed_in: Callable[[Scope], bool] = lambda scope: False,
    ) -> None:  # fmt: skip
        """`signed_in(scope)`: whether the request carries a live session (the larger body
        cap); a cookie that only looks like one does not count."""
        self.app, self.timeout_s, self.max_body = app, timeout_s, max_body
        self.signed_in = signed_in

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":  # the app has none, and the route checks skip them
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        head = sum(len(k) + len(v) for k, v in scope.get("headers", ()))
        head += len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if head > MAX_HEAD:  # h11 caps a head that arrives in pieces; this, one read whole
            await answer(send, 431, "Request head too large", {"connection": "close"})
            return
        refusal = cross_site(scope)
        if refusal:  # the body, if any, is never read: the connection closes after the answer
            await answer(send, 403, refusal, {"connection": "close"})
            return
        path = scope["path"].rstrip("/")
        if path == "/logout":
            scope = {**scope, "query_string": b""}  # all_session defaults to true
        if scope["method"] in _BODY_METHODS:
            # No live session (the login form, or a request about to get 401): a small cap
            big = path != "/login" and self.signed_in(scope)
            limit = self.max_body if big else MAX_LOGIN_BODY
            length = _header(scope, b"content-length")
            if length is not None and length.strip().isdigit() and int(length) > limit:
                await answer(send, 413, "Request body too large", {"connection": "close"})
                return
            status, body = await self._read(receive, limit)
            if status == 499:  # the client left: no one to answer
                return
            if status:
                message = "Request body too large" if status == 413 else "Request body too slow"
                await answer(send, status, message, {"connection": "close"})
                return
            receive = replay(body, receive)
        https = scope.get("scheme") == "https"
        await self.app(scope, receive, _without_cross_site_headers(send, https))

    async def _read(self, receive: Any, limit: int) -> tuple[int, bytes]:
        """(0, body), or (413 | 408 | 499, b"") for a body too large, too slow, abandoned."""
        # One timer for the whole body (not a wait_for task per chunk: this runs on every vote)
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(self.timeout_s, expire)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return 499, b""
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return 413, b""
                chunks.append(chunk)
                if not message.get("more_body"):
                    return 0, b"".join(chunks)
        except asyncio.CancelledError:
            if not expired:
                raise  # cancelled from outside: the server is shutting down
            if hasattr(task, "uncancel"):  # Python 3.11+: this cancellation is handled
                task.uncancel()
            return 408, b""
        finally:
            timer.cancel()


def _without_cross_site_headers(send: Any, https: bool) -> Any:
    """`send` with CORS headers dropped and the session cookie `SameSite=Lax`; over HTTPS
    (the scheme a trusted proxy's `X-Forwarded-Proto` gives) also without Gradio's
    `access-token-unsecure-` twin, a cookie without `Secure` that a browser would send on
    any plain-HTTP request to the host, where it can be read off the network."""

    async def filtered(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = []
            for key, value in message.get("headers", ()):
                name = key.lower()
                if name.startswith(b"access-control-"):
                    continue
                if name == b"set-cookie":
                    if https and value.startswith(b"access-token-unsecure-"):
                        continue
                    value = _SAMESITE_NONE.sub(b"SameSite=lax", value)
                headers.append((key, value))
            message = {**message, "headers": headers}
        await send(message)

    return filtered


class SessionTokens(dict):  # type: ignore[type-arg]
    """Gradio's `app.tokens` (token -> user name), with sessions that end; see the module
    docstring. `credential_of(user)` is the user's stored password hash, None when the user
    is gone. Lookups (`get`, `in`) drop a token that has ended. Gradio reads and writes the
    table from the event loop and from worker threads (its `/logout` and `/token` routes),
    so every method holds one lock, and a token another thread removed in between reads as
    gone (`tokens[t]` None, `del tokens[t]` a no-op) instead of raising."""

    def __init__(
        self, credential_of: Callable[[str], str | None], ttl_s: float = SESSION_HOURS * 3600,
        *, per_user: int = 32, clock: Callable[[], float] = time.monotonic,
        verified: Callable[[str], str | None] | None = None,
    ) -> None:  # fmt: skip
        """`verified(user)`: the password hash the login just checked (default
        `credential_of`): a password reset between the check and the new token ends it."""
        super().__init__()
        if not ttl_s > 0 or ttl_s == float("inf"):
            raise ValueError(f"the session lifetime must be a number of seconds > 0, got {ttl_s}")
        self.credential_of, self.ttl_s, self.per_user, self.clock = (
            credential_of, ttl_s, per_user, clock,
        )  # fmt: skip
        self.verified = verified or credential_of
        self._issued: dict[str, tuple[float, str | None]] = {}
        self._inserts = 0
        self._lock = threading.RLock()

    def __setitem__(self, token: str, user: str) -> None:
        with self._lock:
            super().__setitem__(token, user)
            self._issued[token] = (self.clock(), self.verified(user))
            mine = [t for t, u in list(dict.items(self)) if u == user]
            mine.sort(key=lambda t: self._issued.get(t, (float("-inf"), None))[0])
            for old in mine[: max(0, len(mine) - self.per_user)]:
                del self[old]
            self._inserts += 1
            if self._inserts % 256 == 0:  # sweep what ended unseen (users gone, old sessions)
                for t in list(self):
                    self._live(t)

    def __getitem__(self, token: str) -> Any:
        with self._lock:
            return super().get(token)

    def __delitem__(self, token: str) -> None:
        with self._lock:
            if super().__contains__(token):
                super().__delitem__(token)
            self._issued.pop(token, None)

    def _live(self, token: Any) -> bool:
        with self._lock:
            if not isinstance(token, str) or not super().__contains__(token):
                return False
            issued, credential = self._issued.get(token, (float("-inf"), None))
            user = super().__getitem__(token)
            try:
                current = self.credential_of(user)
            except Exception:  # an unreadable users file ends no one's session
                current = credential
            if (
                self.clock() - issued <= self.ttl_s
                and credential is not None
                and (current == credential)
            ):
                return True
            del self[token]
            return False

    def __contains__(self, token: object) -> bool:
        return self._live(token)

    def get(self, token: Any, default: Any = None) -> Any:
        with self._lock:
            return super().__getitem__(token) if self._live(token) else default


def header_deadline_protocol(timeout_s: float = TIMEOUT_S, max_head: int = MAX_HEAD) -> type:
    """uvicorn's h11 protocol class with request deadlines: a head within `timeout_s` of the
    request's first byte (of connecting, for the first) in at most `max_head` bytes, then the
    body within `timeout_s` + 1 s; else the connection is closed. A connection whose request
    body is still coming when the answer has gone out (an app that answered without reading
    it) is closed too, so no request keeps a connection by trickling bytes."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    receiving = (h11.IDLE, h11.SEND_BODY)

    class RequestDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _head_bytes = 0
        _in_body = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._head_bytes += len(data)
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.IDLE:
                if self._head_bytes > max_head:
                    self.transport.close()  # h11 caps a head that arrives in pieces; this, whole
                elif self._deadline is None:  # a later request's first bytes
                    self._arm()
                return
            self._head_bytes = 0
            if state is h11.SEND_BODY:
                if not self._in_body:  # the head is in: the body's own deadline, a second
                    self._in_body = True  # after the app's (which answers 408 first)
                    self._disarm()
                    self._arm(timeout_s + 1.0)
            else:
                self._in_body = False
                self._disarm()

        def on_response_complete(self) -> None:
            # this request's body still coming (read before super() starts the next cycle,
            # which parses a pipelined request whose own body may be on its way)
            unread = self.conn.their_state is h11.SEND_BODY
            self._in_body = False
            super().on_response_complete()
            if unread and not self.transport.is_closing():
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, seconds: float = timeout_s) -> None:
            self._deadline = self.loop.call_later(seconds, self._late)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _late(self) -> None:
            self._deadline = None
            if self.conn.their_state in receiving and not self.transport.is_closing():
                self.transport.close()

    return RequestDeadline
