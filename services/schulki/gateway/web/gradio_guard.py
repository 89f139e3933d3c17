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

- a session hash and an event id belong to the account that used them first
  (gradio_sessions): another account cannot read or change that session's
  state, listen to its events or cancel them, and ``/cancel`` needs a login.

Uploads (``/upload``) are answered by the gateway itself, into the uploader's
own folder, within a quota and a rate (gradio_uploads); the stored paths
belong to the account that uploaded them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schulki.gateway.accounts.database import Account
from schulki.gateway.context import Gateway
from schulki.gateway.web.file_owners import real_path
from schulki.gateway.web.gradio_sessions import Bindings, event_id_of, session_hash_of, starts_event
from schulki.gateway.web.gradio_uploads import UploadRefused, Uploads, user_upload_folder

GRADIO_ROUTE = re.compile(r"/gradio_api/(.*)$")
NOT_YOURS = "Diese Datei gibt es nicht oder sie gehört nicht dir. (This file does not exist or is not yours.)"
NO_URLS = "schulki lädt keine Adressen aus dem Netz. (schulki does not fetch URLs.)"
NOT_JSON = "Die Anfrage muss JSON sein. (The request body must be JSON.)"
LOG_IN = "Bitte melde dich an. (Please log in.)"
NOT_YOUR_SESSION = "Diese Sitzung gehört nicht dir. Lade die Seite neu. (This session is not yours; reload the page.)"
NOT_YOUR_EVENT = "Diese Anfrage gibt es nicht oder sie gehört nicht dir. (This event does not exist or is not yours.)"


def is_url(value: str) -> bool:
    return bool(re.match(r"^\s*[a-zA-Z][a-zA-Z0-9+.-]*://", value)) or value.strip().startswith("//")


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or []


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def _cookies(scope: Scope) -> dict[str, str]:
    cookies = {}
    for part in _header(scope, b"cookie").split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            cookies[key] = value
    return cookies


async def refuse(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": message, "error": message}, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GradioGuard:
    """ASGI middleware in front of the mounted Gradio apps (see the module's docstring)."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.sessions = Bindings()
        self.events = Bindings()
        self.uploads = Uploads(gateway.config.gateway)

    def _account(self, scope: Scope) -> Account | None:
        return self.gateway.account_from_headers(_cookies(scope), _header(scope, b"authorization") or None)

    def may_read(self, account: Account | None, path: str) -> bool:
        """Whether ``account`` may download or send the file at ``path``: an upload or output of its own."""
        resolved = real_path(path)
        if account is None or resolved is None:
            return False
        if self.gateway.file_owners.owns(resolved, account.id):
            return True
        own_folders = (self.gateway.files_root / str(account.id), user_upload_folder(account.id))
        return any(Path(resolved).is_relative_to(folder) for folder in own_folders)

    def check_files(self, data: object, account: Account | None, host: str) -> None:
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
                self.check_session(scope, route, None)
                return await self.app(scope, receive, send)
            if route.rstrip("/") == "upload":
                return await self._upload(scope, receive, send)
            body = await self._read_body(receive)
            account = self.check_body(scope, route, body)
        except Refused as refused:
            return await refuse(send, refused.status, refused.message, refused.headers)
        if account is not None and starts_event(route, scope["method"]):
            return await self._note_event(scope, self._replay(body, receive), send, account.id)
        return await self.app(scope, self._replay(body, receive), send)

    def check_body(self, scope: Scope, route: str, body: bytes) -> Account | None:
        """A POST's JSON body: no file of another user in it, and no session or event of another; its account."""
        data = None
        if body.strip():
            try:
                data = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise Refused(415, NOT_JSON) from None
            self.check_files(data, self._account(scope), _header(scope, b"host"))
        return self.check_session(scope, route, data)

    def check_session(self, scope: Scope, route: str, data: object) -> Account | None:
        """Refuse a request that names another account's session or event, and any of them without a login.

        Returns the logged-in account (None for a request that names neither and has no login)."""
        session_hash = session_hash_of(route, scope.get("query_string", b""), data)
        event_id = event_id_of(route, scope["method"], data)
        account = self._account(scope)
        if session_hash is None and event_id is None:
            return account
        if account is None:
            raise Refused(401, LOG_IN)
        if session_hash is not None and not self.sessions.claim(session_hash, account.id):
            raise Refused(403, NOT_YOUR_SESSION)
        # an event is only ever made by a request the guard saw: one it did not note is nobody's to act on
        if event_id is not None and self.events.owner(event_id) != account.id:
            raise Refused(404, NOT_YOUR_EVENT)
        return account

    async def _note_event(self, scope: Scope, receive: Receive, send: Send, account_id: int) -> None:
        """Pass a request that starts an event on, and note the event id Gradio answers with as the account's."""
        held: list[Message] = []

        async def noting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                held.append(message)
                return
            if message["type"] != "http.response.body" or not held:
                return await send(message)
            held.append(message)
            if message.get("more_body", False):
                return
            try:
                answer = json.loads(b"".join(m.get("body", b"") for m in held[1:]))
            except (json.JSONDecodeError, UnicodeDecodeError):
                answer = None
            if isinstance(answer, dict) and isinstance(answer.get("event_id"), str):
                self.events.claim(answer["event_id"], account_id)
            for waiting in held:
                await send(waiting)
            held.clear()

        await self.app(scope, receive, noting_send)

    @staticmethod
    async def _read_body(receive: Receive) -> bytes:
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
    def _replay(body: bytes, receive: Receive) -> Receive:
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Store the upload in the uploader's own folder, within quota and rate, and note the paths as the uploader's."""
        account = self._account(scope)
        if account is None:
            return await refuse(send, 401, LOG_IN)
        try:
            paths = await self.uploads.store(scope, receive, account.id)
        except UploadRefused as refused:
            headers = [(b"retry-after", str(refused.retry_after).encode())] if refused.retry_after else []
            return await refuse(send, refused.status, refused.message, headers)
        for path in paths:
            self.gateway.file_owners.add(path, account.id)
        body = json.dumps(paths).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
