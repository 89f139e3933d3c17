"""A real Weaviate for the store tests: a server of the admin's own (WEAVIATE_URL), or the pinned one started here.

The pinned server is the version compose.yaml (and so the roll-out) runs,
built from its Go module once by ``./dev test`` into a folder outside the repo
(``weaviate_binary``). It runs for one test session on free loopback ports,
with a throw-away data folder and an API key, as the roll-out configures it
(compose.yaml's weaviate service), and is stopped afterwards.

``StoreEngine`` gives a test the settings of one engine; for Weaviate every
``configure`` names fresh collections, removed again when the engine's tests end.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr
from schulki.config import RetrievalConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
WEAVIATE_MODULE = "github.com/weaviate/weaviate/cmd/weaviate-server"
ENGINES = ("embedded", "weaviate")


def weaviate_version() -> str:
    """The Weaviate version compose.yaml pins (the one image tag the roll-out and the tests share)."""
    match = re.search(r"semitechnologies/weaviate:(\d+\.\d+\.\d+)", (REPO_ROOT / "compose.yaml").read_text())
    assert match, "compose.yaml names no pinned Weaviate image"
    return match.group(1)


def weaviate_binary() -> Path:
    """Where ``./dev test`` installs the server (GOBIN): SCHULKI_WEAVIATE_BIN, or the user's cache folder."""
    if os.environ.get("SCHULKI_WEAVIATE_BIN"):
        return Path(os.environ["SCHULKI_WEAVIATE_BIN"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "weaviate" / weaviate_version() / "weaviate-server"


def compose_environment(key: str, data: Path) -> dict[str, str]:
    """As compose.yaml's weaviate service: an API key for the one admin user, no anonymous access, no telemetry."""
    return {
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
        "AUTHENTICATION_APIKEY_ENABLED": "true",
        "AUTHENTICATION_APIKEY_ALLOWED_KEYS": key,
        "AUTHENTICATION_APIKEY_USERS": "schulki",
        "AUTHORIZATION_ADMINLIST_ENABLED": "true",
        "AUTHORIZATION_ADMINLIST_USERS": "schulki",
        "DISABLE_TELEMETRY": "true",
        "PERSISTENCE_DATA_PATH": str(data),
        "DEFAULT_VECTORIZER_MODULE": "none",
    }


@dataclass(frozen=True)
class WeaviateServer:
    """How to reach a Weaviate server."""

    url: str
    api_key: str | None
    grpc_port: int
    backup_path: Path | None = None
    """Where the server's filesystem backup module writes (BACKUP_FILESYSTEM_PATH), when this machine can read it."""

    def client(self):
        from schulki.retrieval.weaviate_store import connect

        return connect(self.url, self.api_key, self.grpc_port)


class WeaviateUnavailable(Exception):
    """No server to test against, with the reason and what to do."""


def _free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/.well-known/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _end_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, so a killed run leaves no server behind (Linux)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextmanager
def local_weaviate(binary: Path, timeout: float = 120) -> Iterator[WeaviateServer]:
    """The server binary on free loopback ports with a throw-away data folder, until the block ends."""
    folder = Path(tempfile.mkdtemp(prefix="schulki-test-weaviate-"))
    http, grpc, gossip, data, raft, raft_rpc = _free_ports(6)
    key = secrets.token_hex(16)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **compose_environment(key, folder / "data"),
        "ENABLE_MODULES": "backup-filesystem",
        "BACKUP_FILESYSTEM_PATH": str(folder / "backups"),
        "QUERY_DEFAULTS_LIMIT": "25",
        # One node on this machine: every cluster port its own free one, so runs side by side never collide.
        "CLUSTER_HOSTNAME": "schulki-test",
        "CLUSTER_ADVERTISE_ADDR": "127.0.0.1",
        "CLUSTER_GOSSIP_BIND_PORT": str(gossip),
        "CLUSTER_DATA_BIND_PORT": str(data),
        "RAFT_PORT": str(raft),
        "RAFT_INTERNAL_RPC_PORT": str(raft_rpc),
        "RAFT_BOOTSTRAP_EXPECT": "1",
        "GRPC_PORT": str(grpc),
        "GO_PROFILING_DISABLE": "true",  # else a pprof server on port 6060
    }
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "--scheme", "http", "--host", "127.0.0.1", "--port", str(http)],
        env=env,
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_end_with_parent,  # noqa: PLW1509 - only prctl, which is safe between fork and exec
    )
    url = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + timeout
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (folder / "server.log").read_text(errors="replace")[-2000:]
                raise WeaviateUnavailable(f"the Weaviate server {binary} did not get ready:\n{tail}")
            time.sleep(0.2)
        yield WeaviateServer(url, key, grpc, folder / "backups")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def weaviate_for_tests() -> Iterator[WeaviateServer]:
    """WEAVIATE_URL's server (WEAVIATE_API_KEY, WEAVIATE_GRPC_PORT, WEAVIATE_BACKUP_PATH), else the pinned binary started for this session."""
    if os.environ.get("WEAVIATE_URL"):
        yield WeaviateServer(
            os.environ["WEAVIATE_URL"].rstrip("/"),
            os.environ.get("WEAVIATE_API_KEY") or None,
            int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")),
            Path(os.environ["WEAVIATE_BACKUP_PATH"]) if os.environ.get("WEAVIATE_BACKUP_PATH") else None,
        )
        return
    binary = weaviate_binary()
    if not os.access(binary, os.X_OK):
        raise WeaviateUnavailable(
            f"no Weaviate server: {binary} is not built (./dev test builds it with Go: "
            f"go install {WEAVIATE_MODULE}@v{weaviate_version()}), and WEAVIATE_URL names no server of your own"
        )
    with local_weaviate(binary) as server:
        yield server


@dataclass
class StoreEngine:
    """One store engine's settings for the retrieval service under test."""

    name: str
    server: WeaviateServer | None = None
    collections: list[str] = field(default_factory=list)

    def settings(self) -> dict[str, object]:
        """The retrieval settings that pick this engine; for Weaviate with collections of their own."""
        if self.server is None:
            return {"store": "embedded"}
        collection = f"SchulkiTest{uuid.uuid4().hex[:12]}"
        self.collections.append(collection)
        return {
            "store": "weaviate",
            "weaviate_url": self.server.url,
            "weaviate_api_key": self.server.api_key,
            "weaviate_grpc_port": self.server.grpc_port,
            "weaviate_collection": collection,
        }

    def configure(self, retrieval: RetrievalConfig, settings: dict[str, object] | None = None) -> RetrievalConfig:
        """Point these retrieval settings at this engine (for Weaviate, at fresh collections unless ``settings``); returns them."""
        for name, value in (settings or self.settings()).items():
            # Assignment is not validated: the store reads the key as a SecretStr.
            setattr(retrieval, name, SecretStr(str(value)) if name == "weaviate_api_key" and value is not None else value)
        return retrieval

    def environment(self, settings: dict[str, object] | None = None) -> dict[str, str]:
        """The same (or ``settings``) as SCHULKI_RETRIEVAL__* variables, for a ``schulki serve retrieval`` process."""
        chosen = settings or self.settings()
        return {f"SCHULKI_RETRIEVAL__{name.upper()}": str(value) for name, value in chosen.items() if value is not None}

    def clean_up(self) -> None:
        """Remove every collection these tests named."""
        if self.server is None or not self.collections:
            return
        client = self.server.client()
        try:
            for name in self.collections:
                client.collections.delete([name, f"{name}Document"])
        finally:
            client.close()
        self.collections.clear()
