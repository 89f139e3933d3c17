"""The roll-out's firewall (deploy/roles/schulki_firewall) as Ansible renders, checks and loads it, under real packets.

A gateway, a GPU node, a student's device and a machine beyond the school's LAN are network namespaces on one
switch (tests/firewall_lab.py); the node forwards a published port to a container as Docker does. The role runs
with the real nft inside each machine's namespace (the playbook's `nft -c` check, its load and its second run),
and connections show what gets through: before the rules, the student reaches the node's gRPC ports and the
container reaches beyond the LAN (the lab is open); after them, only the gateway and the node itself reach the
ports, and the container reaches the LAN only.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.firewall_lab import ADDRESSES, CONTAINER, LAN, firewall_lab
from tests.fleet_lab import why_no_namespaces
from tests.test_deploy_ansible import DEPLOY, ansible, recap

NODE_PORTS = (50051, 50053)


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    reason = why_no_namespaces() or (None if shutil.which("nft") else "the nft command (Debian package nftables) is missing")
    if reason:
        pytest.skip(f"FIREWALL PACKET TESTS SKIPPED: {reason}")
    base = tmp_path_factory.mktemp("firewall")
    with firewall_lab() as lab:
        lab.listen("container", 50051)  # the inference container behind Docker's DNAT
        lab.listen("node", 50053)  # a port the host itself serves (Docker's userland proxy)
        lab.listen("gateway", 8443)
        lab.listen("outside", 443)
        before = {
            "student to the node's ports": [lab.reaches("student", ADDRESSES["node"], port) for port in NODE_PORTS],
            "container beyond the LAN": lab.reaches("container", ADDRESSES["outside"], 443),
        }
        common = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "schulki_firewall_install": False,
            "schulki_firewall_at_boot": False,
            "schulki_firewall_lan_networks": [LAN],
        }
        hosts = {
            "gw": {"schulki_plan_node_kind": "gateway", "schulki_stack_node_address": ADDRESSES["gateway"], "where": "gateway"},
            "node": {"schulki_plan_node_kind": "gpu", "where": "node"},
        }
        for name, host in hosts.items():
            host["schulki_firewall_nft"] = str(lab.nft_wrapper(base, host.pop("where")))
            host["schulki_firewall_rules_file"] = str(base / name / "firewall.nft")
        inventory = {
            "schulki": {
                "vars": common,
                "children": {"schulki_gateway": {"hosts": {"gw": hosts["gw"]}}, "schulki_gpu_nodes": {"hosts": {"node": hosts["node"]}}},
            }
        }
        (base / "hosts.yml").write_text(yaml.safe_dump(inventory))
        play = [{"name": "Set up the firewall of the test hosts", "hosts": "schulki", "gather_facts": False, "roles": ["schulki_firewall"]}]
        (base / "firewall.yml").write_text(yaml.safe_dump(play))
        (base / "ansible.cfg").write_text(f"[defaults]\nroles_path = {DEPLOY / 'roles'}\nfilter_plugins = {DEPLOY / 'filter_plugins'}\n")
        runs = [ansible("ansible-playbook", "-i", "hosts.yml", "firewall.yml", cwd=base, timeout=300) for _ in range(2)]
        for run in runs:
            assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
        yield lab, base, runs, before


def test_the_rules_are_checked_by_nft_loaded_and_a_second_run_changes_nothing(lab_run):
    lab, base, runs, _ = lab_run
    first, second = recap(runs[0].stdout), recap(runs[1].stdout)
    assert first["node"]["changed"] > 0 and first["gw"]["changed"] > 0
    assert second["node"]["changed"] == 0 and second["gw"]["changed"] == 0, runs[1].stdout[-4000:]
    rules = (base / "node" / "firewall.nft").read_text()
    assert lab.run("node", "nft", "-c", "-f", str(base / "node" / "firewall.nft")).returncode == 0
    fingerprint = re.search(r'comment "(schulki [0-9a-f]{40})"', rules)
    assert fingerprint and f'comment "{fingerprint[1]}"' in lab.run("node", "nft", "list", "table", "inet", "schulki").stdout
    gateway_set = re.search(r"set gateway4 \{[^}]*elements = \{ ([^}]*) \}", rules)
    assert gateway_set and gateway_set[1] == ADDRESSES["gateway"], "the node's ports open to the gateway's address alone"
    gateway_rules = (base / "gw" / "firewall.nft").read_text()
    assert "node_ports" not in gateway_rules, "the gateway's own ports (HTTPS for the students) stay open"
    assert "jump container_egress" in gateway_rules


def test_a_published_node_port_answers_the_gateway_and_the_node_itself_and_drops_a_student(lab_run):
    lab, _, _, before = lab_run
    assert before["student to the node's ports"] == [True, True], "without the rules the lab is open (else this test proves nothing)"
    node = ADDRESSES["node"]
    assert [lab.reaches("gateway", node, port, timeout=10) for port in NODE_PORTS] == [True, True]
    assert lab.reaches("node", "127.0.0.1", 50053, timeout=10), "the node's own health checks on loopback"
    dropped = lab.dropped("node_ports")
    assert [lab.reaches("student", node, port) for port in NODE_PORTS] == [False, False]
    assert lab.dropped("node_ports") > dropped, "the student's packets were dropped by schulki's rule, not lost elsewhere"


def test_a_container_reaches_the_lan_and_nothing_beyond(lab_run):
    lab, _, _, before = lab_run
    assert before["container beyond the LAN"], "without the rules the container reaches beyond the LAN"
    assert lab.reaches("container", ADDRESSES["gateway"], 8443, timeout=10)
    dropped = lab.dropped("container_egress")
    assert not lab.reaches("container", ADDRESSES["outside"], 443)
    assert lab.dropped("container_egress") > dropped
    assert CONTAINER.startswith("172.30."), "the container's network is Docker-like, outside the LAN the test names"


def test_the_rules_cover_every_port_compose_publishes_on_a_node():
    compose = yaml.safe_load((Path(DEPLOY).parent / "compose.yaml").read_text())
    published = {
        int(port.rsplit(":", 2)[-2])
        for service in compose["services"].values()
        if {"gpu", "cpu"} & set(service.get("profiles", []))
        for port in service.get("ports", [])
    }
    defaults = yaml.safe_load((DEPLOY / "roles" / "schulki_firewall" / "defaults" / "main.yml").read_text())
    assert published == set(defaults["schulki_firewall_node_ports"]) == set(NODE_PORTS)


def test_a_gateway_address_that_is_none_stops_the_run_with_what_to_set():
    sys.path.insert(0, str(DEPLOY / "filter_plugins"))
    try:
        from schulki_firewall import schulki_firewall_networks, schulki_gateway_addresses
    finally:
        sys.path.pop(0)
    from ansible.errors import AnsibleFilterError

    assert schulki_firewall_networks(["10.1.2.3", "10.0.0.0/8", "fd00::1", "192.168.1.7/24"]) == {
        "ipv4": ["10.0.0.0/8", "192.168.1.0/24"],
        "ipv6": ["fd00::1"],
    }
    with pytest.raises(AnsibleFilterError, match=r"'10\.0\.0\.300' is no address or network"):
        schulki_firewall_networks(["10.0.0.300"])
    groups = {"schulki_gateway": ["ki-gateway.invalid"]}
    with pytest.raises(AnsibleFilterError, match="set schulki_firewall_gateway_addresses"):
        schulki_gateway_addresses(groups, {"ki-gateway.invalid": {}})
    assert schulki_gateway_addresses(groups, {"ki-gateway.invalid": {"schulki_stack_node_address": "10.1.2.3"}}) == ["10.1.2.3"]
