"""Weaviate as one more host of the fleet lab, where its server binary is built (``./dev test`` caches it outside the repo).

Configured as compose.yaml's weaviate service: an API key for the one admin user,
no anonymous access, no telemetry; one node, listening on its host's address only.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from tests.fleet_lab import Host, Lab, wait_for
from tests.weaviate_support import compose_environment


def start_weaviate(lab: Lab, host: Host, binary: Path, folder: Path) -> dict[str, str]:
    """Run the server in its host's namespace until the lab ends; the retrieval node's settings to use it."""
    key = secrets.token_hex(16)
    data = folder / "weaviate"
    env = {
        **compose_environment(key, data / "data"),
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
