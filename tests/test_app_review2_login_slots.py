"""Logins in flight are shared fairly (review 2, defect 3): one IPv6 network (a /48, which
holds 65,536 /64 clients) takes at most `NETWORK_PENDING` of the `MAX_PENDING` login slots,
and a flood from any number of networks leaves `KNOWN_RESERVE` slots to clients that signed
in before. Before, each /64 was a client of its own and a new one counts as having no
failures, so one /48 could hold every slot and turn every other login away (503)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from mmalign_label.login import FailedLogins, LoginLimit


def _login(client: str) -> tuple[dict, Any]:
    """A login POST from `client`, under a name of its own (no name meets its limit)."""
    body = urlencode({"username": f"user-{client}", "password": "guess"}).encode()
    scope = {"type": "http", "method": "POST", "path": "/login", "client": (client, 5555),
             "headers": [(b"content-type", b"application/x-www-form-urlencoded")]}  # fmt: skip

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    return scope, receive


async def _flood(limited: LoginLimit, flood: list[str], late: list[str],
                 gate: asyncio.Event) -> dict[str, int]:  # fmt: skip
    """Each of `flood` starts a login (held in flight until `gate`), then each of `late`;
    the status each address got."""
    statuses: dict[str, int] = {}

    async def attempt(client: str) -> None:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        await limited(*_login(client), send)
        statuses[client] = sent[0]["status"]

    async def settled(n: int) -> None:  # each of the first n answered, or in flight
        for _ in range(5000):
            if len(statuses) + limited.pending >= n:
                return
            await asyncio.sleep(0.001)
        raise AssertionError("the logins did not settle")

    tasks = [asyncio.ensure_future(attempt(a)) for a in flood]
    await settled(len(flood))
    tasks += [asyncio.ensure_future(attempt(a)) for a in late]
    await settled(len(flood) + len(late))
    gate.set()
    await asyncio.gather(*tasks)
    return statuses


def _limited(gate: asyncio.Event, reached: list[str], ok: set[str] = frozenset()) -> LoginLimit:
    async def gradio_login(scope, receive, send):  # type: ignore[no-untyped-def]
        client = scope["client"][0]
        reached.append(client)
        if client not in ok:
            await gate.wait()  # the checks take long: every attempt stays in flight
        status = 200 if client in ok else 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return LoginLimit(gradio_login, FailedLogins(limit=10, window_s=60))


def test_one_ipv6_network_cannot_hold_every_login_slot() -> None:
    async def main() -> tuple[dict[str, int], list[str]]:
        gate, reached = asyncio.Event(), []
        limited = _limited(gate, reached)
        # one /48: 200 of its /64s, each with no failure yet, one login each
        flood = [f"2001:db8:1:{k:x}::1" for k in range(200)]
        late = ["2001:db8:2::1", "198.51.100.9"]  # another network, an IPv4 client
        return await _flood(limited, flood, late, gate), reached

    statuses, reached = asyncio.run(main())
    assert statuses["2001:db8:2::1"] == 400 and statuses["198.51.100.9"] == 400  # checked
    assert "2001:db8:2::1" in reached and "198.51.100.9" in reached
    from mmalign_label.login import MAX_PENDING, NETWORK_PENDING

    assert NETWORK_PENDING <= MAX_PENDING // 8  # a small share
    flood = [s for a, s in statuses.items() if a.startswith("2001:db8:1:")]
    assert flood.count(400) == NETWORK_PENDING and flood.count(503) == 200 - NETWORK_PENDING


def test_a_flood_from_many_networks_leaves_the_reserve_to_known_clients() -> None:
    async def main() -> tuple[dict[str, int], list[str]]:
        gate, reached = asyncio.Event(), []
        limited = _limited(gate, reached, ok={"2001:db8:77::5", "192.0.2.5"})
        for known in ("2001:db8:77::5", "192.0.2.5"):  # signed in before
            await _flood(limited, [], [known], asyncio.Event())
        # one new client from each of 200 networks: every /48 its own
        flood = [f"2001:db8:{k + 0x100:x}::1" for k in range(200)]
        late = ["2001:db8:77::9", "192.0.2.5", "2001:db8:77:1::2"]
        return await _flood(limited, flood, late, gate), reached

    statuses, reached = asyncio.run(main())
    assert statuses["192.0.2.5"] == 200  # a client that signed in before gets a slot
    # another address of the known /64 is the same client (checked: a wrong password) ...
    assert statuses["2001:db8:77::9"] == 400 and "2001:db8:77::9" in reached
    # ... a new /64 of the same /48 is not
    assert statuses["2001:db8:77:1::2"] == 503
    from mmalign_label.login import KNOWN_RESERVE, MAX_PENDING

    flood = [s for a, s in statuses.items() if a.startswith("2001:db8:1")]
    assert flood.count(400) == MAX_PENDING - KNOWN_RESERVE  # the rest is kept in reserve
    assert flood.count(503) == 200 - (MAX_PENDING - KNOWN_RESERVE)
