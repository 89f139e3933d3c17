"""Request body limits on every route, enforced while the body streams in, before anything parses it.

Upload routes may take ``gateway.max_upload_bytes``; every other route (the
JSON API under /v1, Gradio's call and queue routes, the login form) takes
``gateway.max_request_bytes``. A body whose Content-Length is over the limit
is refused with 413 before a byte of it is read; a body without one (chunked)
is counted as it arrives and refused as soon as it passes the limit, so a
2 GB upload is never stored and a 150 MiB JSON body is never parsed. A body
that stalls for ``gateway.body_idle_timeout_s`` is refused with 408, so slow
senders cannot hold a connection and its buffers for ever.

Headers are limited too: more than ``MAX_HEADERS`` of them or more than
``MAX_HEADER_BYTES`` in all is refused with 431. uvicorn's HTTP parser (h11)
only limits a header block that arrives in pieces; one that arrives whole in a
single read (up to 256 KiB) reached the app, 10,000 headers and all.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schulki.config import GatewayConfig
from schulki.gateway.api.errors import error_body

MIB = 1024 * 1024
MAX_HEADERS = 100  # Apache's LimitRequestFields; a browser sends about 20
MAX_HEADER_BYTES = 32 * 1024  # nginx allows 4 x 8 KiB; Gradio's and schulki's cookies stay far below


class BodyLimitMiddleware:
    """ASGI middleware: at most the route's limit of request body, arriving without long pauses."""

    def __init__(self, app: ASGIApp, config: GatewayConfig, upload_prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.config = config
        self.upload_prefixes = upload_prefixes

    def limit_for(self, path: str) -> int:
        is_upload = any(path.startswith(prefix) for prefix in self.upload_prefixes)
        return self.config.max_upload_bytes if is_upload else self.config.max_request_bytes

    async def _refuse(self, scope: Scope, send: Send, status: int, limit: int) -> None:
        is_upload = self.limit_for(scope["path"]) == self.config.max_upload_bytes and limit == self.config.max_upload_bytes
        mib = f"{limit / MIB:.0f}" if limit >= MIB else f"{limit / MIB:.2f}"
        if status == 408:
            german, english, code = "Die Anfrage kam zu langsam an.", "The request body arrived too slowly.", "request_timeout"
        elif is_upload:
            german, english, code = (
                f"Die Datei ist zu groß: höchstens {mib} MiB.",
                f"The upload is larger than the limit of {mib} MiB.",
                "request_too_large",
            )
        else:
            german, english, code = (
                f"Die Anfrage ist zu groß: höchstens {mib} MiB.",
                f"The request is larger than the limit of {mib} MiB.",
                "request_too_large",
            )
        if scope["path"].startswith("/v1/"):
            body = json.dumps(error_body(english, "invalid_request_error", "file" if is_upload else None, code)).encode()
            media = b"application/json"
        else:
            body = f"{german} ({english})".encode()
            media = b"text/plain; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", media), (b"content-length", str(len(body)).encode()), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def headers_too_large(scope: Scope) -> bool:
        headers = scope.get("headers", [])
        return len(headers) > MAX_HEADERS or sum(len(name) + len(value) + 4 for name, value in headers) > MAX_HEADER_BYTES

    async def _refuse_headers(self, send: Send) -> None:
        body = "Die Anfrage hat zu viele oder zu große Kopfzeilen. (Request header fields too large.)".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 431,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self.headers_too_large(scope):
            return await send({"type": "websocket.close", "code": 1009})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.headers_too_large(scope):
            return await self._refuse_headers(send)
        limit = self.limit_for(scope["path"])
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                return await self._refuse(scope, send, 413, limit)
        body = _CountedBody(self, scope, receive, send, limit)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if not body.answered:
                raise


class _CountedBody:
    """One request's body as the app reads it: counted against the limit, and given up on when it stalls."""

    def __init__(self, guard: BodyLimitMiddleware, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        self.guard, self.scope, self._receive, self._send, self.limit = guard, scope, receive, send, limit
        self.received = 0
        self.body_done = False
        self.started = False
        self.answered = False

    async def receive(self) -> Message:
        # Over the limit or stalled: answer at once, and tell the app the client is gone, so that
        # whatever reads the body (FastAPI, Gradio's multipart parser) stops without answering itself.
        if self.answered:
            return {"type": "http.disconnect"}
        if self.body_done:  # after the body only a disconnect can come, and it may come late
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), self.guard.config.body_idle_timeout_s)
        except TimeoutError:
            status = 408
        else:
            if message["type"] != "http.request":
                return message
            self.received += len(message.get("body", b""))
            self.body_done = not message.get("more_body", False)
            if self.received <= self.limit:
                return message
            status = 413
        if not self.started:
            await self.guard._refuse(self.scope, self._send, status, self.limit)
        self.answered = True
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.answered:  # the app's own answer to the "disconnect" goes nowhere
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
