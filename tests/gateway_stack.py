"""The whole stack for the gateway's tests: the four real services in this process and the gateway on a real port."""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn
from fpdf import FPDF
from schulki.config import Config
from schulki.gateway.accounts.database import NewAccount
from schulki.gateway.app import create_app
from schulki.gateway.context import Gateway
from schulki.models.defaults import chat_model_path, embeddings_model_path, speech_model_path
from schulki.runtime import logs, registry

from tests.conftest import InProcessServer, free_port, shared_tls
from tests.service_support import wait_until

ALL_SERVICES = ("inference", "embeddings", "transcription", "retrieval")


class UvicornThread:
    """The gateway app served by uvicorn on a background thread, on a free port, over HTTPS as in production
    (the test certificate from tests.conftest.shared_tls, which every client in the tests trusts); https=False for plain HTTP."""

    def __init__(self, app, port: int | None = None, https: bool = True):
        self.port = port or free_port()
        self.https = https
        tls = shared_tls() if https else None
        files = {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)} if tls else {}
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=2,
                proxy_headers=False,  # as gateway.app.serve: X-Forwarded-For only from gateway.trusted_proxies
                **files,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), timeout=60, what="the gateway's start")
        if not self.server.started:
            raise RuntimeError("the gateway did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@dataclass
class Stack:
    url: str
    config: Config
    gateway: Gateway
    servers: dict[str, InProcessServer]

    def add_user(self, name: str, role: str = "student", classes: tuple[str, ...] = ()) -> NewAccount:
        return self.gateway.accounts.add_user(name, role, list(classes))

    def wait_available(self, name: str, available: bool = True, timeout: float = 30.0) -> None:
        what = f"{name} {'available' if available else 'unavailable'}"
        wait_until(lambda: self.gateway.available(name) == available, timeout, what, interval=0.05)


def stack_config(data_dir: Path) -> Config:
    config = Config(data_dir=data_dir)
    # The models stay where set-up prepared them; everything the gateway writes goes to data_dir.
    config.inference.model_path = chat_model_path()
    config.embeddings.model_path = embeddings_model_path()
    config.transcription.model_path = speech_model_path()
    config.inference.threads = 1  # on a shared, busy machine two spinning llama.cpp threads are slower than one
    config.inference.max_queued = 64
    config.inference.max_queued_per_user = 8
    config.embeddings.threads = 2
    config.transcription.threads = 2
    config.transcription.beam_size = 1  # greedy: the tests check the mechanics, not the last word
    config.gateway.health_interval_s = 0.5
    config.gateway.max_chat_tokens = 24
    # The tests log in as the same few users from 127.0.0.1 far more often than a class does; the login tests set small limits.
    config.gateway.login_successes_per_account = config.gateway.login_successes_per_address = 10_000
    tls = shared_tls()  # the gateway serves HTTPS in the tests too (UvicornThread), with this certificate
    config.gateway.tls_cert_file, config.gateway.tls_key_file = tls.cert_file, tls.key_file
    return config


def build_service(name: str, config: Config):
    return importlib.import_module(f"schulki.{name}").build(config)


@contextlib.contextmanager
def running_stack(data_dir: Path, services: tuple[str, ...] = ALL_SERVICES, config: Config | None = None) -> Iterator[Stack]:
    """Real services on real ports (retrieval on its own server, as it needs the embeddings' address), and the gateway."""
    config = config or stack_config(data_dir)
    servers: dict[str, InProcessServer] = {}
    with contextlib.ExitStack() as stack:
        for name in services:
            if name == "retrieval":
                continue
            servers[name] = stack.enter_context(InProcessServer([build_service(name, config)]))
            setattr(config.gateway, f"{name}_addresses", [servers[name].address])
        if "retrieval" in services:
            config.retrieval.embeddings_address = servers["embeddings"].address
            config.retrieval.store_path = data_dir / "retrieval"
            # ingest yields to this stack's own chat, not to whatever else listens on the default inference port
            config.retrieval.inference_address = servers["inference"].address if "inference" in servers else f"127.0.0.1:{free_port()}"
            servers["retrieval"] = stack.enter_context(InProcessServer([build_service("retrieval", config)]))
            config.gateway.retrieval_addresses = [servers["retrieval"].address]
        for name in ALL_SERVICES:
            if name not in services and not getattr(config.gateway, f"{name}_addresses"):
                # a port where nothing listens: the gateway sees the service as down
                setattr(config.gateway, f"{name}_addresses", [f"127.0.0.1:{free_port()}"])
        gateway = Gateway.create(config)
        web = stack.enter_context(UvicornThread(create_app(config, gateway)))
        yield Stack(web.url, config, gateway, servers)


def ui_client(url: str, headers: dict[str, str]):
    """A Gradio client of the gateway's UI that waits as long as a busy 2-core machine needs (its own default is 5 s)."""
    from gradio_client import Client

    return Client(url, headers=headers, verbose=False, httpx_kwargs={"timeout": 120})


def connect(url: str, timeout: float = 30) -> socket.socket:
    """A raw connection to the gateway at url, TLS-wrapped (and the certificate checked) when it is an https:// URL."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    if parts.scheme != "https":
        return sock
    return ssl.create_default_context(cafile=str(shared_tls().ca_file)).wrap_socket(sock, server_hostname=parts.hostname)


def write_pdf(path: Path, pages: list[str]) -> Path:
    """A real PDF with one page per text (fpdf2)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


class ServiceLog(logging.Handler):
    """The runtime's per-call log lines of the services running in this process, each with the request id it was
    logged under (the services' own log format prints the same id)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((logs.request_id.get(), record.getMessage()))

    def ids_of(self, service: str, method: str) -> set[str]:
        """The request ids under which the service's method ended."""
        prefix = f"/{registry.spec(service).proto_service}/{method} ended"
        return {request_id for request_id, message in list(self.lines) if message.startswith(prefix)}

    def wait_for(self, service: str, method: str, request_id: str, timeout: float = 30.0) -> None:
        """Wait until the method's line with this id is logged (a stream's line comes as it closes, after its last answer)."""
        wait_until(lambda: request_id in self.ids_of(service, method), timeout, f"a {service} {method} line with request id {request_id}")


@contextlib.contextmanager
def service_log() -> Iterator[ServiceLog]:
    """Capture the runtime's log lines, the per-call ones at DEBUG too, while the block runs."""
    logger = logging.getLogger("schulki.runtime")
    handler, level = ServiceLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
