"""Who is at the other end of a request: the client's address, and whether it is one many users share.

The login limits count per address, so the address must be one a student
cannot choose. uvicorn runs with ``proxy_headers=False`` (its default believes
``X-Forwarded-For`` from 127.0.0.1); the gateway believes that header only
from the proxies the admin lists in ``gateway.trusted_proxies``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=64)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _parse(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:4711", as some proxies write IPv6 with a port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "10.0.0.5:4711"
        text = text.split(":", 1)[0]
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d; compare it as the IPv4 address it is.
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped:
        return found.ipv4_mapped
    return found


def in_networks(address: str, entries: Iterable[str]) -> bool:
    """Whether ``address`` lies in one of the addresses or networks (CIDR) ``entries`` lists."""
    parsed = _parse(address)
    if parsed is None:
        return False
    return any(parsed.version == network.version and parsed in network for network in _networks(tuple(entries)))


def forwarded_client(peer: str, forwarded_for: list[str], trusted_proxies: Iterable[str]) -> str:
    """The client's address: the peer, or, while the hop at hand is a trusted proxy, the address it names in X-Forwarded-For.

    Proxies append the address they received from, so the list is read from
    the right; the first hop that is not a trusted proxy is the client. What
    a client wrote into the header itself lies further left and is never read.
    """
    trusted = tuple(trusted_proxies)
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        if not trusted or not in_networks(client, trusted):
            break
        parsed = _parse(hop)
        if parsed is None:  # garbage from the hop before: the trusted proxy's own peer is the last address known
            break
        client = str(parsed)
    return client


def client_address(request: Request) -> str:
    """The address the login limits count for this request (see ``forwarded_client``)."""
    peer = request.client.host if request.client else "unknown"
    gateway = getattr(request.app.state, "gateway", None)
    trusted = gateway.config.gateway.trusted_proxies if gateway is not None else []
    return forwarded_client(peer, request.headers.getlist("x-forwarded-for"), trusted)
