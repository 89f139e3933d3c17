#!/usr/bin/env python3
"""A stand-in for the `docker` command where no Docker engine runs: what the roll-out's compose steps would do.

It reads the compose.yaml and .env of --project-directory like docker compose
does (profiles, ${VAR:-default} interpolation), and records every pull and
every container it creates in a log beside the stack folder, so a test can
count how often each service would load its model. `up` creates a container
that does not exist, recreates one whose interpolated configuration changed
(or every one with --force-recreate) and leaves the rest alone, as compose
does. Used only by tests/test_deploy_ansible.py; PATH puts it first.
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


def main(argv: list[str]) -> int:
    if argv[:1] == ["info"]:
        print(json.dumps({"nvidia": {"path": "nvidia-container-runtime"}, "runc": {"path": "runc"}}))
        return 0
    if argv[:2] != ["compose", "--project-directory"]:
        print(f"fake docker: unsupported {argv}", file=sys.stderr)
        return 2
    folder, command, options = Path(argv[2]), argv[3], argv[4:]
    log = folder.parent / "docker-log.jsonl"
    state_file = folder.parent / "docker-state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
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
            state[name] = config
        if "--remove-orphans" in options:
            for name in sorted(set(state) - set(services)):
                events.append((name, "Removed"))
                del state[name]
        state_file.write_text(json.dumps(state))
        with log.open("a") as f:
            f.write(json.dumps({"up": events}) + "\n")
        for name, event in events:
            print(f" Container schulki-{name}-1  {event}", file=sys.stderr)
        return 0
    if command == "ps":
        for name in sorted(state):
            print(json.dumps({"Service": name, "State": "running", "Health": "healthy" if name != "weaviate" else ""}))
        return 0
    print(f"fake docker: unsupported compose command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
