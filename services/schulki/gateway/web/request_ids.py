"""Plain ASGI middleware for every request: its id, and the login page for visitors.

Both used to be ``@app.middleware("http")`` functions. Starlette runs such a
function through ``BaseHTTPMiddleware``, which passes every piece of a
streamed answer through an extra task and an in-memory stream. A chat answer
streams one event per token, so that cost came per token, twice, on the cores
the chat model decodes on. Written as plain ASGI, a piece goes straight
through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse

from schulki.runtime import logs

if TYPE_CHECKING:
    from schulki.gateway.context import Gateway

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

LANDING_PAGES = ("/", "/en", "/en/")


class RequestIdMiddleware:
    """One id per request, the caller's own when it sends a plain one: every service call it makes carries it
    (Services.metadata), so the lines it leaves in each service's log can be found together. The answer names it in
    ``x-request-id``."""

    def __init__(self, app: App):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((value.decode("latin-1") for key, value in scope.get("headers", []) if key == b"x-request-id"), None)
        request_id = logs.request_id_from(header)
        token = logs.request_id.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)


class LoginRedirectMiddleware:
    """A visitor who is not logged in and opens the UI's landing page is sent to the login page."""

    def __init__(self, app: App, gateway: Gateway):
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in LANDING_PAGES:
            request = Request(scope)
            if self.gateway.account_from_headers(request.cookies, request.headers.get("authorization")) is None:
                target = "/login?lang=en" if scope["path"].startswith("/en") else "/login"
                await RedirectResponse(target, status_code=303)(scope, receive, send)
                return
        await self.app(scope, receive, send)
