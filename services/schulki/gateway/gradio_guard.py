"""The checks Gradio makes only when it launches itself, made by the gateway for every Gradio route.

The gateway mounts the Blocks into its own app (``gr.mount_gradio_app``), and
Gradio's own check of file paths in event data runs only after ``launch()``.
So this ASGI middleware, which every request to ``…/gradio_api/…`` passes,
checks them instead, whatever event or route the request is for; a new tab
cannot forget it, and a Gradio upgrade that moves its own checks cannot open
the hole again:

- every file in the data of an event (``/call/*``, ``/queue/join``, ``/run/*``,
  ``/api/*``, ``/stream/*``, ``/component_server``, ...) must be a plain file
  the same user uploaded (or was handed, like a transcript); paths on the
  server, devices, links and URLs are refused, with the same message whether
  the named file exists or not;
- a download (``/file=…``) is served only to the account the file belongs to;
- Gradio never fetches a URL for anyone: ``/file=http…`` and ``/proxy=…`` are
  refused, so nothing leaves the school through the gateway.

Uploads (``/upload``) are recorded as they are answered: the paths Gradio
returns belong to the account that uploaded them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

from schulki.gateway.context import Gateway
from schulki.gateway.file_owners import real_path

GRADIO_ROUTE = re.compile(r"/gradio_api/(.*)$")
NOT_YOURS = "Diese Datei gibt es nicht oder sie gehört nicht dir. (This file does not exist or is not yours.)"
NO_URLS = "schulki lädt keine Adressen aus dem Netz. (schulki does not fetch URLs.)"
NOT_JSON = "Die Anfrage muss JSON sein. (The request body must be JSON.)"


def is_url(value: str) -> bool:
    return bool(re.match(r"^\s*[a-zA-Z][a-zA-Z0-9+.-]*://", value)) or value.strip().startswith("//")


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def _cookies(scope) -> dict[str, str]:
    cookies = {}
    for part in _header(scope, b"cookie").split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            cookies[key] = value
    return cookies


async def refuse(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message, "error": message}, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GradioGuard:
    """ASGI middleware in front of the mounted Gradio apps (see the module's docstring)."""

    def __init__(self, app, gateway: Gateway):
        self.app = app
        self.gateway = gateway

    def _account(self, scope):
        return self.gateway.account_from_headers(_cookies(scope), _header(scope, b"authorization") or None)

    def may_read(self, account, path: str) -> bool:
        """Whether ``account`` may download or send the file at ``path``: an upload or output of its own."""
        resolved = real_path(path)
        if account is None or resolved is None:
            return False
        if self.gateway.file_owners.owns(resolved, account.id):
            return True
        own_folder = self.gateway.files_root / str(account.id)
        return Path(resolved).is_relative_to(own_folder)

    def check_files(self, data, account, host: str) -> None:
        """Raise Refused for any file in event data that is not the account's own upload, and for any URL."""
        if isinstance(data, list):
            for item in data:
                self.check_files(item, account, host)
            return
        if not isinstance(data, dict):
            return
        for key in ("url", "path"):
            value = data.get(key)
            if isinstance(value, str) and is_url(value) and urlsplit(value.strip()).netloc != host:
                raise Refused(403, NO_URLS)
        if "path" in data:
            path = data["path"]
            if not isinstance(path, str) or is_url(path) or not self.may_read(account, path):
                raise Refused(403, NOT_YOURS)
        for value in data.values():
            if isinstance(value, (dict, list)):
                self.check_files(value, account, host)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        match = GRADIO_ROUTE.search(scope["path"])
        if match is None:
            return await self.app(scope, receive, send)
        route = match.group(1)
        try:
            if route.startswith("proxy="):
                raise Refused(403, NO_URLS)
            if route.startswith(("file=", "file/")):
                target = route[5:]
                if is_url(target):
                    raise Refused(403, NO_URLS)
                if not self.may_read(self._account(scope), target):
                    raise Refused(404, NOT_YOURS)
                return await self.app(scope, receive, send)
            if scope["method"] != "POST":
                return await self.app(scope, receive, send)
            if route.rstrip("/") == "upload":
                return await self._record_upload(scope, receive, send)
            body = await self._read_body(receive)
            if body.strip():
                try:
                    data = json.loads(body)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise Refused(415, NOT_JSON) from None
                self.check_files(data, self._account(scope), _header(scope, b"host"))
        except Refused as refused:
            return await refuse(send, refused.status, refused.message)
        return await self.app(scope, self._replay(body, receive), send)

    @staticmethod
    async def _read_body(receive) -> bytes:
        # the body limit middleware in front of this one bounds how much arrives here
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "Die Verbindung brach ab. (The connection was closed.)")
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    def _replay(body: bytes, receive):
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _record_upload(self, scope, receive, send):
        """Pass the upload on, and note the paths Gradio answers with as the uploader's before the answer leaves."""
        account = self._account(scope)
        held: list[dict] = []
        status = 0

        async def holding_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                held.append(message)
                return
            if message["type"] != "http.response.body" or not held:
                return await send(message)
            held.append(message)
            if message.get("more_body", False):
                return
            if status == 200 and account is not None:
                try:
                    paths = json.loads(b"".join(m.get("body", b"") for m in held[1:]))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    paths = []
                for path in paths if isinstance(paths, list) else []:
                    if isinstance(path, str):
                        self.gateway.file_owners.add(path, account.id)
            for waiting in held:
                await send(waiting)
            held.clear()

        await self.app(scope, receive, holding_send)
