"""Which client an address belongs to, for the limits kept per client (connections, logins).

An IPv4 address is a client of its own. An IPv6 client is its /64: one host, or one home or
office network, is given a whole /64 (2^64 addresses), so a limit per exact IPv6 address
would let one machine spread its attempts over as many addresses as it likes. An
IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, a dual-stack socket) is its IPv4 address.

Above the client, an IPv6 client's network is its /48 (`network_key`): what a site is
assigned (RIR policy; tunnel brokers hand out /48s for free), 65,536 /64 clients in one
hand. Limits that must not be taken by one holder of many clients (the login slots,
`login.py`) are also counted per network. An IPv4 address has no network above it here:
addresses are scarce, and one client's own limits already bound what it can hold.
"""

from __future__ import annotations

import ipaddress

IPV6_PREFIX = 64
IPV6_NETWORK_PREFIX = 48


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the zone aside
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_key(address: str | None) -> str:
    """The key the per-client limits count `address` under; anything that does not parse
    (a Unix socket's empty peer, a proxy's odd `X-Forwarded-For`) is its own key."""
    if not address:
        return "?"
    ip = _ip(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


def network_key(address: str | None) -> str | None:
    """The /48 of an IPv6 `address` (per-network limits); None for an IPv4 address (an
    IPv4-mapped one too) and anything that does not parse: their client is all there is."""
    ip = _ip(address) if address else None
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    return str(ipaddress.IPv6Network((ip, IPV6_NETWORK_PREFIX), strict=False))
