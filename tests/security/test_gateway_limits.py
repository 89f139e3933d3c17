"""Attacks on the gateway's resources: huge bodies, huge headers, slow senders, parallel requests past the quota.

Findings 5 and 9 of issue 9. Raw sockets where an HTTP client would not
misbehave the way an attacker does.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import socket
import ssl
import time

import httpx
import pytest

from tests import gateway_stack
from tests.security.conftest import MIB, make_user

JSON_ROUTES = [
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/vector_stores/vs_x/files",  # JSON, though it ends in /files: only /v1/files itself takes uploads
    "/gradio_api/call/chat",
    "/gradio_api/queue/join",
    "/en/gradio_api/run/translate",
    "/login",
]


def connect(stack) -> socket.socket:
    """A raw connection to the gateway (TLS when it serves HTTPS, as it does by default)."""
    return gateway_stack.connect(stack.url, timeout=10)


def read_status(sock: socket.socket, timeout: float = 10) -> int | None:
    """The status code of the answer, or None when none came within ``timeout`` (the server is still reading)."""
    sock.settimeout(timeout)
    try:
        head = sock.recv(4096)
    except TimeoutError:
        return None
    except (ConnectionResetError, ssl.SSLError):
        return -1
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else -1


def request_head(route: str, user, extra: str) -> bytes:
    media = "application/x-www-form-urlencoded" if route == "/login" else "application/json"
    return (
        f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {user.api_key}\r\nContent-Type: {media}\r\n{extra}\r\n"
    ).encode()


@pytest.mark.parametrize("route", JSON_ROUTES)
def test_a_huge_declared_body_is_refused_before_it_is_sent(security_stack, student, route):
    """Attacks: a 150 MiB JSON body (read and parsed before the quota check, gateway memory 810 -> 1524 MiB) (finding 5)."""
    with connect(security_stack) as sock:
        sock.sendall(request_head(route, student, f"Content-Length: {150 * MIB}\r\n"))
        assert read_status(sock) == 413  # answered without a byte of the body


@pytest.mark.parametrize("route", JSON_ROUTES)
def test_a_huge_chunked_body_is_refused_while_it_streams_in(security_stack, student, route):
    """Attacks: the same body chunked (no Content-Length), so only counting while it streams can stop it (finding 5)."""
    limit = security_stack.config.gateway.max_request_bytes
    chunk = (b"name=" if route == "/login" else b"[") + b" " * (64 * 1024 - 5)
    with connect(security_stack) as sock:
        sock.sendall(request_head(route, student, "Transfer-Encoding: chunked\r\n"))
        sent = 0
        try:
            while sent <= limit + 256 * 1024:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
        except OSError:  # BrokenPipe, ConnectionReset, or SSLEOF when the server closes while the client still sends
            pass
        assert read_status(sock) in (413, -1)  # refused (or the connection closed) instead of reading on
    assert httpx.get(security_stack.url + "/healthz").status_code == 200


def test_a_body_within_the_limit_still_works(security_stack, student):
    """Checks a normal JSON request passes the limit (a fix that refuses everything would pass above)."""
    response = httpx.post(security_stack.url + "/v1/embeddings", headers=student.bearer, json={"input": "Hallo " * 1000}, timeout=60)
    assert response.status_code == 200, response.text


def test_oversized_headers_are_refused_and_the_gateway_keeps_serving(security_stack, student):
    """Attacks: a request with a 1 MiB header and one with 10,000 headers, to exhaust memory or parsing time."""
    # The last one is small enough (about 1.5 KiB) to arrive in one read every time, past uvicorn's own parser limit.
    for extra in (
        "X-Big: " + "a" * MIB + "\r\n",
        "".join(f"X-H{i}: {i}\r\n" for i in range(10_000)),
        "".join(f"X-H{i}: {i}\r\n" for i in range(150)),
    ):
        with connect(security_stack) as sock:
            # BrokenPipe, ConnectionReset, or SSLEOF when the server closes while the client still sends
            with contextlib.suppress(OSError):
                sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
            assert read_status(sock) in (400, 413, 431, -1)  # refused, or the connection closed
    assert httpx.get(security_stack.url + "/healthz", timeout=5).status_code == 200
    browser_like = {f"X-H{i}": str(i) for i in range(30)} | {"Cookie": "c=" + "x" * 8192}
    assert httpx.get(security_stack.url + "/healthz", headers=browser_like, timeout=5).status_code == 200


def test_a_slow_loris_upload_is_cut_off_and_others_are_served_meanwhile(security_stack, student):
    """Attacks: uploads that send a few bytes and then stall, holding connections open (bounded: 20 sockets, loopback)."""
    head = (
        f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {student.api_key}\r\n"
        f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {4 * MIB}\r\n\r\n--x\r\n"
    ).encode()
    sockets = [connect(security_stack) for _ in range(20)]
    try:
        for sock in sockets:
            sock.sendall(head)
        start = time.monotonic()
        assert httpx.get(security_stack.url + "/healthz", timeout=5).status_code == 200  # others are served meanwhile
        statuses = [read_status(sock, timeout=security_stack.config.gateway.body_idle_timeout_s + 10) for sock in sockets]
        # cut off when it stalls (408), or refused at once by the rate of uploads per user (429)
        assert all(status in (408, 429, -1) for status in statuses), statuses
        assert 408 in statuses or -1 in statuses
        assert time.monotonic() - start < security_stack.config.gateway.body_idle_timeout_s + 10
    finally:
        for sock in sockets:
            sock.close()


def test_parallel_requests_cannot_overrun_the_daily_token_quota(security_stack):
    """Attacks: many parallel chats with a large max_tokens, which all passed a quota checked only at their start (finding 9)."""
    user = make_user(security_stack, "teacher")
    limits = security_stack.config.gateway.tokens_per_day
    saved = dict(limits)
    limits["teacher"] = 120
    try:

        def chat(i: int) -> int:
            response = httpx.post(
                security_stack.url + "/v1/chat/completions",
                headers=user.bearer,
                timeout=300,
                json={
                    "model": "schulki-chat",
                    "max_tokens": 40,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": f"Erzähl eine lange Geschichte über Drachen Nummer {i}."}],
                },
            )
            return response.status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(chat, range(8)))
        used = security_stack.gateway.accounts.tokens_today(user.account.id)
        assert used <= 120, (used, statuses)
        assert statuses.count(429) >= 1 and statuses.count(200) >= 1, statuses
    finally:
        limits.clear()
        limits.update(saved)
