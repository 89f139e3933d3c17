"""A GPU node behind a switch, with a container and a published port as Docker makes them, to send real packets at
the roll-out's firewall rules.

Every machine is a network namespace (names skfw<pid>-*), joined by veth pairs to a switch namespace (a bridge), with
addresses of its own from 10.213.9.0/24 (inside the namespaces only; nothing is added to the machine's own network).
The node forwards, and carries Docker's two rules for a published port in a table of their own: the DNAT of its
address and port to the container's (172.30.0.2), and the masquerade of the container's own connections. The
container sits behind a veth named like a Docker bridge (br-...). Whatever a run leaves behind, the next one removes.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.fleet_lab import _ip, _kill_namespace, enter_namespace

PREFIX = "skfw"
SUBNET = "10.213.9"
ADDRESSES = {"gateway": f"{SUBNET}.1", "node": f"{SUBNET}.2", "student": f"{SUBNET}.3", "outside": f"{SUBNET}.200"}
"""The gateway, the GPU node, a student's device, and a machine outside the LAN the test names (10.213.9.0/25)."""
LAN = f"{SUBNET}.0/25"
CONTAINER = "172.30.0.2"
BRIDGE = "br-skfw0"

DOCKER_LIKE_RULES = f"""
table ip dockerlike {{
	chain prerouting {{
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr {ADDRESSES["node"]} tcp dport 50051 dnat to {CONTAINER}:50051
	}}
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 172.30.0.0/24 oifname != "{BRIDGE}" masquerade
	}}
}}
"""
"""What Docker adds for `ports: ["10.213.9.2:50051:50051"]` of a container on a bridge network (iptables-nft or nftables)."""


def clear_leftovers() -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name, owner in re.findall(rf"^({PREFIX}(\d+)-\S+)", listed, flags=re.M):
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            _kill_namespace(name)


class FirewallLab:
    """The namespaces, and TCP listeners in them that answer "ok"."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.namespaces = {name: f"{self.tag}-{name}" for name in ("switch", *ADDRESSES, "container")}
        self._listeners: list[socket.socket] = []

    def __enter__(self) -> FirewallLab:
        clear_leftovers()
        for namespace in self.namespaces.values():
            _ip("netns", "add", namespace)
            _ip("-n", namespace, "link", "set", "lo", "up")
        switch = self.namespaces["switch"]
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for number, (name, address) in enumerate(ADDRESSES.items()):
            namespace = self.namespaces[name]
            _ip("link", "add", "eth0", "netns", namespace, "type", "veth", "peer", "name", f"p{number}", "netns", switch)
            _ip("-n", switch, "link", "set", f"p{number}", "master", "br0", "up")
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
        node, container = self.namespaces["node"], self.namespaces["container"]
        _ip("link", "add", BRIDGE, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", container)
        _ip("-n", node, "addr", "add", "172.30.0.1/24", "dev", BRIDGE)
        _ip("-n", node, "link", "set", BRIDGE, "up")
        _ip("-n", container, "addr", "add", f"{CONTAINER}/24", "dev", "eth0")
        _ip("-n", container, "link", "set", "eth0", "up")
        _ip("-n", container, "route", "add", "default", "via", "172.30.0.1")
        self.run("node", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        subprocess.run(["ip", "netns", "exec", node, "nft", "-f", "-"], input=DOCKER_LIKE_RULES, text=True, check=True)
        return self

    def __exit__(self, *exc) -> None:
        for listener in self._listeners:
            listener.close()
        for namespace in self.namespaces.values():
            _kill_namespace(namespace)

    def run(self, where: str, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.namespaces[where], *command], capture_output=True, text=True, check=True)

    def nft_wrapper(self, folder: Path, where: str) -> Path:
        """A stand-in for `nft` that runs the real one inside a host's namespace (the playbook's loads land there)."""
        path = folder / f"nft-{where}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.namespaces[where]} nft "$@"\n')
        path.chmod(0o755)
        return path

    def _in(self, where: str, work, *args):
        with ThreadPoolExecutor(1, initializer=enter_namespace, initargs=(self.namespaces[where],)) as pool:
            return pool.submit(work, *args).result()

    def listen(self, where: str, port: int, address: str = "0.0.0.0") -> None:
        """A TCP listener in a namespace that answers every connection with "ok"."""
        listener = self._in(where, socket.create_server, (address, port))
        self._listeners.append(listener)

        def answer() -> None:
            with contextlib.suppress(OSError):
                while True:
                    connection, _ = listener.accept()
                    with connection:
                        connection.sendall(b"ok")

        threading.Thread(target=answer, daemon=True).start()

    def reaches(self, where: str, address: str, port: int, timeout: float = 3.0) -> bool:
        """Whether a connection from a namespace gets the listener's "ok" (False when it times out or is refused)."""

        def connect() -> bool:
            try:
                with socket.create_connection((address, port), timeout=timeout) as connection:
                    return connection.recv(2) == b"ok"
            except OSError:
                return False

        return self._in(where, connect)

    def dropped(self, chain: str) -> int:
        """Packets the named chain of schulki's table on the node has dropped (its counter)."""
        listing = self.run("node", "nft", "list", "chain", "inet", "schulki", chain).stdout
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", listing))


@contextlib.contextmanager
def firewall_lab() -> Iterator[FirewallLab]:
    with FirewallLab() as lab:
        yield lab


def namespaced_nft(folder: Path, hosts: list[str]) -> tuple[dict[str, Path], list[str]]:
    """For a roll-out test on this machine: per host an `nft` that acts inside a throw-away namespace of that host's
    own (the machine's firewall is never touched), and the namespaces to remove afterwards (remove_namespaces)."""
    clear_leftovers()
    wrappers, namespaces = {}, []
    for host in hosts:
        namespace = f"{PREFIX}{os.getpid()}-{host}"
        _ip("netns", "add", namespace)
        namespaces.append(namespace)
        wrappers[host] = folder / f"nft-{host}"
        wrappers[host].write_text(f'#!/bin/sh\nexec ip netns exec {namespace} nft "$@"\n')
        wrappers[host].chmod(0o755)
    return wrappers, namespaces


def remove_namespaces(namespaces: list[str]) -> None:
    for namespace in namespaces:
        _kill_namespace(namespace)
