"""What every parser shares: the content check against the extension, zip-bomb limits, text decoding."""

from __future__ import annotations

import contextlib
import contextvars
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from schulki.retrieval.formats import BY_NAME
from schulki.runtime.errors import InvalidInput, TooLarge

Progress = Callable[[int, int], None]
"""progress(done, total), called as pages, chapters, mails or sheets are parsed."""

NO_TEXT_MESSAGE = "Kein Text gefunden – ist das ein Scan? (no text found, scanned?)"
"""The message for a PDF without a text layer."""

MAX_UNPACKED_BYTES = 256 * 1024 * 1024
"""Most bytes a DOCX, ODT, XLSX or EPUB may unpack to, all members together."""
MAX_MEMBER_RATIO = 100
"""Highest compression ratio of one member; ordinary office XML stays far below (about 5 to 20)."""
RATIO_CHECK_FROM_BYTES = 1024 * 1024
"""Members smaller than this unpacked are harmless whatever their ratio."""
MAX_MEMBERS = 10_000
"""Most members in one archive."""

MAX_HEADER_CHARS = 60
"""Most characters of a column header put before each of its cells; a longer header is cut with "…".
Without this bound a wide header repeated in every row turns a 3 MB CSV into hundreds of millions of characters."""
MAX_DOCUMENT_CHARS = 5_000_000
"""Most characters of text one document may yield when parse_file is given no other limit (about 2,500 book pages)."""


@dataclass(frozen=True)
class ParseJob:
    """What a parser gets besides the file's bytes: the name the user gave it, its limits, and where its progress goes."""

    file_name: str
    progress: Progress
    max_pages: int | None = None
    """Most pages of a PDF; more is TooLarge."""


def wrong_extension(kind: str, detail: str) -> InvalidInput:
    """The error for a file whose content does not match its extension."""
    return InvalidInput(
        f"Die Datei ist kein {BY_NAME[kind].label}, obwohl ihr Name das sagt; prüfe die Dateiendung. (wrong extension: {detail})"
    )


def check_content(path: Path, kind: str) -> None:
    """Refuse an empty file or one whose content is not the format its extension names."""
    size = path.stat().st_size
    if size == 0:
        raise InvalidInput("Die Datei ist leer. (empty file)")
    with path.open("rb") as f:
        head = f.read(4096)
    content = BY_NAME[kind].content
    if content == "pdf":
        # The PDF header may follow a little junk; readers look in the first 1024 bytes.
        if b"%PDF-" not in head[:1024]:
            raise wrong_extension(kind, "no %PDF- header")
    elif content == "zip":
        if not head.startswith(b"PK\x03\x04"):
            raise wrong_extension(kind, "not a zip container")
        check_zip(path, kind)
    elif content == "text":
        if b"\x00" in head:
            raise wrong_extension(kind, "binary content")
        text = decode_text(head, final=False)
        if kind == "mbox" and not text.lstrip("\ufeff").startswith("From "):
            raise wrong_extension(kind, "no 'From ' line at the start")
        if kind == "eml" and not _looks_like_mail_header(text):
            raise wrong_extension(kind, "no mail header")


def _looks_like_mail_header(text: str) -> bool:
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    if first.startswith("From "):  # Thunderbird saves single mails with their mbox "From " line
        return True
    name, colon, _ = first.partition(":")
    return bool(colon) and bool(name) and " " not in name.strip()


_ODF_MIMETYPE = b"application/vnd.oasis.opendocument.text"


def check_zip(path: Path, kind: str) -> None:
    """Check a zip container's directory before any parser unpacks it.

    A zip bomb declares a huge uncompressed size (or ratio) in its central
    directory; we read only that directory. A member that lies about its size
    fails its CRC check when unpacked, and zipfile stops at the declared size.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            names = {m.filename for m in members}
            if len(members) > MAX_MEMBERS:
                raise TooLarge(f"Das Archiv hat zu viele Teile ({len(members)}; höchstens {MAX_MEMBERS}). (too many zip members)")
            total = 0
            for member in members:
                total += member.file_size
                if member.file_size >= RATIO_CHECK_FROM_BYTES and member.file_size > MAX_MEMBER_RATIO * max(member.compress_size, 1):
                    raise InvalidInput(
                        "Die Datei ist auffällig stark gepackt und wird aus Sicherheitsgründen nicht geöffnet. "
                        f"(zip bomb suspected: a member packs {member.file_size} bytes into {member.compress_size})"
                    )
            if total > MAX_UNPACKED_BYTES:
                raise TooLarge(
                    f"Die Datei entpackt sich zu {total // (1024 * 1024)} MiB; erlaubt sind {MAX_UNPACKED_BYTES // (1024 * 1024)} MiB. "
                    "(unpacked size over the limit)"
                )
            marker = BY_NAME[kind].zip_member
            if marker and marker not in names:
                raise wrong_extension(kind, f"zip without {marker}")
            if kind == "odt" and "mimetype" in names and archive.read("mimetype").strip() != _ODF_MIMETYPE:
                raise wrong_extension(kind, "OpenDocument of another kind")
    except zipfile.BadZipFile:
        raise InvalidInput("Die Datei ist beschädigt und lässt sich nicht öffnen. (corrupt zip container)") from None


def decode_text(data: bytes, final: bool = True) -> str:
    """Bytes to text: UTF-8 (with or without BOM), else Windows-1252, which German files often are."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        # A cut in the middle of a multi-byte character at the end of a head is still UTF-8.
        if not final and error.start >= len(data) - 3:
            try:
                return data[: error.start].decode("utf-8-sig")
            except UnicodeDecodeError:
                pass
    return data.decode("cp1252", errors="replace")


def read_text(path: Path) -> str:
    """A text file's content, decoded as decode_text does, with line ends made plain."""
    return decode_text(path.read_bytes()).replace("\r\n", "\n").replace("\r", "\n")


def clean(text: str) -> str:
    """Collapse runs of spaces and tabs, trim each line, keep paragraph breaks."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


class TextBudget:
    """Counts the characters a parser produces and stops it, with TooLarge, once they pass the limit.

    The check runs while the text is being made, not afterwards, so a file that
    expands a thousandfold is stopped before it fills the memory.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def charge(self, chars: int) -> None:
        self.used += chars
        if self.used > self.limit:
            raise too_much_text(self.limit)


def too_much_text(limit: int) -> TooLarge:
    return TooLarge(
        f"Die Datei enthält zu viel Text: höchstens {limit:,} Zeichen pro Dokument; bitte teile sie auf. "
        f"(the extracted text is over {limit} characters)".replace(",", ".")
    )


_budget: contextvars.ContextVar[TextBudget | None] = contextvars.ContextVar("text_budget", default=None)


@contextlib.contextmanager
def text_budget(limit: int) -> Iterator[TextBudget]:
    """The budget that ``charge`` draws from while one document is parsed."""
    budget = TextBudget(limit)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def charge(chars: int) -> None:
    """Count text a parser made against the current document's budget (nothing when none is set)."""
    budget = _budget.get()
    if budget is not None:
        budget.charge(chars)


def header_name(text: str) -> str:
    """A column header as it is put before each cell: at most MAX_HEADER_CHARS characters."""
    return text if len(text) <= MAX_HEADER_CHARS else text[: MAX_HEADER_CHARS - 1].rstrip() + "…"
