"""Upload size limits, enforced while the body streams in.

A body whose Content-Length is over the limit is refused with 413 before a
byte of it is read; a body without one (chunked) is counted as it arrives and
refused as soon as it passes the limit, so a 2 GB upload is never stored.
"""

from __future__ import annotations

import json


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """ASGI middleware: at most ``limit`` bytes of request body on the paths that take uploads."""

    def __init__(self, app, limit: int, prefixes: tuple[str, ...]):
        self.app = app
        self.limit = limit
        self.prefixes = prefixes

    async def _refuse(self, scope, send) -> None:
        message = f"The upload is larger than the limit of {self.limit // (1024 * 1024)} MiB."
        if scope["path"].startswith("/v1/"):
            body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": "file", "code": "request_too_large"}}).encode()
            media = b"application/json"
        else:
            body = ("Die Datei ist zu groß: höchstens %d MiB. (%s)" % (self.limit // (1024 * 1024), message)).encode()
            media = b"text/plain; charset=utf-8"
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", media), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not any(scope["path"].startswith(p) for p in self.prefixes):
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return await self._refuse(scope, send)
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, send)
