"""Web pages: the main text of an HTML file, and fetching a URL without reaching into the school's network.

``fetch_url`` resolves the host itself, refuses it when any address is
loopback, private, link-local, multicast, reserved or otherwise not public
(``url_addresses.is_public_address``; unless an admin allowed the host on this
port), and then connects to exactly the address it checked, so a second DNS
answer cannot slip in a private one. Redirects are followed by hand, and every
hop is checked again. Every failed connection gets the same message.
"""

from __future__ import annotations

import http.client
import logging
import posixpath
import socket
import ssl
import time
import urllib.parse
import warnings
from pathlib import Path

from bs4 import BeautifulSoup, Comment, NavigableString, Tag, XMLParsedAsHTMLWarning

from schulki.retrieval.documents import ParsedDocument, Passage
from schulki.retrieval.formats import BY_EXTENSION
from schulki.retrieval.parsing.common import MAX_HEADER_CHARS, ParseJob, clean, decode_text
from schulki.retrieval.parsing.table import row_passages
from schulki.retrieval.url_addresses import allowed_ports, is_public_address
from schulki.runtime.errors import InvalidInput, PermissionDenied, TooLarge

log = logging.getLogger("schulki.retrieval")

UNREACHABLE = "Die Seite {host} ist nicht erreichbar. (fetch failed: no web page could be fetched there)"
"""The one message for every connection that failed (refused, no answer, not HTTP, TLS)."""

MAX_REDIRECTS = 5
DOWNLOAD_TIMEOUTS = 4
"""A whole download may take this many times the per-read timeout."""
USER_AGENT = "schulki-retrieval/0.1 (document ingest)"

# Boilerplate that is not the page's content.
_DROP = {
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "footer",
    "header",
    "aside",
    "form",
    "iframe",
    "svg",
    "button",
    "select",
    "object",
    "embed",
    "canvas",
    "dialog",
    "menu",
}
_DROP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar", "dialog"}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_BLOCKS = {
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "br",
    "hr",
    "tr",
    "table",
    "section",
    "article",
    "main",
    "pre",
    "blockquote",
    "figure",
    "figcaption",
    "address",
    "details",
    "summary",
    "body",
    "caption",
    "td",
    "th",
}


def parse_html(path: Path, job: ParseJob) -> ParsedDocument:
    """The main text of an HTML file, with its headings as sections."""
    document = html_to_document(decode_html(path.read_bytes()))
    job.progress(1, 1)
    return document


def decode_html(data: bytes) -> str:
    """HTML bytes to text, honouring a declared charset before guessing."""
    from bs4.dammit import EncodingDetector

    for encoding in EncodingDetector(data, known_definite_encodings=["utf-8"]).encodings:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return decode_text(data)


def html_to_document(html: str) -> ParsedDocument:
    """Parse HTML and keep the main text: no navigation, scripts, styles, headers or footers."""
    with warnings.catch_warnings():
        # EPUB chapters are XHTML; the HTML parser reads them well and need not say so.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(html, "lxml")
    title = clean(soup.title.get_text(" ")) if soup.title else ""
    # Boilerplate is found first and removed after: asking a tag whether it was decomposed already makes
    # BeautifulSoup search its whole subtree, which took minutes on a page of a few thousand nested elements.
    dropped: set[int] = set()
    doomed = []
    for tag in soup.find_all(True):
        if id(tag.parent) in dropped:
            dropped.add(id(tag))  # inside boilerplate that goes anyway
            continue
        if tag.name == "header" and tag.find_parent(["article", "main"]) is not None:
            continue  # an article's own header holds its title
        if tag.name in _DROP or tag.get("role") in _DROP_ROLES or tag.get("aria-hidden") == "true" or tag.has_attr("hidden"):
            dropped.add(id(tag))
            doomed.append(tag)
    for tag in doomed:
        tag.decompose()
    root = soup.find("main") or soup.find(role="main") or soup.find("article") or soup.body or soup
    walker = _Walker()
    walker.walk(root)
    walker.flush()
    if not title:
        first = next((p.section for p in walker.passages if p.section), "")
        title = first
    return ParsedDocument(format="html", passages=walker.passages, title=title)


def html_to_text(html: str) -> str:
    """The main text of an HTML fragment as plain paragraphs (for HTML mail bodies)."""
    document = html_to_document(html)
    return "\n\n".join(p.text for p in document.passages)


MAX_TABLE_COLUMNS = 1000
"""Most columns one HTML table row is read with, colspan included (HTML itself caps colspan at 1000)."""


def table_rows(table: Tag) -> list[list[str]]:
    """The rows of one table (not of tables nested in it), each cell's text repeated over its colspan."""
    rows = []
    for row in table.find_all("tr"):
        if row.find_parent("table") is not table:
            continue
        cells: list[str] = []
        for cell in row.find_all(["th", "td"], recursive=False):
            try:
                span = int(str(cell.get("colspan", "1")).strip() or 1)
            except ValueError:
                span = 1
            text = clean(cell.get_text(" "))
            cells.extend([text] * max(1, min(span, MAX_TABLE_COLUMNS - len(cells))))
            if len(cells) >= MAX_TABLE_COLUMNS:
                break
        rows.append(cells)
    return rows


def has_header(table: Tag, rows: list[list[str]]) -> bool:
    """Whether a table holds data under a header row, rather than laying out a page.

    A header is marked (thead, or a first row of th), or the first row's cells are all short labels
    over a grid of at least two rows and two columns. A layout table (one row, one
    column, long text in the first row) is read as paragraphs, as before.
    """
    filled = [r for r in rows if any(r)]
    if len(filled) < 2 or max(len(r) for r in filled) < 2:
        return False
    if any(head.find_parent("table") is table for head in table.find_all("thead")):
        return True
    first = next((row for row in table.find_all("tr") if row.find_parent("table") is table), None)
    cells = first.find_all(["th", "td"], recursive=False) if first is not None else []
    if cells and all(cell.name == "th" for cell in cells):
        return True
    return all(len(c) <= MAX_HEADER_CHARS for c in filled[0])


class _Walker:
    """Collects paragraphs in reading order; headings start a new section; a data table gives one passage per row."""

    def __init__(self) -> None:
        self.passages: list[Passage] = []
        self.section = ""
        self.buffer: list[str] = []

    def flush(self) -> None:
        text = clean(" ".join(self.buffer))
        self.buffer = []
        if text:
            self.passages.append(Passage(text=text, section=self.section))

    def walk(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                self.buffer.append(str(child))
            elif isinstance(child, Tag):
                if child.name in _HEADINGS:
                    self.flush()
                    self.section = clean(child.get_text(" "))
                elif child.name == "table" and has_header(child, rows := table_rows(child)):
                    # Every row with the header, "Spalte: Wert" per cell as in a CSV, so a chunk of
                    # the table still says what its numbers are; the caption or heading names it.
                    self.flush()
                    caption = child.find("caption")
                    name = (clean(caption.get_text(" ")) if caption else "") or self.section or "Tabelle"
                    self.passages.extend(row_passages(name, rows))
                elif child.name in _BLOCKS:
                    self.flush()
                    self.walk(child)
                    self.flush()
                else:
                    self.walk(child)


# --- fetching -------------------------------------------------------------------------------------

_FILE_NAMES = {
    "text/html": "page.html",
    "application/xhtml+xml": "page.html",
    "text/plain": "page.txt",
    "text/markdown": "page.md",
    "text/csv": "table.csv",
    "application/pdf": "document.pdf",
    "application/epub+zip": "book.epub",
    "message/rfc822": "mail.eml",
}


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise InvalidInput(f"Der Rechner {host} ist unbekannt. (cannot resolve host)") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _checked_address(host: str, port: int, allowed_hosts: list[str]) -> str:
    """An address of host to connect to; PermissionDenied when any of its addresses is not public,
    unless an admin allowed this host on this port (``url_addresses.allowed_ports``)."""
    addresses = _resolve(host, port)
    if port not in allowed_ports(host, allowed_hosts):
        blocked = [a for a in addresses if not is_public_address(a)]
        if blocked:
            raise PermissionDenied(
                f"Adressen im Schulnetz oder auf diesem Rechner dürfen nicht abgerufen werden ({host}); "
                "eine Administratorin kann den Rechner freigeben. (private, loopback or link-local address refused)"
            )
    return addresses[0]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed address, with the certificate checked against the host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a fixed address, with the host name in the Host header."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def fetch_url(url: str, allowed_hosts: list[str], max_bytes: int, timeout: float = 15) -> tuple[bytes, str]:
    """Fetch a web page or file; return its bytes and a file name such as "page.html".

    Only http and https. Every address the host resolves to must be public
    unless allowed_hosts names the host on this port (PermissionDenied otherwise); the
    same holds after each redirect (at most MAX_REDIRECTS). A body over
    max_bytes is TooLarge; a bad URL, an unreachable server, an error status
    or a content type no parser reads is InvalidInput.
    """
    # timeout bounds each network wait; the deadline bounds the whole download, so a server
    # that sends a byte now and then cannot hold an ingest for ever.
    deadline = time.monotonic() + DOWNLOAD_TIMEOUTS * timeout
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https"):
            raise InvalidInput(
                f"Nur http- und https-Adressen können abgerufen werden, nicht {parts.scheme or 'ohne Schema'}. (unsupported URL scheme)"
            )
        if not parts.hostname:
            raise InvalidInput("Die Adresse nennt keinen Rechner. (URL without host)")
        if parts.username or parts.password:
            raise InvalidInput("Adressen mit Benutzername oder Passwort werden nicht abgerufen. (credentials in URL)")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidInput("Die Adresse hat einen ungültigen Port. (invalid port)") from None
        host = parts.hostname
        address = _checked_address(host, port, allowed_hosts)
        connection_class = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        connection = connection_class(host, address, port, timeout)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        try:
            connection.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", "Accept": "*/*"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise InvalidInput(f"Die Seite leitet ohne Ziel weiter (HTTP {response.status}). (redirect without location)")
                url = urllib.parse.urljoin(url, location)
                continue
            if response.status != 200:
                raise InvalidInput(f"Die Seite antwortet mit HTTP {response.status} {response.reason}. (fetch failed)")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(max_bytes)
            body = _read_body(response, max_bytes, deadline)
            return body, _file_name(parts.path, response.getheader("Content-Type", ""))
        except (OSError, http.client.HTTPException) as error:
            # One message whatever failed: telling "refused" from "no answer" or "not HTTP" would let a
            # student map which ports of a host are open, closed or filtered. The log keeps the reason.
            log.info("fetching a web page failed: %s", type(error).__name__)
            raise InvalidInput(UNREACHABLE.format(host=host)) from None
        finally:
            connection.close()
    raise InvalidInput(f"Die Seite leitet zu oft weiter (mehr als {MAX_REDIRECTS}-mal). (too many redirects)")


def _read_body(response: http.client.HTTPResponse, max_bytes: int, deadline: float) -> bytes:
    """The response body, at most max_bytes, before the deadline."""
    pieces: list[bytes] = []
    size = 0
    while True:
        piece = response.read1(64 * 1024)
        if not piece:
            return b"".join(pieces)
        size += len(piece)
        if size > max_bytes:
            raise _too_large(max_bytes)
        if time.monotonic() > deadline:
            raise InvalidInput("Die Seite lädt zu langsam. (download too slow)")
        pieces.append(piece)


def _too_large(max_bytes: int) -> TooLarge:
    return TooLarge(
        f"Die Seite ist größer als {max_bytes // (1024 * 1024) or max_bytes} {'MiB' if max_bytes >= 1024 * 1024 else 'Bytes'}. (download over the size limit)"
    )


def _file_name(url_path: str, content_type: str) -> str:
    """A file name whose extension names the format: from the content type, else the URL's path."""
    mime = content_type.split(";", 1)[0].strip().lower()
    base = posixpath.basename(urllib.parse.unquote(url_path))
    extension = posixpath.splitext(base)[1].lower()
    if mime in _FILE_NAMES:
        wanted = posixpath.splitext(_FILE_NAMES[mime])[1]
        if extension == wanted or (wanted == ".html" and extension == ".htm"):
            return base
        return _FILE_NAMES[mime]
    if extension in BY_EXTENSION:  # the format table itself: the parsing package imports this module
        return base
    raise InvalidInput(
        f"Unter dieser Adresse liegt keine Webseite und kein Dokument, das gelesen werden kann ({mime or 'ohne Typ'}). "
        "(unsupported content type)"
    )
