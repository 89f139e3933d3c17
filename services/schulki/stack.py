"""``schulki up``: every service and the gateway on this machine, as child processes.

Each service runs as ``schulki serve NAME`` in its own process, as it would in
its own container. Every chat model named in the settings (``inference.model_path``
and ``inference.more_models``) and every model added with ``schulki models add``
gets its own inference process: the first on ``inference.port``, the others on
ports the stack picks. Their addresses and models go into the gateway's nodes
file, which the gateway reads again with every health check, so a model added
while the stack runs is served within seconds and the gateway lists it without
a restart. ``run_stack`` starts everything in order, waits until each reports
SERVING, prints where to go, and stops them all on Ctrl-C or SIGTERM, or when
one of the services it started first dies (an added model that fails to load
is reported and left out; the rest keep running).

Before it starts anything it divides the machine's cores (schulki.cores,
``cores`` settings): each child gets its threads, CPUs and priority through
its environment (``service_environment``), and makes sure every service and
the gateway share a service token (``stack_token``), so that no other user of
the machine can call a service's port directly.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schulki.config import Config
from schulki.cores import CoreSplit, available_cores, describe, resolve_split, service_environment
from schulki.runtime.client import wait_until_serving
from schulki.runtime.local_token import stack_token_file

WATCH_INTERVAL_S = 2.0
"""How often the stack looks for models added with ``schulki models add``."""


@dataclass(frozen=True)
class ChatModelProcess:
    """One chat model this machine serves: its file, the name users see, and the port its process listens on."""

    path: Path
    name: str
    port: int


def _address(config: Config, name: str, port: int | None = None) -> str:
    return f"{config.runtime.host}:{port if port is not None else getattr(config, name).port}"


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wanted_chat_models(config: Config) -> list[tuple[Path, str]]:
    """(file, served name) of every chat model this machine should serve, each once: the settings' first, then the added ones."""
    from schulki.models.defaults import chat_model_path, models_dir
    from schulki.models.install import installed
    from schulki.models.served import served_name

    first = Path(config.inference.model_path or chat_model_path(config))
    wanted = [(first, served_name(first.name, config.inference.model_name))]
    wanted += [(Path(path), served_name(Path(path).name)) for path in config.inference.more_models]
    wanted += [(models_dir(config) / entry.file, entry.name) for entry in installed(models_dir(config))]
    seen, unique = set(), []
    for path, name in wanted:
        if name not in seen:
            seen.add(name)
            unique.append((path, name))
    return unique


def nodes_file(config: Config) -> Path:
    return Path(config.data_dir) / "gateway" / "nodes.json"


def write_nodes_file(config: Config, models: list[ChatModelProcess]) -> None:
    """Tell the gateway which local inference process serves which model (written whole, then renamed)."""
    path = nodes_file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps([{"address": _address(config, "inference", m.port), "model": m.name} for m in models], indent=2))
    partial.replace(path)


def stack_token(config: Config) -> Path | None:
    """The service token file every process of this stack is started with; None when the settings name a token already.

    Like the roll-out, which makes a token per host, ``schulki up`` makes one the
    first time (``secrets.token_hex(32)``: 256 bits) and keeps it private under
    the data folder, so the services on loopback refuse every local user who
    does not hold it. It is written whole under another name and then linked
    into place: no moment in which it exists empty, half written or readable by
    others, and a second ``schulki up`` never replaces it.
    """
    if config.runtime.resolved_service_token() is not None:
        return None
    path = stack_token_file(config)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.parent.chmod(0o700)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(partial, path)
        except FileExistsError:
            pass  # another schulki up made it first: use that one
        finally:
            partial.unlink()
    return path


def core_split(config: Config) -> CoreSplit | None:
    """How this machine's cores are divided between the services (None when cores.split is off)."""
    return resolve_split(config, available_cores()) if config.cores.split else None


def child_environment(split: CoreSplit | None, service: str, **settings: str) -> dict[str, str]:
    """The environment of one service's process: this one's, its share of the cores, and the given settings."""
    return dict(os.environ, **service_environment(split, service), **settings)


class _Stack:
    """The children of one ``schulki up``: the services it started first, chat models added since, and what it gave up on."""

    def __init__(self, config: Config, split: CoreSplit | None, start_timeout: float) -> None:
        self.config = config
        self.split = split
        self.start_timeout = start_timeout
        self.children: dict[str, subprocess.Popen] = {}
        self.extra: dict[str, subprocess.Popen] = {}  # chat models added while running: their failure stops only themselves
        self.chat_models: list[ChatModelProcess] = []
        self.given_up: set[str] = set()  # added models whose process exited: not started again until the next schulki up
        self.stopping = False

    def stop(self, *_: object) -> None:
        self.stopping = True

    def alive(self, child: subprocess.Popen) -> Callable[[], bool]:
        """Whether to keep waiting for a child to serve: it runs, and the stack was not told to stop."""
        return lambda: child.poll() is None and not self.stopping

    def start_chat_model(self, path: Path, name: str, port: int) -> subprocess.Popen:
        env = child_environment(self.split, "inference", SCHULKI_INFERENCE__MODEL_PATH=str(path), SCHULKI_INFERENCE__MODEL_NAME=name)
        return subprocess.Popen([sys.executable, "-m", "schulki.cli", "serve", "inference", "--port", str(port)], env=env)

    def start_services(self, services: list[str]) -> bool:
        """Start each service in order and wait until it serves; False (said on stderr) when one does not."""
        config, start_timeout = self.config, self.start_timeout
        for name in services:
            if name == "inference":
                if not self.start_chat_models():
                    return False
                continue
            print(f"schulki: starting {name} on {_address(config, name)} ...", flush=True)
            child = subprocess.Popen([sys.executable, "-m", "schulki.cli", "serve", name], env=child_environment(self.split, name))
            self.children[name] = child
            try:
                wait_until_serving(_address(config, name), start_timeout, is_alive=self.alive(child))
            except (RuntimeError, TimeoutError) as error:
                print(f"schulki: {name} did not start: {error}", file=sys.stderr)
                return False
        return True

    def start_chat_models(self) -> bool:
        """One inference process per wanted chat model, the first on inference.port; then the gateway's nodes file."""
        config, name = self.config, "inference"
        for index, (path, model) in enumerate(wanted_chat_models(config)):
            port = config.inference.port if index == 0 else _free_port(config.runtime.host)
            label = "inference" if index == 0 else f"inference {model}"
            print(f"schulki: starting {label} ({model}) on {_address(config, name, port)} ...", flush=True)
            child = self.children[label] = self.start_chat_model(path, model, port)
            self.chat_models.append(ChatModelProcess(path, model, port))
            try:
                wait_until_serving(_address(config, name, port), self.start_timeout, is_alive=self.alive(child))
            except (RuntimeError, TimeoutError) as error:
                print(f"schulki: {label} did not start: {error}", file=sys.stderr)
                return False
        write_nodes_file(config, self.chat_models)
        return True

    def start_gateway(self, services: list[str]) -> bool:
        """Start the gateway, wait until it answers, and print where everything is; False when it does not start."""
        from schulki.gateway.launch import first_admin_lines, gateway_url, https_lines, start_gateway, wait_until_up

        config = self.config
        admin_lines = first_admin_lines(config)
        tls_lines = https_lines(config)
        print(f"schulki: starting the gateway on port {config.gateway.port} ...", flush=True)
        if "inference" in services:
            os.environ["SCHULKI_GATEWAY__NODES_FILE"] = str(nodes_file(config))  # the gateway child inherits it
        gateway = self.children["gateway"] = start_gateway()
        try:
            wait_until_up(gateway_url(config), self.start_timeout, is_alive=lambda: gateway.poll() is None and not self.stopping)
        except (RuntimeError, TimeoutError) as error:
            print(f"schulki: gateway did not start: {error}", file=sys.stderr)
            return False
        self.print_addresses(services, [*tls_lines, *admin_lines])
        return True

    def print_addresses(self, services: list[str], notes: list[str]) -> None:
        from schulki.gateway.launch import lan_url

        config = self.config
        print("schulki is running:", flush=True)
        for name in services:
            if name == "inference":
                for m in self.chat_models:
                    print(f"  {'inference':<14} grpc://{_address(config, name, m.port)}  {m.name}", flush=True)
                continue
            print(f"  {name:<14} grpc://{_address(config, name)}", flush=True)
        print(f"  {'gateway':<14} {lan_url(config)}/  (API: {lan_url(config)}/v1)", flush=True)
        for line in notes:
            print(line, flush=True)
        print("Stop with Ctrl-C.", flush=True)

    def supervise(self, services: list[str]) -> int:
        """Until told to stop: 1 when a first-started child dies; an added model that dies is dropped; new models are started."""
        next_watch = time.monotonic() + WATCH_INTERVAL_S
        while not self.stopping:
            for name, child in self.children.items():
                if child.poll() is not None:
                    print(f"schulki: {name} exited with status {child.returncode}; stopping the rest", file=sys.stderr)
                    return 1
            self.drop_dead_added_models()
            if "inference" in services and time.monotonic() >= next_watch:
                next_watch = time.monotonic() + WATCH_INTERVAL_S
                self.start_added_models()
            time.sleep(0.5)
        return 0

    def drop_dead_added_models(self) -> None:
        for name, child in list(self.extra.items()):
            if child.poll() is not None:
                print(f"schulki: the added model {name} exited with status {child.returncode}; the rest keeps running", file=sys.stderr)
                del self.extra[name]
                self.given_up.add(name)
                self.chat_models[:] = [m for m in self.chat_models if m.name != name]
                write_nodes_file(self.config, self.chat_models)

    def start_added_models(self) -> None:
        """Models added with ``schulki models add`` since the last look get a process of their own."""
        config = self.config
        started = {m.name for m in self.chat_models}
        for path, model in wanted_chat_models(config):
            if model in started or model in self.given_up:
                continue
            port = _free_port(config.runtime.host)
            print(f"schulki: starting inference for the added model {model} on {_address(config, 'inference', port)}", flush=True)
            self.extra[model] = self.start_chat_model(path, model, port)
            self.chat_models.append(ChatModelProcess(path, model, port))
            write_nodes_file(config, self.chat_models)  # the gateway uses it once its health check passes

    def stop_all(self) -> None:
        everything = [*self.children.values(), *self.extra.values()]
        for child in everything:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in everything:
            try:
                child.wait(timeout=self.config.runtime.grace_period_s + 10)
            except subprocess.TimeoutExpired:
                child.kill()


def run_stack(config: Config, services: list[str], start_timeout: float = 300.0) -> int:
    """Start the services, wait until they serve, and supervise them until told to stop."""
    split = core_split(config)
    print(describe(split), flush=True)
    token_file = stack_token(config)
    if token_file is not None:  # every child (services and gateway) inherits it: the services require it, the gateway sends it
        os.environ["SCHULKI_RUNTIME__SERVICE_TOKEN_FILE"] = str(token_file)
        config.runtime.service_token_file = token_file
    stack = _Stack(config, split, start_timeout)
    signal.signal(signal.SIGTERM, stack.stop)
    signal.signal(signal.SIGINT, stack.stop)
    try:
        if not stack.start_services(services) or not stack.start_gateway(services):
            return 1
        return stack.supervise(services)
    finally:
        stack.stop_all()
