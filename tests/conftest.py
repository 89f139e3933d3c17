"""Shared fixtures: real services on real sockets, in this process or in a child process."""

from __future__ import annotations

import asyncio
import atexit
import base64
import functools
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from schulki.config import Config, RuntimeConfig
from schulki.runtime.client import wait_until_serving
from schulki.runtime.server import RunningServer, Service, create_server

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"


class InProcessServer:
    """Runs services on a real port, with their own event loop on a background thread."""

    def __init__(self, services: Sequence[Service], runtime: RuntimeConfig | None = None, start: bool = True):
        self.services = list(services)
        self.runtime = runtime or RuntimeConfig()
        self.start_services = start
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.running: RunningServer | None = None

    def call(self, coro, timeout: float = 120):
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        self.running = self.call(create_server(self.services, 0, self.runtime))
        if self.start_services:
            for service in self.services:
                self.call(service.start())
            self.call(self.running.set_serving(True))
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    @contextmanager
    def serving_channel(self) -> Iterator[grpc.Channel]:
        """A channel for one test; afterwards every service must still report SERVING."""
        with self.channel() as channel:
            yield channel
            for service in self.services:
                assert_serving(channel, service.service_name)

    def __exit__(self, *exc) -> None:
        async def shutdown():
            await self.running.set_serving(False)
            await self.running.server.stop(2)
            for service in self.services:
                await service.close()

        self.call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def assert_serving(channel: grpc.Channel, service: str) -> None:
    """The service behind the channel reports SERVING."""
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """``schulki serve NAME`` in a child process, as an admin would start it."""

    def __init__(self, name: str, env: dict[str, str] | None = None, port: int | None = None):
        self.name = name
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True, timeout: float = 120) -> ServiceProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "schulki.cli", "serve", self.name, "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if wait:
            wait_until_serving(self.address, timeout, is_alive=lambda: self.process.poll() is None)
        return self

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self, terminate: bool = True) -> tuple[int, str]:
        """Stop the process (SIGTERM, unless it should end by itself) and return its exit code and log."""
        if terminate and self.process.poll() is None:
            self.terminate()
        try:
            _, err = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return self.process.returncode, err


@dataclass(frozen=True)
class SharedTls:
    """A CA and a certificate for 127.0.0.1 and localhost that every HTTPS and TLS test in this run shares."""

    folder: Path
    cert_file: Path
    key_file: Path
    ca_file: Path

    @property
    def spki_sha256(self) -> str:
        """The certificate key's hash in the form Chromium's --ignore-certificate-errors-spki-list takes."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        key = x509.load_pem_x509_certificate(self.cert_file.read_bytes()).public_key()
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(der).digest()).decode()


@functools.cache
def shared_tls() -> SharedTls:
    """Made once per test run. Python's ssl, httpx, openai and gradio_client then trust the test CA (and the usual
    ones) through SSL_CERT_FILE, so every client in the tests checks the gateway's certificate for real."""
    import certifi
    from schulki.certificates import ensure_ca, ensure_certificate

    folder = Path(tempfile.mkdtemp(prefix="schulki-test-tls-"))
    # The folder holds the test CA's key: it goes when the process that made it ends, not one folder per run left in /tmp.
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    ca = ensure_ca(folder, common_name="schulki test CA")
    leaf = ensure_certificate(folder, "localhost", ["localhost", "127.0.0.1"], folder)
    bundle = folder / "trusted.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + ca.cert_file.read_bytes())
    os.environ["SSL_CERT_FILE"] = str(bundle)
    return SharedTls(folder, leaf.cert_file, leaf.key_file, ca.cert_file)


# Two test processes (./dev test runs pytest-xdist). Tests go to a process a module at a time, so that a module's
# stack is started once and its tests keep their order. Modules that share what one machine has once go together:
# the network-namespace labs (they add routes, bridges and firewall rules beside each other) and the PostgreSQL
# modules (they empty the one test server's schema). The slowest are handed out first, so that the last minutes
# are not one long module running alone.
SHARED_MACHINE_GROUPS = {
    "namespaces": (
        "tests/test_deploy_ansible.py",
        "tests/security/test_gateway_zero_egress.py",
        "tests/test_deploy_firewall.py",
        "tests/test_deploy_trust.py",
        "tests/test_deploy_weaviate.py",
        "tests/test_fleet_namespaces.py",
    ),
    "postgresql": (
        "tests/test_backup.py",
        "tests/test_gateway_accounts.py",
        "tests/test_gateway_schema_race.py",
        "tests/test_two_gateways.py",
    ),
}
EACH_TEST_ALONE = ("tests/test_benchmarks_smoke.py",)
"""Modules whose tests share nothing (each starts what it needs): their tests go to the processes one by one, so that
minutes of them do not run in one process while the other waits."""
SLOWEST_FIRST = (
    "tests/test_benchmarks_smoke.py::test_smoke_run_prints_its_table[transcription_bench.py]",
    "namespaces",
    "tests/test_benchmarks_smoke.py",
    "postgresql",
    "tests/test_transcription_at_once.py",
    "tests/browser/test_tasks_browser.py",
    "tests/test_eval_quants.py",
    "tests/test_gateway_api.py",
)
"""Groups and modules known to take minutes (``--durations`` of a full run), in the order they start."""


_GROUP_OF_MODULE = {module: group for group, modules in SHARED_MACHINE_GROUPS.items() for module in modules}


def process_group(nodeid: str) -> str:
    """What a test goes to a process with: itself where its module's tests share nothing, else its module's
    shared-machine group, else its module."""
    module = nodeid.split("::", 1)[0]
    if module in EACH_TEST_ALONE:
        return nodeid
    return _GROUP_OF_MODULE.get(module, module)


def pytest_collection_modifyitems(items) -> None:
    rank = {group: index for index, group in enumerate(SLOWEST_FIRST)}

    def order(item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return rank.get(process_group(item.nodeid), rank.get(module, len(rank)))

    # A stable sort: within a group (and among the modules not named) the collection's order stays.
    items.sort(key=order)


@pytest.hookimpl(optionalhook=True)  # a run without pytest-xdist (-p no:xdist) has no such hook
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scheduling by scope, with ``process_group`` as the scope (its own ``loadgroup`` marks do not reach
    the test ids under pytest 9, which keeps them elsewhere)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return process_group(nodeid)

    return ByGroup(config, log)


@pytest.fixture(scope="session")
def config() -> Config:
    return Config()


@pytest.fixture(scope="session", autouse=True)
def _artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


# The store engines. ------------------------------------------------------------------------
# Store tests take ``store_engine`` and run once per engine: the embedded store and a real Weaviate
# (tests/weaviate_support.py: WEAVIATE_URL's server, else the pinned binary ./dev test builds, started
# once per session). Without either the Weaviate runs skip, each naming the reason.


@pytest.fixture(scope="session")
def weaviate_server():
    from tests.weaviate_support import WeaviateUnavailable, weaviate_for_tests

    try:
        with weaviate_for_tests() as server:
            yield server
    except WeaviateUnavailable as reason:
        import warnings

        warnings.warn(f"WEAVIATE TESTS SKIPPED: {reason}", pytest.PytestWarning, stacklevel=1)
        pytest.skip(f"WEAVIATE TESTS SKIPPED: {reason}")


@pytest.fixture(scope="module", params=["embedded", "weaviate"])
def store_engine(request):
    from tests.weaviate_support import StoreEngine

    server = request.getfixturevalue("weaviate_server") if request.param == "weaviate" else None
    engine = StoreEngine(request.param, server)
    yield engine
    engine.clean_up()
