"""Limits on connections, below HTTP: how many one client may hold, and how long an answer
may wait for a client that does not read it.

- At most `per_client` connections at once per client (`addresses.client_key`: an IPv4
  address, an IPv6 /64). uvicorn's `limit_concurrency` counts every connection together, so
  without a share per client one client could take all of them: 1005 idle sockets from one
  address made everyone else's requests 503 until the head deadline closed them. A
  connection over the share gets a fixed 503 and is closed, its request never parsed;
  other clients' connections are not touched. The address is the peer's: behind a proxy
  every client shares the proxy's (docs/labeling.md).
- A connection whose answer is not being read is closed. asyncio pauses writing when a
  transport's buffer passes its high-water mark (64 KiB, after the kernel's buffers are
  full); a connection still paused `write_timeout_s` later is aborted. The request
  deadlines (`hardening.header_deadline_protocol`) end once a request is in, so a client
  that pipelined requests and never read held its connection, and the answers' memory,
  for as long as it liked.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from .addresses import client_key

PER_CLIENT = 64  # a browser opens up to 6 connections per host: ~10 people behind one NAT
_LINGER_S = 1.0  # an over-share connection's time to read its 503 and close
_MAX_LINGERING = 256  # over-share connections lingering at once; beyond, closed at once
_BUSY_BODY = b"Too many connections from your address: try again in a few seconds.\n"
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\n" + b"".join(
    b"%s: %s\r\n" % kv
    for kv in ((b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"5"),
               (b"content-length", b"%d" % len(_BUSY_BODY)), (b"connection", b"close"))
) + b"\r\n" + _BUSY_BODY  # fmt: skip


def connection_limits(base: type, *, per_client: int = PER_CLIENT,
                      write_timeout_s: float) -> type:  # fmt: skip
    """`base` (uvicorn's h11 protocol class, or a subclass) with the limits above;
    `per_client` 0 leaves the number of connections per client unlimited. The counts
    belong to the class returned: one server's."""
    if per_client < 0 or not write_timeout_s > 0:
        raise ValueError(f"need per_client >= 0 and write_timeout_s > 0, got {per_client}, "
                         f"{write_timeout_s}")  # fmt: skip
    open_per_client: Counter[str] = Counter()
    refused: set[Any] = set()  # over-share connections still being turned away

    class ConnectionLimits(base):  # type: ignore[misc, valid-type]
        _client: str | None = None  # the key counted for this connection
        _refused: asyncio.TimerHandle | None = None  # set while turning it away
        _write_deadline: asyncio.TimerHandle | None = None
        clients = open_per_client  # for tests and the curious

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            if per_client == 0 or not (isinstance(peer, tuple) and peer):
                return  # a Unix socket has no address to count under
            key = client_key(str(peer[0]))
            if open_per_client[key] >= per_client:
                self._refuse(transport)
                return
            open_per_client[key] += 1
            self._client = key

        def _refuse(self, transport: Any) -> None:
            """The 503, written raw: no request is parsed, no app call made, and the
            connection leaves the server's count at once. Closing right away would make the
            kernel answer the request's bytes, when they come, with a reset that can destroy
            the 503 on its way, so the connection only stops writing and drops what it
            reads until the client closes, for at most `_LINGER_S`."""
            self.connections.discard(self)
            transport.write(_BUSY)
            if len(refused) >= _MAX_LINGERING or not transport.can_write_eof():
                transport.close()  # a flood of them: the fds matter more than the 503
                return
            transport.write_eof()
            refused.add(self)
            self._refused = self.loop.call_later(_LINGER_S, transport.abort)

        def data_received(self, data: bytes) -> None:
            if self._refused is None:
                super().data_received(data)

        def eof_received(self) -> bool | None:
            if self._refused is not None:
                return None  # the client has read the 503 and closed: so does this side
            return super().eof_received()  # type: ignore[no-any-return]

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_write_deadline()
            if self._refused is not None:
                self._refused.cancel()
                refused.discard(self)
            if self._client is not None:
                open_per_client[self._client] -= 1
                if open_per_client[self._client] <= 0:
                    del open_per_client[self._client]
                self._client = None
            super().connection_lost(exc)

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_deadline is None:
                self._write_deadline = self.loop.call_later(write_timeout_s, self._stalled)

        def resume_writing(self) -> None:
            super().resume_writing()
            self._stop_write_deadline()

        def _stalled(self) -> None:
            self._write_deadline = None
            # abort, not close: close() waits for the buffer to drain, which it never will
            self.transport.abort()

        def _stop_write_deadline(self) -> None:
            if self._write_deadline is not None:
                self._write_deadline.cancel()
                self._write_deadline = None

    return ConnectionLimits
