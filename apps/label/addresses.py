"""Which client an address belongs to, for the limits kept per client (connections, logins).

An IPv4 address is a client of its own. An IPv6 client is its /64: one host, or one home or
office network, is given a whole /64 (2^64 addresses), so a limit per exact IPv6 address
would let one machine spread its attempts over as many addresses as it likes. An
IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, a dual-stack socket) is its IPv4 address.
"""

from __future__ import annotations

import ipaddress

IPV6_PREFIX = 64


def client_key(address: str | None) -> str:
    """The key the per-client limits count `address` under; anything that does not parse
    (a Unix socket's empty peer, a proxy's odd `X-Forwarded-For`) is its own key."""
    if not address:
        return "?"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the zone aside
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)
