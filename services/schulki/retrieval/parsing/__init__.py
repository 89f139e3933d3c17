"""Document parsing for ingest: one entry point from a file to a ParsedDocument.

``parse_file`` picks the format from the file name's extension in the one
table of formats (``schulki.retrieval.formats``), checks the file's content
against it first (a ``.pdf`` that is no PDF is refused), calls the parser the
table names, and returns the document's text as passages with their page or
section. Each format family has its own module (``pdf``, ``office``,
``ebook``, ``mail``, ``table``, ``web`` with ``fetch_url`` for web pages,
``text``), and the table says which function of which module reads a format;
every parser function takes ``(path, job: ParseJob)``.

Every failure is a SchulkiError whose message a student can read:
InvalidInput for an empty, corrupt, encrypted, text-less or mislabelled file,
TooLarge for a file that unpacks to more than the limits allow or yields
more text than ``max_chars``. Ingest runs ``parse_file`` in a separate
process with memory and time limits (``schulki.retrieval.parse_process``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from schulki.retrieval.documents import ParsedDocument
from schulki.retrieval.formats import BY_EXTENSION, BY_NAME
from schulki.retrieval.parsing.common import (
    MAX_DOCUMENT_CHARS,
    NO_TEXT_MESSAGE,
    ParseJob,
    Progress,
    check_content,
    text_budget,
    too_much_text,
)
from schulki.runtime.errors import InvalidInput

if TYPE_CHECKING:
    from schulki.retrieval.parsing.web import fetch_url

Parser = Callable[[Path, ParseJob], ParsedDocument]

__all__ = ["NO_TEXT_MESSAGE", "SUPPORTED_EXTENSIONS", "fetch_url", "format_of", "parse_file"]

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(BY_EXTENSION)
"""The extensions ingest accepts, lower case with their dot (the table is ``schulki.retrieval.formats``)."""


def format_of(file_name: str) -> str:
    """The format for a file name, or InvalidInput naming the formats that are supported."""
    extension = Path(file_name).suffix.lower()
    if extension not in BY_EXTENSION:
        known = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        shown = extension or "(keine)"
        raise InvalidInput(f"Dateityp {shown} wird nicht unterstützt; möglich sind {known}. (unknown extension {shown})")
    return BY_EXTENSION[extension].name


def parse_file(
    path: Path,
    file_name: str,
    *,
    max_pages: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_chars: int = MAX_DOCUMENT_CHARS,
) -> ParsedDocument:
    """Parse the file at ``path`` as the format its ``file_name`` names.

    ``file_name`` is the name the user gave (the upload's name); ``path`` is
    where its bytes are now. The content is checked against the extension
    before any parser sees it. ``max_pages`` refuses (TooLarge) a PDF with
    more pages. ``progress(done, total)`` is called after each page (PDF),
    chapter (EPUB), mail (MBOX) or sheet (XLSX), and once at the end for
    formats without such units, so ingest can show a bar. ``max_chars``
    bounds the text the document may yield; tables are stopped while they
    are read, other formats once parsed.

    Raises InvalidInput for an empty file, an unknown or wrong extension, a
    corrupt or password-protected file, or a file without any text
    (NO_TEXT_MESSAGE for a PDF without a text layer); TooLarge when a
    packed format unpacks to too much, a PDF has more than max_pages pages or
    the text is longer than max_chars.
    """
    kind = format_of(file_name)
    report: Progress = progress or (lambda done, total: None)
    check_content(path, kind)
    with text_budget(max_chars):
        module, function = BY_NAME[kind].parser.split(":")
        parser: Parser = getattr(importlib.import_module(f"schulki.retrieval.parsing.{module}"), function)
        document = parser(path, ParseJob(file_name, report, max_pages))
        document.format = kind
    if sum(len(p.text) for p in document.passages) > max_chars:
        raise too_much_text(max_chars)
    return _require_text(document)


def _require_text(document: ParsedDocument) -> ParsedDocument:
    """Drop empty passages; a document with no text left is InvalidInput."""
    document.passages = [p for p in document.passages if p.text.strip()]
    if not document.passages:
        if document.format == "pdf":
            raise InvalidInput(NO_TEXT_MESSAGE)
        raise InvalidInput("Die Datei enthält keinen Text. (no text found)")
    return document


def __getattr__(name: str) -> object:
    """fetch_url on first use: it brings BeautifulSoup (0.2 s to import), which the parse process of a file never needs."""
    if name == "fetch_url":
        from schulki.retrieval.parsing.web import fetch_url

        return fetch_url
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
