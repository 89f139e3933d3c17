#!/usr/bin/env python3
"""A stand-in for the `docker` command where no Docker engine runs: what the roll-out's compose steps would do.

It reads the compose.yaml and .env of --project-directory like docker compose
does (profiles, ${VAR:-default} interpolation), and records every pull and
every container it creates in a log beside the stack folder, so a test can
count how often each service would load its model. `up` creates a container
that does not exist, recreates one whose interpolated configuration changed
(or every one with --force-recreate), starts a stopped one and leaves the rest
alone, as compose does; --dry-run says what `up` would do and does nothing.
`stop` stops a host's containers; `ps` lists the stopped ones with --all only, as compose does. A service named
in docker-exits beside the stack folder exits right after `up` starts it. `exec -T gateway python -m
schulki.runtime.healthcheck gateway --node HOST:PORT --expect down|serving`
answers as the gateway's health view would: a node is serving while its
containers run. Used only by tests/test_deploy_ansible.py; PATH puts it first.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import yaml


def _env(folder: Path) -> dict[str, str]:
    path = folder / ".env"
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def _interpolate(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m[1]) or (m[2] or ""), text)


def _services(folder: Path) -> dict[str, str]:
    """The services of the active profiles, each with the hash of its interpolated configuration."""
    env = _env(folder)
    compose = yaml.safe_load(_interpolate((folder / "compose.yaml").read_text(), env))
    profiles = set(env.get("COMPOSE_PROFILES", "").split(","))
    return {
        name: hashlib.sha256(json.dumps(service, sort_keys=True).encode()).hexdigest()
        for name, service in compose["services"].items()
        if set(service.get("profiles", [])) & profiles
    }


def _buildable(folder: Path) -> set[str]:
    compose = yaml.safe_load((folder / "compose.yaml").read_text())
    return {name for name, service in compose["services"].items() if "build" in service}


def _state(folder: Path) -> dict:
    state_file = folder.parent / "docker-state.json"
    return json.loads(state_file.read_text()) if state_file.exists() else {}


def _save(folder: Path, state: dict, stopped: set[str]) -> None:
    (folder.parent / "docker-state.json").write_text(json.dumps({**state, "__stopped__": sorted(stopped)}))


def _gateway_view(folder: Path, state: dict, stopped: set[str], options: list[str], log: Path) -> int:
    """`healthcheck gateway --node HOST:PORT --expect X` in the gateway's container: 0 when the node is as expected."""
    if "gateway" not in state or "gateway" in stopped:
        print("service gateway is not running", file=sys.stderr)
        return 1
    if options[:2] != ["-T", "gateway"] or "--node" not in options:
        print(f"fake docker: unsupported exec {options}", file=sys.stderr)
        return 2
    node, port = options[options.index("--node") + 1].rsplit(":", 1)
    expect = options[options.index("--expect") + 1]
    node_stack = folder.parent.parent / node / "stack"
    node_state = _state(node_stack) if node_stack.exists() else {}
    running = set(node_state) - {"__stopped__"} - set(node_state.get("__stopped__", []))
    # The gateway sees each service by its port: inference on 50051, transcription on 50053.
    service = {"50051": "inference-", "50053": "transcription-"}.get(port, "-")
    seen = "serving" if any(name.startswith(service) for name in running) else "down"
    with log.open("a") as f:
        f.write(json.dumps({"exec": [node, expect, seen]}) + "\n")
    return 0 if seen == expect else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["info"]:
        print(json.dumps({"nvidia": {"path": "nvidia-container-runtime"}, "runc": {"path": "runc"}}))
        return 0
    if argv[:2] != ["compose", "--project-directory"]:
        print(f"fake docker: unsupported {argv}", file=sys.stderr)
        return 2
    folder, rest = Path(argv[2]), argv[3:]
    dry_run = rest[:1] == ["--dry-run"]
    command, options = rest[1 if dry_run else 0], rest[2 if dry_run else 1 :]
    log = folder.parent / "docker-log.jsonl"
    if not (folder / "compose.yaml").exists():
        print(f"no configuration file provided: not found in {folder}", file=sys.stderr)
        return 1
    state = _state(folder)
    stopped = set(state.pop("__stopped__", []))
    services = _services(folder)
    if command == "pull":
        skipped = _buildable(folder) if "--ignore-buildable" in options else set()
        pulled = sorted(set(services) - skipped)
        with log.open("a") as f:
            f.write(json.dumps({"pull": pulled}) + "\n")
        return 0
    if command == "up":
        events = []
        for name, config in sorted(services.items()):
            if name not in state:
                events.append((name, "Created"))
            elif state[name] != config or "--force-recreate" in options:
                events.append((name, "Recreated"))
            elif name in stopped:
                events.append((name, "Started"))
            state[name] = config
        if "--remove-orphans" in options:
            for name in sorted(set(state) - set(services)):
                events.append((name, "Removed"))
                del state[name]
        for name, event in events:
            print(f" Container schulki-{name}-1  {event[:-1] if dry_run else event}", file=sys.stderr)
        if dry_run:
            return 0
        # A test names services whose process ends right after it starts (docker-exits beside the stack folder).
        exits = folder.parent / "docker-exits"
        _save(folder, state, set(exits.read_text().split()) & set(state) if exits.exists() else set())
        with log.open("a") as f:
            f.write(json.dumps({"up": events}) + "\n")
        return 0
    if command == "stop":
        named = [option for i, option in enumerate(options) if not option.startswith("-") and options[i - 1] != "--timeout"]
        stopping = set(named) if named else set(state)
        _save(folder, state, stopped | stopping)
        with log.open("a") as f:
            f.write(json.dumps({"stop": sorted(stopping)}) + "\n")
        return 0
    if command == "exec":
        return _gateway_view(folder, state, stopped, options, log)
    if command == "ps":
        # Like compose: a stopped or exited container is listed only with --all, and has no health then.
        for name in sorted(state):
            if name in stopped and "--all" not in options:
                continue
            health = "" if name in stopped else "healthy"
            print(json.dumps({"Service": name, "State": "exited" if name in stopped else "running", "Health": health}))
        return 0
    print(f"fake docker: unsupported compose command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
