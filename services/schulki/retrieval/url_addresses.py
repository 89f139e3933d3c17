"""Which addresses URL ingest may connect to: public ones, and the hosts and ports an admin allowed.

Python's ``ipaddress`` flags loopback, private, link-local and the like, but an
IPv6 address can carry an IPv4 address inside it, and a few deprecated ranges
count as global there although they lead into a local network. This module
judges those too:

- IPv4 inside IPv6 is judged as the IPv4 address it carries: IPv4-mapped
  (``::ffff:0:0/96``), 6to4 (``2002::/16``: ``2002:7f00:1::1`` is 127.0.0.1
  through a 6to4 gateway) and NAT64's well-known prefix (``64:ff9b::/96``:
  a NAT64 gateway connects to the IPv4 address in the last 32 bits).
- Refused outright: IPv4-compatible ``::/96`` (deprecated, RFC 4291; ``::1`` and
  ``::`` lie in it), Teredo ``2001::/32`` (its client address is obfuscated and
  the tunnel reaches through NATs), local-use NAT64 ``64:ff9b:1::/48`` (RFC 8215),
  site-local ``fec0::/10`` (deprecated by RFC 3879, still routed inside some
  networks) and the 6to4 relay anycast ``192.88.99.0/24`` (RFC 7526: whichever
  relay is nearest answers, possibly one inside the school).
"""

from __future__ import annotations

import ipaddress

NOT_PUBLIC = tuple(ipaddress.ip_network(network) for network in ("::/96", "2001::/32", "64:ff9b:1::/48", "fec0::/10", "192.88.99.0/24"))
"""Ranges refused although Python's ipaddress calls (some of) their addresses global; see the module's docstring."""

NAT64 = ipaddress.ip_network("64:ff9b::/96")

DEFAULT_PORTS = frozenset({80, 443})
"""The ports of an allowed host named without a port: the web's own."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to (IPv4-mapped, 6to4, NAT64), or None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(address: str) -> bool:
    """True when an IP address is an ordinary public one (not loopback, private, link-local, multicast, reserved,
    nor one of NOT_PUBLIC, nor an IPv6 address carrying an IPv4 address that is not public)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if any(ip in network for network in NOT_PUBLIC if network.version == ip.version):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_ipv4(ip)) is not None:
        return is_public_address(str(inner))
    return ip.is_global and not (
        ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def _normal_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))  # "fd00:0::1" and "fd00::1" are one host
    except ValueError:
        return host


def allowed_host_entry(entry: str) -> tuple[str, int | None]:
    """(host, port or None) of one ``retrieval.allowed_url_hosts`` entry: ``wiki.schule.lan``, ``wiki.schule.lan:8080``,
    ``10.0.0.5:8080``, ``fd00::5`` or ``[fd00::5]:8080``. ValueError for a port that is not 1..65535."""
    entry = entry.strip()
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"invalid allowed host {entry!r}: give [IPv6]:port or [IPv6]")
        port = rest[1:] if rest else None
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:  # a name, an IPv4 address, or an IPv6 address without brackets: every default port
        host, port = entry, None
    if port is None:
        return _normal_host(host), None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid port in allowed host {entry!r}: give host or host:port, [IPv6]:port for IPv6")
    return _normal_host(host), int(port)


def allowed_ports(host: str, allowed_hosts: list[str]) -> frozenset[int]:
    """The ports of host an admin allowed URL ingest to reach whatever its addresses (empty: none, the host is judged by its addresses)."""
    wanted = _normal_host(host)
    ports: set[int] = set()
    for entry in allowed_hosts:
        name, port = allowed_host_entry(entry)
        if name == wanted:
            ports |= DEFAULT_PORTS if port is None else {port}
    return frozenset(ports)
