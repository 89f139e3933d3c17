"""Only the gateway's own pages may act with a user's login: no credentialed requests from other origins.

Gradio reflects any ``Origin`` with ``Access-Control-Allow-Credentials`` when
the host is not localhost, so a page on another host or port could act as an
admin who visits it. This ASGI middleware, outside everything else:

- refuses state-changing requests (POST, PUT, PATCH, DELETE, and ``/logout``)
  and CORS preflights whose ``Origin`` is not the gateway's own (or one the
  admin listed in ``gateway.trusted_origins``), and, when a browser sends no
  ``Origin``, those it marks ``Sec-Fetch-Site: cross-site`` or ``same-site``
  (another host of the school's domain is another site for schulki);
- removes every ``Access-Control-Allow-*`` header from answers to other
  origins, so a browser never lets a foreign page read what it got.

``/v1`` is exempt from the refusal: it takes only ``Authorization: Bearer``,
never the login cookie, so a foreign page cannot use a user's login there.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schulki.config import GatewayConfig

SAFE_METHODS = {"GET", "HEAD"}
STATE_CHANGING_GETS = ("/logout",)
REFUSED = "Anfragen von fremden Seiten nimmt schulki nicht an. (Cross-origin requests are refused.)"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class OriginGuard:
    def __init__(self, app: ASGIApp, config: GatewayConfig) -> None:
        self.app = app
        self.config = config

    def foreign(self, scope: Scope) -> bool:
        """Whether the request comes from a page of another origin (as far as the browser tells)."""
        origin = _header(scope, b"origin")
        if origin is not None:
            if origin in self.config.trusted_origins:
                return False
            parts = urlsplit(origin)
            return origin == "null" or not parts.netloc or parts.netloc.lower() != (_header(scope, b"host") or "").lower()
        return _header(scope, b"sec-fetch-site") in ("cross-site", "same-site")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.foreign(scope):
            return await self.app(scope, receive, send)
        path = scope["path"]
        method = scope.get("method", "GET")
        changes_state = scope["type"] == "websocket" or method not in SAFE_METHODS or path in STATE_CHANGING_GETS
        if changes_state and not path.startswith("/v1/"):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            body = json.dumps({"detail": REFUSED, "error": REFUSED}, ensure_ascii=False).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            return await send({"type": "http.response.body", "body": body})

        async def without_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(
                    message, headers=[(k, v) for k, v in message.get("headers", []) if not k.lower().startswith(b"access-control-allow-")]
                )
            await send(message)

        await self.app(scope, receive, without_cors)
