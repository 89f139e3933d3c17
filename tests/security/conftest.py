"""The attack suite's shared stack: every real service and the gateway on real sockets, attacked as a student would.

A student has a browser, curl, an API key of their own, and time. The tests
here use exactly that: HTTP requests (httpx, raw sockets), the Gradio API the
web UI uses, the OpenAI-compatible API, and Chromium.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.gateway_stack import Stack, running_stack, stack_config
from tests.retrieval_support import embeddings_server

MIB = 1024 * 1024


@pytest.fixture(scope="session")
def embeddings_address() -> Iterator[str]:
    """One embeddings service for the data tests that run a retrieval process of their own (parsing, quota)."""
    with embeddings_server() as server:
        yield server.address


@pytest.fixture(scope="session")
def security_stack(tmp_path_factory) -> Iterator[Stack]:
    """One stack for the whole suite, with limits small enough to reach quickly in a test."""
    folder = tmp_path_factory.mktemp("security")
    config = stack_config(folder)
    limits = {
        "max_request_bytes": 1 * MIB,
        "max_upload_bytes": 8 * MIB,
        "ui_upload_mb_per_user": 16,
        "body_idle_timeout_s": 2.0,
        "requests_per_minute": {"student": 10_000, "teacher": 10_000, "admin": 10_000},
    }
    for name, value in limits.items():
        if name in type(config.gateway).model_fields:  # an older gateway lacks some: the suite then shows the attacks succeed
            setattr(config.gateway, name, value)
    with running_stack(folder, config=config) as running:
        yield running


@dataclass
class User:
    """An account of the stack, with what its owner knows: password and API key."""

    stack: Stack
    account: object
    password: str
    api_key: str

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def browser(self, address: str = "127.0.0.1") -> httpx.Client:
        """A client logged in through the login form, with the session cookie, from ``address`` (any of 127.0.0.0/8)."""
        with httpx.Client(base_url=self.stack.url, transport=httpx.HTTPTransport(local_address=address), timeout=60) as login:
            response = login.post("/login", data={"name": self.name, "password": self.password})
        assert response.status_code == 303, response.text
        return httpx.Client(
            base_url=self.stack.url,
            transport=httpx.HTTPTransport(local_address=address),
            timeout=60,
            cookies={"schulki_session": response.cookies["schulki_session"]},
        )


def make_user(stack: Stack, role: str = "student", classes: tuple[str, ...] = ()) -> User:
    created = stack.add_user(f"sec-{role}-{uuid.uuid4().hex[:10]}", role, classes)
    return User(stack, created.account, created.password, created.api_key)


@pytest.fixture()
def student(security_stack) -> User:
    return make_user(security_stack, "student", ("7a",))


@pytest.fixture()
def other_student(security_stack) -> User:
    return make_user(security_stack, "student", ("7b",))


@pytest.fixture()
def admin(security_stack) -> User:
    return make_user(security_stack, "admin")


def file_payload(path: str) -> dict:
    """What Gradio's client sends for a file: a FileData dict naming a path on the server."""
    return {"path": path, "orig_name": path.rsplit("/", 1)[-1] or "x", "meta": {"_type": "gradio.FileData"}}


def gradio_endpoints(client: httpx.Client, prefix: str = "") -> list[dict]:
    """Every event of the UI, from Gradio's own config: api_name, fn_index and the number of inputs."""
    config = client.get(f"{prefix}/config")
    assert config.status_code == 200, config.text
    found = []
    for index, dependency in enumerate(config.json()["dependencies"]):
        found.append(
            {"api_name": dependency.get("api_name"), "fn_index": dependency.get("id", index), "inputs": len(dependency.get("inputs", []))}
        )
    return found


def gradio_call(client: httpx.Client, api_name: str, data: list, prefix: str = "", timeout: float = 120) -> tuple[int, str, object]:
    """Call an event through ``/gradio_api/call/<api_name>`` as curl would.

    Returns (status of the call, SSE event name or "", data of the last SSE event
    or the refusal body). The event name is "complete" or "error".
    """
    started = client.post(f"{prefix}/gradio_api/call/{api_name}", json={"data": data}, timeout=timeout)
    if started.status_code != 200:
        return started.status_code, "", started.text
    event_id = started.json()["event_id"]
    event, payload = "", None
    with client.stream("GET", f"{prefix}/gradio_api/call/{api_name}/{event_id}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                text = line.split(":", 1)[1].strip()
                try:
                    payload = json.loads(text)
                except json.JSONDecodeError:
                    payload = text
                if event in ("complete", "error"):
                    break
    return 200, event, payload


def upload(client: httpx.Client, name: str, content: bytes, prefix: str = "") -> str:
    """Upload a file through Gradio's upload route, as the browser does; returns its path in Gradio's cache."""
    response = client.post(f"{prefix}/gradio_api/upload", files=[("files", (name, content))])
    assert response.status_code == 200, response.text
    return response.json()[0]


class ConnectionRecorder:
    """A plain TCP listener on loopback that only counts who connects: the stand-in for a host on the internet."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


@pytest.fixture()
def recorder() -> Iterator[ConnectionRecorder]:
    found = ConnectionRecorder()
    yield found
    found.close()
