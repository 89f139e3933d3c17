"""Ansible filters of the stack role: the address a node publishes its ports on, the images' digest pins, unwell containers."""

from __future__ import annotations

import ipaddress
import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: schulki_node_address
short_description: The stable address a GPU node or lab PC publishes its gRPC ports on, and the images' digest pins
description:
  - schulki_node_address returns the address the inventory names for a node, or fails saying how to name one.
  - schulki_image_pins checks schulki_stack_image_digests and returns the .env lines compose reads.
  - schulki_unwell_services lists the containers of `docker compose ps --all` that are not running and healthy.
"""

# The compose services whose image a digest may pin; the name in .env is SCHULKI_IMAGE_DIGEST_<SERVICE>.
PINNABLE = ("gateway", "retrieval", "embeddings", "weaviate", "inference-gpu", "transcription-gpu", "inference-cpu")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        return None


def schulki_node_address(named: str, host: str, interface: str = "", ansible_host: str = "", facts: dict | None = None) -> str:
    """The address this node publishes its gRPC ports on: one the inventory names, never the DHCP lease of the day.

    Docker binds a published port to the address it is given when the container starts; a lab PC whose DHCP
    lease changes keeps a container bound to an address it no longer has, and after a reboot the container
    does not start at all ("cannot assign requested address"). So the address comes from the inventory:
    schulki_stack_node_address (a fixed address or a DHCP reservation), else the address of
    schulki_stack_node_interface (a second network card with a fixed address), else the inventory's
    ansible_host where that is an address. The address must be one the host has.
    """
    facts = facts or {}
    if str(named).strip():
        address, source = _address(named), f"schulki_stack_node_address {named!r}"
        if address is None:
            raise AnsibleFilterError(f"{host}: {source} ist keine IP-Adresse (is not an IP address)")
    elif str(interface).strip():
        card = facts.get(str(interface).replace("-", "_").replace(".", "_"), {})
        found = (card.get("ipv4") or {}).get("address", "")
        if not found:
            known = ", ".join(sorted(facts.get("interfaces", []))) or "none"
            raise AnsibleFilterError(
                f"{host}: Netzwerkkarte {interface!r} hat keine IPv4-Adresse (schulki_stack_node_interface: the interface "
                f"has no IPv4 address; the host has {known})"
            )
        address, source = _address(found), f"the address of {interface}"
    elif _address(ansible_host) is not None:
        address, source = _address(ansible_host), f"ansible_host {ansible_host!r}"
    else:
        today = (facts.get("default_ipv4") or {}).get("address", "unknown")
        raise AnsibleFilterError(
            f"{host}: Keine feste Adresse für die gRPC-Ports genannt (no stable address named for the gRPC ports). "
            f"Today's default address {today} may come from DHCP and change; set schulki_stack_node_address "
            "(a fixed address or a DHCP reservation), schulki_stack_node_interface (a card with a fixed address), "
            "or ansible_host as an address."
        )
    assert address is not None
    owned = {str(a) for a in facts.get("all_ipv4_addresses", []) + facts.get("all_ipv6_addresses", [])}
    if facts.get("all_ipv4_addresses") and not address.is_loopback and str(address) not in owned:
        raise AnsibleFilterError(
            f"{host}: {source} ist keine Adresse dieses Rechners (is not an address of this host: it has "
            f"{', '.join(sorted(owned))}); Docker could not publish the ports there"
        )
    return str(address)


def schulki_image_pins(digests: dict | None) -> dict[str, str]:
    """The .env lines that pin images by digest: {"SCHULKI_IMAGE_DIGEST_GATEWAY": "@sha256:…"}; a wrong entry stops the run.

    A tag can be moved to another image in the registry; a digest names exactly one image, so every node of a
    school runs the same bytes that were tested. compose appends the value to the tag (name:tag@sha256:…),
    where Docker checks the digest when it pulls.
    """
    pins = {}
    for service, digest in (digests or {}).items():
        if service not in PINNABLE:
            raise AnsibleFilterError(
                f"schulki_stack_image_digests: unbekannter Dienst (unknown service) {service!r}; the services are {', '.join(PINNABLE)}"
            )
        if not DIGEST.fullmatch(str(digest)):
            raise AnsibleFilterError(
                f"schulki_stack_image_digests.{service}: {digest!r} ist kein Digest (is no digest): "
                "sha256: and 64 lower-case hex digits, as `docker buildx imagetools inspect IMAGE` prints it"
            )
        pins["SCHULKI_IMAGE_DIGEST_" + service.upper().replace("-", "_")] = "@" + str(digest)
    return pins


def schulki_unwell_services(rows) -> list[str]:
    """From `docker compose ps --all --format json` (one object a line): each container that is not running, or
    whose health check says anything but healthy, as "service: state, health". A container without a health
    check has Health "": running is enough for it."""
    unwell = []
    for row in rows:
        state, health = str(row.get("State", "")), str(row.get("Health", ""))
        if state != "running" or health not in ("", "healthy"):
            unwell.append(f"{row.get('Service', row.get('Name', '?'))}: {state or 'unknown'}" + (f", {health}" if health else ""))
    return unwell


class FilterModule:
    """The stack role's filters."""

    def filters(self):
        return {
            "schulki_node_address": schulki_node_address,
            "schulki_image_pins": schulki_image_pins,
            "schulki_unwell_services": schulki_unwell_services,
        }
