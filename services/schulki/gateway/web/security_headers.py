"""Security headers on every answer of the gateway: a strict Content-Security-Policy, HSTS, nosniff, no referrer, no framing.

The CSP is the second wall behind safe_markup: should markup that loads
something from elsewhere still reach a page, the browser refuses to fetch it.
Images, media, fonts, connections and form targets are the gateway's own
(``'self'``). Only ``blob:`` is added, for media and connections: Gradio's audio
player loads a recording the user picked or just made from the browser's own
object URL (no request leaves the browser; without it the waveform and playback
break). Nothing on the page needed ``data:``, checked in Chromium across every
tab (tests/browser/test_page_safety_browser.py). No page may frame the gateway
(``frame-ancestors 'none'``, and ``X-Frame-Options: DENY`` for browsers without
CSP 2). ``Referrer-Policy: same-origin``, not ``no-referrer``: under
``no-referrer`` a browser sends ``Origin: null`` with the page's own POSTs, and
origin_guard rightly refuses those.

Gradio's page carries inline scripts (its config, with values that change per
page); the page (``/`` and ``/en/``, nothing else: an uploaded HTML file is
text/html too) is therefore read whole and its inline scripts are allowed by
their SHA-256 in that answer's own policy, never by ``'unsafe-inline'``. Styles need ``'unsafe-inline'``: Svelte and Gradio's
theme set style attributes and inline ``<style>`` elements at run time.
No ``'unsafe-eval'``: Gradio 6's gr.HTML evaluates its value with
``new Function`` and would need it, so the UI uses no gr.HTML (the header is
Markdown).

Plain ASGI, like request_ids: a streamed answer (server-sent events, files)
passes piece by piece; only the UI's page, small and never streamed, is held
until its last piece.
"""

from __future__ import annotations

import base64
import hashlib
import re

from schulki.gateway.web.request_ids import App, Message, Receive, Scope, Send

BASE_POLICY = (
    "default-src 'self'",
    "img-src 'self'",
    "media-src 'self' blob:",
    "font-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "connect-src 'self' blob:",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "frame-src 'none'",
    "object-src 'none'",
    "base-uri 'self'",
    "worker-src 'self'",
    "manifest-src 'self'",
)
STATIC_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
HSTS = (b"strict-transport-security", b"max-age=31536000")
REPLACED = {b"content-security-policy", b"strict-transport-security"} | {name for name, _ in STATIC_HEADERS}
# Only Gradio's own page gets its inline scripts allowed: an HTML file a user uploaded and opens through
# /gradio_api/file= is text/html too, and its scripts must not run with the user's login.
UI_PAGES = frozenset(("/", "/en", "/en/"))
INLINE_SCRIPT = re.compile(rb"<script\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)


def script_hashes(page: bytes) -> list[str]:
    """The CSP sources of the inline scripts of an HTML page: 'sha256-…' of each one's exact text."""
    found = []
    for body in INLINE_SCRIPT.findall(page):
        source = f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
        if source not in found:
            found.append(source)
    return found


def policy(inline_scripts: list[str]) -> bytes:
    return "; ".join((*BASE_POLICY, " ".join(["script-src 'self'", *inline_scripts]))).encode()


def _header(message: Message, name: bytes) -> bytes | None:
    return next((value for key, value in message.get("headers", []) if key.lower() == name), None)


class SecurityHeadersMiddleware:
    def __init__(self, app: App):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https"
        held: Message | None = None  # the start of an HTML answer, sent once its body is whole
        body = bytearray()

        def with_headers(message: Message, inline_scripts: list[str]) -> Message:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in REPLACED]
            headers += [*STATIC_HEADERS, (b"content-security-policy", policy(inline_scripts))]
            if secure:  # over plain HTTP a browser ignores it, and it would claim what the port does not do
                headers.append(HSTS)
            return {**message, "headers": headers}

        async def send_with_headers(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                content_type = _header(message, b"content-type") or b""
                if scope["path"] in UI_PAGES and content_type.startswith(b"text/html") and _header(message, b"content-encoding") is None:
                    held = message
                    return
                await send(with_headers(message, []))
            elif message["type"] == "http.response.body" and held is not None:
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                start, held = held, None
                await send(with_headers(start, script_hashes(bytes(body))))
                await send({"type": "http.response.body", "body": bytes(body)})
            else:
                await send(message)

        await self.app(scope, receive, send_with_headers)
