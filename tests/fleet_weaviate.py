"""Weaviate as one more host of the fleet lab, where its server binary is built (``./dev test`` caches it outside the repo).

Configured as compose.yaml's weaviate service: an API key for the one admin user,
no anonymous access, no telemetry; one node, listening on its host's address only.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import httpx

from tests.fleet_lab import Host, Lab, wait_for

REPO_ROOT = Path(__file__).resolve().parent.parent


def weaviate_server_path() -> Path:
    """Where the pinned server is cached: SCHULKI_WEAVIATE_BIN, else <cache>/weaviate/<compose.yaml's version>/weaviate-server."""
    if os.environ.get("SCHULKI_WEAVIATE_BIN"):
        return Path(os.environ["SCHULKI_WEAVIATE_BIN"])
    match = re.search(r"semitechnologies/weaviate:(\d+\.\d+\.\d+)", (REPO_ROOT / "compose.yaml").read_text())
    version = match.group(1) if match else "unknown"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "weaviate" / version / "weaviate-server"


def start_weaviate(lab: Lab, host: Host, binary: Path, folder: Path) -> dict[str, str]:
    """Run the server in its host's namespace until the lab ends; the retrieval node's settings to use it."""
    key = secrets.token_hex(16)
    data = folder / "weaviate"
    env = {
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
        "AUTHENTICATION_APIKEY_ENABLED": "true",
        "AUTHENTICATION_APIKEY_ALLOWED_KEYS": key,
        "AUTHENTICATION_APIKEY_USERS": "schulki",
        "AUTHORIZATION_ADMINLIST_ENABLED": "true",
        "AUTHORIZATION_ADMINLIST_USERS": "schulki",
        "DISABLE_TELEMETRY": "true",
        "PERSISTENCE_DATA_PATH": str(data / "data"),
        "DEFAULT_VECTORIZER_MODULE": "none",
        "QUERY_DEFAULTS_LIMIT": "25",
        "CLUSTER_HOSTNAME": "fleet-weaviate",
        "CLUSTER_ADVERTISE_ADDR": host.address,
        "RAFT_BOOTSTRAP_EXPECT": "1",
        "GRPC_PORT": "50051",
        "GO_PROFILING_DISABLE": "true",
    }
    command = [str(binary), "--scheme", "http", "--host", host.address, "--port", "8080"]
    process = lab.run(host, command, env, folder / "logs" / "weaviate.log")
    url = f"http://{host.address}:8080"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/v1/.well-known/ready", timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    with host.threads(1) as inside:
        wait_for(lambda: process.poll() is not None or inside.submit(ready).result(), 180, "Weaviate ready", interval=0.3)
    assert process.poll() is None, (folder / "logs" / "weaviate.log").read_text(errors="replace")[-3000:]
    return {
        "SCHULKI_RETRIEVAL__STORE": "weaviate",
        "SCHULKI_RETRIEVAL__WEAVIATE_URL": url,
        "SCHULKI_RETRIEVAL__WEAVIATE_API_KEY": key,
        "SCHULKI_RETRIEVAL__WEAVIATE_GRPC_PORT": "50051",
    }
