"""Ansible filters for the firewall: the gateway machines' addresses, and addresses split into IPv4 and IPv6 for nftables."""

from __future__ import annotations

import ipaddress
import socket

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: schulki_firewall_networks
short_description: Addresses and networks (CIDR) as nftables set elements, IPv4 and IPv6 apart, overlaps merged
description:
  - schulki_gateway_addresses gives the addresses of the inventory's gateway machines (schulki_stack_node_address,
    else the address its facts show, else what its name resolves to here).
"""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _element(network: Network) -> str:
    """A single address without its /32 or /128, as nft lists it."""
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def schulki_firewall_networks(values) -> dict[str, list[str]]:
    """{"ipv4": [...], "ipv6": [...]}: nftables refuses overlapping elements in an interval set, so they are merged."""
    found: dict[int, list[Network]] = {4: [], 6: []}
    for value in values or []:
        try:
            network = ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError as error:
            raise AnsibleFilterError(f"schulki firewall: {value!r} is no address or network (CIDR): {error}") from error
        found[network.version].append(network)
    return {
        f"ipv{version}": [_element(n) for n in ipaddress.collapse_addresses(networks)]  # type: ignore[misc]
        for version, networks in found.items()
    }


def _resolved(name: str) -> list[str]:
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)})
    except OSError:
        return []


def _gateway_addresses(host: str, hostvars) -> list[str]:
    facts = hostvars.get("ansible_facts") or {}
    for found in (
        [hostvars.get("schulki_stack_node_address")],
        [(facts.get("default_ipv4") or {}).get("address"), (facts.get("default_ipv6") or {}).get("address")],
    ):
        if any(found):
            return [str(a) for a in found if a]
    return _resolved(str(hostvars.get("ansible_host") or host))


def schulki_gateway_addresses(groups, hostvars) -> list[str]:
    """Every gateway machine's address, for the nodes' firewall; a gateway without one stops the run, saying what to set."""
    addresses = []
    for host in groups.get("schulki_gateway", []):
        try:
            found = _gateway_addresses(host, hostvars[host])
        except Exception:
            found = _resolved(host)
        if not found:
            raise AnsibleFilterError(
                f"Die Adresse des Gateways {host} ist unbekannt (the address of the gateway {host} is unknown: its name does not"
                " resolve here and the inventory names none): set schulki_firewall_gateway_addresses, or schulki_stack_node_address"
                " of the gateway"
            )
        addresses += found
    return addresses


class FilterModule:
    """schulki's firewall filters."""

    def filters(self):
        return {"schulki_firewall_networks": schulki_firewall_networks, "schulki_gateway_addresses": schulki_gateway_addresses}
