"""HTTPS for the gateway: which certificate it serves, and a port that only redirects plain HTTP.

The gateway serves HTTPS by default (``gateway.https``): passwords, prompts
and documents cross the school network, and browsers allow the microphone only
on an HTTPS page. The certificate is the one the admin or the roll-out gives
(``gateway.tls_cert_file``), else one made once under the data folder by a CA
of this machine's own (``schulki.certificates``).

Plain HTTP gets nothing but a redirect, from a tiny asyncio server of its own:
it reads one request head (bounded in size and time) and answers 308 to the
same path on the HTTPS port, so no page, cookie or API answer ever goes out
unencrypted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from schulki.config import Config

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8 * 1024
"""A request head larger than this gets no redirect: the connection is closed."""

HEAD_TIMEOUT_S = 10.0
"""A client that sends its request head slower than this is cut off (slow-loris)."""

_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253})(:\d{1,5})?$")
_PATH = re.compile(r"^/[\x21-\x7e]*$")


@dataclass
class HttpsFiles:
    """The certificate and key the gateway serves, and the CA certificate to trust when it made them itself."""

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None


def https_files(config: Config) -> HttpsFiles | None:
    """The files to serve HTTPS with, made under the data folder when none are configured; None when HTTPS is off."""
    gateway = config.gateway
    if not gateway.https:
        return None
    if gateway.tls_cert_file and gateway.tls_key_file:
        return HttpsFiles(gateway.tls_cert_file, gateway.tls_key_file)
    from schulki.certificates import ensure_local_https

    issued, ca_file = ensure_local_https(Path(config.data_dir), gateway.tls_names)
    if issued.changed:
        log.info("HTTPS certificate %s (%s)", issued.cert_file, issued.reason)
    return HttpsFiles(issued.cert_file, issued.key_file, ca_file)


def redirect_location(head: bytes, https_port: int, fallback_host: str) -> str:
    """Where a plain HTTP request goes: the same host and path on the HTTPS port."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    path = parts[1] if len(parts) == 3 and _PATH.match(parts[1]) else "/"
    host = fallback_host
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "host":
            match = _HOST.match(value.strip())
            if match:
                host = match[1]
            break
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{host}{port}{path}"


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, https_port: int, fallback_host: str) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        location = redirect_location(head, https_port, fallback_host)
        body = b"Bitte HTTPS verwenden (please use HTTPS).\n"
        writer.write(
            b"HTTP/1.1 308 Permanent Redirect\r\n"
            + f"Location: {location}\r\n".encode()
            + b"Content-Type: text/plain; charset=utf-8\r\n"
            + f"Content-Length: {len(body)}\r\n".encode()
            + b"Connection: close\r\n\r\n"
            + body
        )
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass  # a broken or oversized request gets no answer
    finally:
        writer.close()


async def start_redirect_server(host: str, port: int, https_port: int, fallback_host: str = "localhost") -> asyncio.Server:
    """Listen on port for plain HTTP and redirect every request to HTTPS."""
    return await asyncio.start_server(lambda r, w: _answer(r, w, https_port, fallback_host), host, port, limit=MAX_HEAD_BYTES)
