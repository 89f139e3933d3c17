"""Ansible filter for what the school CA may sign for, from the inventory's names and the hosts' networks."""

from __future__ import annotations

import sys
from pathlib import Path

DOCUMENTATION = r"""
name: schulki_tls_subtrees
short_description: The domains, addresses and networks the school CA's name constraint permits
description:
  - Applies services/schulki/certificates.py school_subtrees to the inventory's host names, the hosts' addresses,
    the networks in their facts (default_ipv4, default_ipv6) and the admin's extra entries.
"""

try:
    from schulki.certificates import school_subtrees
except ImportError:  # running from a checkout without schulki installed on the controller
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services"))
    from schulki.certificates import school_subtrees


def _networks(facts) -> list[str]:
    """The networks of a host's default IPv4 and IPv6 interfaces, when its facts were gathered."""
    found = []
    v4, v6 = dict(facts or {}).get("default_ipv4") or {}, dict(facts or {}).get("default_ipv6") or {}
    if v4.get("network") and v4.get("netmask"):
        found.append(f"{v4['network']}/{v4['netmask']}")
    if v6.get("address") and v6.get("prefix"):
        found.append(f"{v6['address']}/{v6['prefix']}")
    return found


def schulki_tls_subtrees(host_names, addresses=(), facts=(), extra=()) -> list[str]:
    """What the school CA may sign for: the hosts' domains, their addresses and networks, loopback, and extra."""
    networks = [network for host_facts in facts or [] for network in _networks(host_facts)]
    return school_subtrees([str(n) for n in host_names], [str(a) for a in [*(addresses or []), *networks]], [str(e) for e in extra or []])


class FilterModule:
    """schulki's TLS filter."""

    def filters(self):
        return {"schulki_tls_subtrees": schulki_tls_subtrees}
