"""Ansible filters for the rolling roll-out: which nodes the gateway lists, and each service's settings checksum."""

from __future__ import annotations

import hashlib
import json
import tomllib

import yaml

DOCUMENTATION = r"""
name: schulki_gateway_nodes
short_description: The GPU nodes and lab PCs the gateway lists, and those it leaves out with the reason
description:
  - Every node of the inventory stays listed, also one that was off or unreachable in this run (the
    gateway's health check marks it down until it answers); only a node whose plan failed is left out.
"""

NODE_GROUPS = ("schulki_gpu_nodes", "schulki_cpu_nodes")

SERVICE_SECTIONS = {
    "retrieval": ("runtime", "cores", "retrieval", "embeddings"),
    "embeddings": ("runtime", "cores", "embeddings"),
    "inference-gpu": ("runtime", "cores", "inference"),
    "inference-cpu": ("runtime", "cores", "inference"),
    "transcription-gpu": ("runtime", "cores", "transcription"),
}
"""The sections of schulki.toml each service reads; a service not named here (the gateway) reads them all."""


def _plan(hostvars, host: str) -> dict | None:
    return hostvars[host].get("schulki_plan_result")


def schulki_gateway_nodes(groups, hostvars) -> dict:
    """{"gpu": [...], "cpu": [...], "dropped": {host: why}, "unplanned": [...]} for the gateway's settings."""
    result: dict = {"gpu": [], "cpu": [], "dropped": {}, "unplanned": []}
    for group, kind in zip(NODE_GROUPS, ("gpu", "cpu"), strict=True):
        for host in groups.get(group, []):
            plan = _plan(hostvars, host)
            if plan is not None and plan.get("error"):
                result["dropped"][host] = str(plan["error"])
                continue
            if plan is None:
                result["unplanned"].append(host)
            result[kind].append(host)
    return result


def schulki_node_summary(groups, hostvars) -> list[str]:
    """The run's summary of the gateway's node list, one line a point."""
    nodes = schulki_gateway_nodes(groups, hostvars)
    lines = [f"Der Gateway führt (the gateway lists): {', '.join(nodes['gpu'] + nodes['cpu']) or '-'}"]
    if nodes["unplanned"]:
        lines.append(
            "Nicht erreicht in diesem Lauf, bleiben gelistet (not reached in this run, stay listed until they answer): "
            + ", ".join(nodes["unplanned"])
        )
    for host, why in nodes["dropped"].items():
        lines.append(f"Weggelassen (left out), Planung fehlgeschlagen (planning failed): {host}: {why}")
    return lines


def schulki_settings_checksums(settings_text: str, compose_text: str, secret_files: list) -> dict:
    """Per compose service: the checksum of the schulki.toml sections and the secret files it reads.

    secret_files are the files under secrets/ as ansible.builtin.find lists them (path, checksum). A service's container is then
    recreated only when its own settings or secrets change, not when another service's do.
    """
    secret_checksums = {str(f["path"]).rsplit("/", 1)[-1]: f["checksum"] for f in secret_files}
    settings = tomllib.loads(settings_text)
    compose = yaml.safe_load(compose_text)
    file_of = {name: str(spec.get("file", "")).rsplit("/", 1)[-1] for name, spec in compose.get("secrets", {}).items()}
    checksums = {}
    for service, spec in compose["services"].items():
        sections = SERVICE_SECTIONS.get(service, tuple(settings))
        secrets = sorted(file_of.get(s if isinstance(s, str) else s["source"], "") for s in spec.get("secrets", []))
        read = {
            "settings": {section: settings[section] for section in sections if section in settings},
            "secrets": {name: secret_checksums.get(name, "") for name in secrets},
        }
        key = "SCHULKI_SETTINGS_CHECKSUM_" + service.upper().replace("-", "_")
        checksums[key] = hashlib.sha256(json.dumps(read, sort_keys=True, default=str).encode()).hexdigest()
    return checksums


class FilterModule:
    """schulki's filters of the rolling roll-out."""

    def filters(self):
        return {
            "schulki_gateway_nodes": schulki_gateway_nodes,
            "schulki_node_summary": schulki_node_summary,
            "schulki_settings_checksums": schulki_settings_checksums,
        }
