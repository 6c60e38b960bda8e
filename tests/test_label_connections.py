"""Connection limits of the labeling server (apps/label/connections.py, addresses.py): a share
of the connections per client address, and a deadline on answers the client does not read.

uvicorn runs in a thread of the test with the server's own protocol class around a tiny app,
so the deadlines can be short; test_label_hardening.py checks the same on the real server.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("h11")
from mmalign_label.addresses import client_key
from mmalign_label.connections import connection_limits
from mmalign_label.hardening import header_deadline_protocol

pytestmark = pytest.mark.timeout(120)
BIG = 1 << 20  # one answer of the app below


async def _app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b"x" * BIG if scope["path"] == "/big" else b"ok"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def _server(protocol: type) -> Iterator[int]:
    """uvicorn on 127.0.0.1 with `protocol`, in a thread; yields its port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(_app, http=protocol, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _get(port: int, source: str = "127.0.0.1", path: str = "/") -> bytes:
    """One request from `source` (any 127.x address reaches the server); the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5,
                                  source_address=(source, 0)) as s:  # fmt: skip
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return _read_all(s)


def _read_all(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def _wait(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_clients_are_counted_per_ipv4_address_and_per_ipv6_64() -> None:
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key("2001:db8:0:1::1") != client_key("2001:db8::1")  # another /64
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"  # a dual-stack socket's IPv4 client
    assert client_key("not an address") == "not an address" and client_key(None) == "?"


def test_one_address_holding_its_share_does_not_keep_another_out() -> None:
    protocol = connection_limits(header_deadline_protocol(30.0), per_client=3,
                                 write_timeout_s=5.0)  # fmt: skip
    with _server(protocol) as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # idle
        try:
            assert _wait(lambda: protocol.clients.get("127.0.0.1") == 3, 5)
            refused = _get(port)  # a fourth from the same address
            assert refused.startswith(b"HTTP/1.1 503 ") and b"Too many connections" in refused
            assert _get(port, source="127.0.0.2").startswith(b"HTTP/1.1 200 ")  # another one
            assert protocol.clients.get("127.0.0.1") == 3  # the refusal took no share
        finally:
            for s in held:
                s.close()
        assert _wait(lambda: "127.0.0.1" not in protocol.clients, 5)
        assert _get(port).startswith(b"HTTP/1.1 200 ")  # the share is back
    with pytest.raises(ValueError):
        connection_limits(header_deadline_protocol(), per_client=-1, write_timeout_s=1)


def test_a_client_that_pipelines_and_never_reads_is_closed_after_the_write_deadline() -> None:
    protocol = connection_limits(header_deadline_protocol(30.0), per_client=8,
                                 write_timeout_s=0.5)  # fmt: skip
    with _server(protocol) as port:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        n = 24  # 24 MiB of answers: more than the kernel's buffers on both sides hold
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * n)
        try:
            start = time.monotonic()
            assert _wait(lambda: protocol.clients.get("127.0.0.1") == 1, 5)  # accepted
            # the server's side of the connection is gone while the client still reads nothing
            assert _wait(lambda: "127.0.0.1" not in protocol.clients, 15)
            assert time.monotonic() - start < 15
            s.settimeout(10)
            received = _read_all(s)  # what the kernel held, then the end
            assert received.count(b"HTTP/1.1 200 ") < n
            # a client that reads gets all its answers
            assert _get(port, path="/big").endswith(b"x" * 1000)
        finally:
            s.close()
