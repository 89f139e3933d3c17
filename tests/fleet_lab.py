"""A school's fleet on one machine: every node in its own network namespace, with its own address, TLS and token.

One namespace is the switch (a bridge); every host gets a namespace of its own,
joined to the bridge by a veth pair created straight inside the two namespaces,
so nothing is added to the machine's own network and no packet leaves it.
The addresses come from 10.213.7.0/24, a range of this lab's own. Processes run
under ``ip netns exec`` in a session of their own; they are killed by process
group, and whatever else still runs in a lab namespace is killed by
``ip netns pids`` before the namespaces go, also after a failed or interrupted
run (a later run clears what a killed one left).

Nodes are called by name (``inf1.fleet.test``), as in a school's DNS: ``ip netns
exec`` shows each namespace /etc/netns/<namespace>/hosts as its /etc/hosts. The
school CA is limited to the lab's domain and the certificates name hosts only:
a certificate that names an address, under a CA with address constraints (as the
roll-out makes them), fails every gRPC handshake; gRPC's BoringSSL answers
"unsupported name constraint type".

The test process itself stays in the machine's namespace; its HTTP calls run in
threads that entered a host's namespace (``setns`` acts on the calling thread only).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from schulki.certificates import ensure_ca, ensure_certificate

PREFIX = "skfleet"
SUBNET = "10.213.7"
DOMAIN = "fleet.test"
"""The lab's names: a reserved top-level domain, never a real one."""
CLONE_NEWNET = 0x40000000
CA_PASSPHRASE = "fleet-lab-ca-passphrase"


def why_no_namespaces() -> str | None:
    """Why this machine cannot build the lab, or None."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    return None


def _ip(*args: str) -> None:
    run = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if run.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {run.stderr.strip()}")


def _kill_namespace(name: str) -> None:
    """Kill whatever still runs in a namespace, then remove it."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)


def clear_leftovers() -> None:
    """Remove the namespaces of lab runs whose process is gone (a run killed before it could clean up)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in re.findall(rf"^({PREFIX}(\d+)-\S+)", listed, flags=re.M):
        owner = int(name[1])
        try:
            os.kill(owner, 0)
            continue  # a run still going
        except ProcessLookupError:
            _kill_namespace(name[0])


def enter_namespace(name: str) -> None:
    """Move the calling thread (only it) into a network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
    finally:
        os.close(fd)


@dataclass
class Host:
    name: str
    address: str
    namespace: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{DOMAIN}"

    def threads(self, count: int) -> ThreadPoolExecutor:
        """Worker threads that live in this host's namespace (their sockets are this host's)."""
        return ThreadPoolExecutor(count, initializer=enter_namespace, initargs=(self.namespace,))


class Lab:
    """The switch and the hosts, the school CA, each host's certificate and token."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self.ca = folder / "ca"
        self.tokens: dict[str, str] = {}

    def __enter__(self) -> Lab:
        clear_leftovers()
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        ensure_ca(self.ca, "schulki fleet lab CA", permitted=[DOMAIN], passphrase=CA_PASSPHRASE)
        return self

    def __exit__(self, *exc) -> None:
        for host in self.hosts.values():
            for process in host.processes:
                stop(process, grace=0)
        for host in self.hosts.values():
            _kill_namespace(host.namespace)
        _kill_namespace(self.switch)

    def add_host(self, name: str, number: int) -> Host:
        """A namespace with the address SUBNET.number on the switch, a certificate of the school CA for it, and its own token."""
        host = Host(name, f"{SUBNET}.{number}", f"{self.tag}-{name}")
        self.hosts[name] = host
        _ip("netns", "add", host.namespace)
        _ip("link", "add", "eth0", "netns", host.namespace, "type", "veth", "peer", "name", f"p{number}", "netns", self.switch)
        _ip("-n", self.switch, "link", "set", f"p{number}", "master", "br0", "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        ensure_certificate(self.ca, name, [host.fqdn], self.ca, ca_passphrase=CA_PASSPHRASE)
        names = "".join(f"{h.address} {h.fqdn}\n" for h in self.hosts.values())
        for each in self.hosts.values():  # every host knows every other by name
            folder = Path(f"/etc/netns/{each.namespace}")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text(f"127.0.0.1 localhost\n{names}")
        self.tokens[name] = secrets.token_hex(32)
        self.write_private(self.folder / "tokens" / name, self.tokens[name])
        return host

    def write_private(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)
        return path

    def token_file(self, name: str) -> Path:
        return self.folder / "tokens" / name

    def run(self, host: Host, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        """Start a command inside the host's namespace, in a process group of its own, logging to a file."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", host.namespace, *command],
                env={**{k: v for k, v in os.environ.items() if not k.startswith("SCHULKI_")}, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        host.processes.append(process)
        return process


def stop(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to the process group (SIGKILL at once for grace 0, or after grace seconds)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL if grace == 0 else signal.SIGTERM)
    try:
        process.wait(grace or 10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll until condition holds; the seconds it took. AssertionError naming what did not happen in time."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(interval)


@contextlib.contextmanager
def lab(folder: Path) -> Iterator[Lab]:
    with Lab(folder) as built:
        yield built
