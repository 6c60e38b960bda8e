"""Who may reach which route of the mounted Gradio app, and whose results they may read.

An ASGI middleware around the whole server (`server.py`), in front of Gradio's own checks:

- Anonymous requests reach only the login page, the login and logout routes and the static
  files the login page loads (401 otherwise). Gradio leaves some routes open (`/cancel`,
  `/heartbeat`, `/stream`, `/monitoring/{key}`, ...); a list of what is open is shorter
  and cannot miss a route a new Gradio version adds.
- The login page does not carry the API description: Gradio embeds it in every page it
  renders, logged in or not, so anonymous requests get an empty one (no endpoints; empty,
  not absent, or the page's script asks the server for it).
- Gradio's queue hands results to whoever names a session hash (`/queue/data`) or an event
  id (`/call/{api}/{id}`), and cancels any event by id. Both are random, but a logged-in
  annotator who learns one could read or stop another's results, so each session hash and
  event id belongs to the user who used it first (the event ids Gradio returns belong to
  their caller), and a request naming another user's id is refused (403). An empty id
  (`?session_hash=`) belongs to no one and is refused too, and an id longer than any
  Gradio makes (`MAX_ID`) is refused (400) before it is remembered.
- A user starts at most `NEW_SESSIONS` Gradio sessions per `NEW_SESSIONS_S` (429 beyond):
  Gradio keeps the state of its last 10,000 sessions only, so one user starting sessions
  without end pushed out everyone else's page state.
- Routes for features the app does not use (uploads, streams, run history, monitoring,
  vibe editing, profiling, the proxy, component server functions, custom components) are
  closed for everyone (404). Gradio's custom component route prints its path parameters
  before it looks anything up: open, a signed-in user could write any text (carriage
  returns, terminal escapes) into the server's log, a line of up to 64 KiB per request.
  `/call/v2/...` (Gradio's keyword form of `/call/`, used by no client of the app) is closed
  too: a keyword or name it does not know was a 500 with a stack trace in the log.
- A call naming an event the app does not have, or sending it too few inputs, is refused
  (404 / 422, `endpoints.py`) before Gradio fails on it with a stack trace in the log.
- An exception that escapes a route is one short line in the log (`logbudget.py`: a stack
  trace only the first time for its kind and place, at most `LINES` a minute per user)
  instead of uvicorn's stack trace for every request.
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from .endpoints import Endpoints
from .hardening import MAX_BODY
from .jsonbody import Refused, parse_json
from .logbudget import LOG, LogBudget
from .login import ASGIApp, Message, Scope, answer, replay

API = "/gradio_api"
# What the login page needs before anyone is signed in.
_OPEN_PATHS = {"/", "/login", "/logout", "/favicon.ico", "/theme.css", "/manifest.json",
               "/robots.txt", f"{API}/login_check", f"{API}/theme.css"}  # fmt: skip
_OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")
_CLOSED_PREFIXES = (
    *(f"{API}/{p}" for p in ("upload", "stream", "reset", "run-history", "runs", "vibe",
                             "undo-vibe", "profiling", "process_recording", "proxy=",
                             "monitoring", "mcp", "dev/reload", "deep_link",
                             "component_server", "custom_component", "call/v2/")),
    "/monitoring",
)  # fmt: skip
# The longest session hash or event id named: Gradio's are 11 (its client's session hashes)
# to 36 characters (event ids); every id named is remembered as its user's, so a longer
# one is refused before it is (400), or 5,000 ids of a body's 1 MiB each were kept per user
MAX_ID = 128
# New sessions a user may start per window. Gradio keeps the state of its last 10,000
# sessions (`state_session_capacity`) and forgets the least recently used beyond: one
# annotator starting sessions without end (a fresh session hash per request, or `/call/`
# without one) pushed every other user's page state out (the pair on screen, the answers
# given), so their votes met "Nothing to vote on". A page load or a `gradio_client.Client`
# starts one, a `/call/` without a session hash one per call (the load benchmark's `http`
# client: 400 per annotator). At 1000 per 10 minutes, one user needs 100 minutes to push
# out a page left that long.
NEW_SESSIONS = 1000
NEW_SESSIONS_S = 600.0
_RESULT_STREAM = re.compile(rf"^{API}/call/(?:v2/)?[^/]+/(?P<event>[^/]+)$")
_CALL = re.compile(rf"^{API}/call/(?:v2/)?[^/]+$")  # a call without a session hash: a new one
_EVENT_ISSUERS = re.compile(rf"^{API}/(?:queue/join|call/(?:v2/)?[^/]+)$")
_HEARTBEAT = re.compile(rf"^{API}/heartbeat/(?P<session>[^/]+)$")
_API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.DOTALL)
_NO_API_INFO = (
    b'window.gradio_api_info = {"named_endpoints": {}, "unnamed_endpoints": {}};</script>'
)


class Owners:
    """Session hashes and event ids -> the user who used them first (one name space: Gradio
    uses an event's id as its session hash when the caller sends none). Bounded per user:
    a user's oldest ids are forgotten first, so no one can push out another user's ids by
    claiming many of their own."""

    def __init__(self, per_user: int = 5_000, new_sessions: int = NEW_SESSIONS,
                 window_s: float = NEW_SESSIONS_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.per_user = per_user
        self.new_sessions, self.window_s, self.clock = new_sessions, window_s, clock
        self._owner: dict[str, str] = {}
        self._ids: dict[str, OrderedDict[str, None]] = {}
        self._started: dict[str, deque[float]] = {}  # user -> when their new sessions began

    def start(self, user: str, count: int) -> bool:
        """Whether `user` may start `count` new sessions now (counted when True)."""
        if count <= 0:
            return True
        times = self._started.setdefault(user, deque())
        cutoff = self.clock() - self.window_s
        while times and times[0] <= cutoff:
            times.popleft()
        if len(times) + count > self.new_sessions:
            return False
        times.extend([self.clock()] * count)
        return True

    def known(self, key: str) -> bool:
        return key in self._owner

    def claim(self, key: str, user: str) -> bool:
        """True when `key` is `user`'s (now or before); False when it is someone else's."""
        owner = self._owner.setdefault(key, user)
        if owner != user:
            return False
        ids = self._ids.setdefault(user, OrderedDict())
        ids[key] = None
        ids.move_to_end(key)
        while len(ids) > self.per_user:
            del self._owner[ids.popitem(last=False)[0]]
        return True

    def owned(self, key: str, user: str) -> bool:
        return self._owner.get(key) == user


class RouteGuard:
    """The middleware; `user_of(scope)` is the signed-in user of a request, or None."""

    def __init__(self, app: ASGIApp, user_of: Callable[[Scope], str | None],
                 endpoints: Endpoints | None = None, log: LogBudget = LOG) -> None:  # fmt: skip
        """`endpoints`: the Gradio app's events, to refuse calls of others (None: no check)."""
        self.app = app
        self.user_of = user_of
        self.endpoints, self.log = endpoints, log
        self.owners = Owners()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan; Gradio's websockets are not used
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._route(scope, receive, tracked)
        except Exception as err:  # Starlette answered 500 already, if it got the chance
            try:
                user = self.user_of(scope)
            except Exception:
                user = None
            self.log.error(user, f"{scope['method']} {scope['path']}", err)
            if not started:
                await answer(send, 500, "Internal Server Error", {})

    async def _route(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope["path"].rstrip("/") or "/"
        if path.startswith(_CLOSED_PREFIXES):
            await answer(send, 404, "Not found", {})
            return
        user = self.user_of(scope)
        if user is None:
            if path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
                await self._anonymous(scope, receive, send)
            else:
                await answer(send, 401, "Not authenticated", {})
            return
        if not path.startswith(API + "/"):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive) if scope["method"] == "POST" else b""
        if body is None:
            await answer(send, 413, "Request body too large", {})
            return
        try:
            data = parse_json(body) if body else None
        except Refused as err:  # too deep: Gradio's parsers would fail with a 500; too many
            # values: parsing them stalls the event loop (jsonbody.py)
            await answer(send, 400, str(err), {})
            return
        except ValueError:
            data = None  # Gradio answers malformed bodies itself
        refusal = self.endpoints.refusal(scope["method"], path, data) if self.endpoints else None
        refusal = refusal or self._refusal(scope, path, user, data)
        if refusal:
            await answer(send, *refusal, {})
            return
        again = replay(body, receive) if scope["method"] == "POST" else receive
        if scope["method"] == "POST" and _EVENT_ISSUERS.match(path):
            await self.app(_plain(scope), again, self._claiming(send, user))
        else:
            await self.app(scope, again, send)

    def _refusal(self, scope: Scope, path: str, user: str, data: Any) -> tuple[int, str] | None:
        """(status, why) when this signed-in request names another user's session or event,
        an id longer than `MAX_ID`, or starts more sessions than its user may
        (`NEW_SESSIONS`); None when it does not."""
        # keep_blank_values: Starlette (and so Gradio) reads `?session_hash=` as the empty
        # session hash; parsed as absent here, it went unchecked
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        sessions = list(query.get("session_hash", []))
        events: list[str] = []
        if m := _HEARTBEAT.match(path):
            sessions.append(m["session"])
        if scope["method"] == "GET" and (m := _RESULT_STREAM.match(path)):
            events.append(m["event"])
        if isinstance(data, dict):  # the body's JSON
            if isinstance(data.get("session_hash"), str):
                sessions.append(data["session_hash"])
            if path == f"{API}/cancel" and isinstance(data.get("event_id"), str):
                events.append(data["event_id"])
        if any(len(k) > MAX_ID for k in (*sessions, *events)):  # checked before any is kept
            return 400, f"session hashes and event ids have at most {MAX_ID} characters"
        # sessions new to Gradio: named here first, or a call that names none (Gradio
        # gives it one of its own)
        fresh = len({s for s in sessions if s and not self.owners.known(s)})
        own = isinstance(data, dict) and isinstance(data.get("session_hash"), str)
        fresh += scope["method"] == "POST" and bool(_CALL.match(path)) and not own
        if not self.owners.start(user, fresh):
            return 429, "too many new sessions: try again in a few minutes"
        # An empty id is no one's: anyone can name it, so it cannot be claimed by the first
        # caller the way a random id is (Gradio's clients never send one)
        if "" in sessions or not all(self.owners.claim(s, user) for s in sessions):
            return 403, "this session belongs to another user"
        if not all(self.owners.owned(e, user) for e in events):
            return 403, "this event belongs to another user"
        return None

    def _claiming(self, send: Any, user: str) -> Any:
        """A `send` that gives the event id in the response to `user` before the client
        gets it, so no one can name it first."""
        chunks: list[bytes] = []

        async def claiming(message: Message) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    try:
                        event = json.loads(b"".join(chunks)).get("event_id")
                    except (ValueError, AttributeError):
                        event = None
                    # an id already someone's stays theirs; an empty one stays no one's
                    if isinstance(event, str) and event:
                        self.owners.claim(event, user)
            await send(message)

        return claiming

    async def _anonymous(self, scope: Scope, receive: Any, send: Any) -> None:
        """Serve an open route; an HTML page (the login page) without the API description."""
        if scope["method"] not in ("GET", "HEAD") or scope["path"].startswith(_OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        start: list[Message] = []
        chunks: list[bytes] = []

        async def strip(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.append(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            head = start.pop()
            headers = [(k, v) for k, v in head["headers"] if k.lower() != b"content-length"]
            if any(k.lower() == b"content-type" and v.startswith(b"text/html")
                   for k, v in headers):  # fmt: skip
                body = _API_INFO.sub(_NO_API_INFO, body)
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**head, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(_plain(scope), receive, strip)


def _plain(scope: Scope) -> Scope:
    """The request without `Accept-Encoding`: a response read here must not come back
    compressed (Gradio's Brotli middleware)."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]
    return {**scope, "headers": headers}


async def _read_body(receive: Any) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            return None
        if not message.get("more_body"):
            return body
