"""A small web site on this machine's loopback address for the web page tests: a page with a fact, and pages that must be refused."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FACT_PAGE = """<!DOCTYPE html>
<html lang="de"><head><meta charset="utf-8"><title>Der Quetzalberg</title></head>
<body>
<nav>Startseite | Erdkunde | Impressum</nav>
<main>
<h1>Der Quetzalberg auf Nebelholm</h1>
<p>Der Quetzalberg ist der einzige Vulkan der Insel Nebelholm. Er ist genau 2718 Meter hoch
und brach zuletzt im Jahr 1893 aus. Damals flohen alle 412 Bewohner der Insel mit Fischerbooten.</p>
<p>Heute wachsen an seinen Hängen Moose und Flechten.</p>
</main>
<footer>Erdkunde-Wiki der Schule</footer>
</body></html>
"""
"""A made-up fact that no model knows: an answer that has it read the page."""
FACT_QUESTION = "Wie hoch ist der Quetzalberg auf Nebelholm?"
BIG_PAGE_BYTES = 3 * 1024 * 1024
"""The body of /riesig, sent without Content-Length (chunked), so only counting the bytes read can stop it."""
LONG_PAGE = (
    b"<html><body><main>"
    + b"<p>Die Lava flie\xc3\x9ft langsam den Hang hinab, und die Asche f\xc3\xa4llt auf das Dorf.</p>\n" * 18_000
    + b"</main></body></html>"
)
"""About 1.5 MiB of text: under the tests' page limit of 2 MiB."""


class _Site(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        port = self.server.server_address[1]
        if self.path.startswith("/weiter"):  # /weiter?ziel=URL redirects there ("PORT" becomes this server's port)
            self.send_response(302)
            self.send_header("Location", self.path.split("ziel=", 1)[1].replace("PORT", str(port)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/riesig":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            piece = b"<p>" + b"Lava " * 13_000 + b"</p>\n"
            sent = 0
            try:
                while sent < BIG_PAGE_BYTES:
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    sent += len(piece)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the reader stopped early, as it should
                pass
            return
        routes = {
            "/erdkunde/quetzalberg": ("text/html; charset=utf-8", FACT_PAGE.encode()),
            "/viel-text": ("text/html; charset=utf-8", LONG_PAGE),
            "/bild.png": ("image/png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
            "/programm": ("application/octet-stream", b"MZ\x90\x00" + bytes(64)),
        }
        kind, body = routes.get(self.path, ("text/plain", b""))
        self.send_response(200 if self.path in routes else 404)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def web_site() -> Iterator[str]:
    """Serve the site on 127.0.0.1 and a free port; yields its base URL, http://127.0.0.1:PORT."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
