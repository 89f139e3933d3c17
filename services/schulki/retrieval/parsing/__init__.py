"""Document parsing for ingest: one entry point from a file to a ParsedDocument.

``parse_file`` picks the parser from the file name's extension, checks the
file's content against it first (a ``.pdf`` that is no PDF is refused), and
returns the document's text as passages with their page or section. Each
format family has its own module: ``pdf``, ``office`` (DOCX, ODT, XLSX),
``ebook`` (EPUB), ``mail`` (EML, MBOX), ``table`` (CSV), ``web`` (HTML, and
``fetch_url`` for web pages) and ``text`` (TXT, Markdown).

Every failure is a SchulkiError whose message a student can read:
InvalidInput for an empty, corrupt, encrypted, text-less or mislabelled file,
TooLarge for a file that unpacks to more than the limits allow or yields
more text than ``max_chars``. Ingest runs ``parse_file`` in a separate
process with memory and time limits (``schulki.retrieval.parse_process``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from schulki.retrieval.documents import ParsedDocument
from schulki.retrieval.parsing.common import MAX_DOCUMENT_CHARS, NO_TEXT_MESSAGE, Progress, check_content, text_budget, too_much_text
from schulki.retrieval.parsing.web import fetch_url
from schulki.runtime.errors import InvalidInput

__all__ = ["NO_TEXT_MESSAGE", "SUPPORTED_EXTENSIONS", "fetch_url", "format_of", "parse_file"]

FORMATS: dict[str, str] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".odt": "odt",
    ".xlsx": "xlsx",
    ".epub": "epub",
    ".eml": "eml",
    ".mbox": "mbox",
    ".csv": "csv",
    ".html": "html",
    ".htm": "html",
    ".txt": "txt",
    ".md": "md",
    ".markdown": "md",
}
"""File name extension (lower case) to format name."""

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(FORMATS)
"""The extensions ingest accepts, lower case with their dot."""


def format_of(file_name: str) -> str:
    """The format for a file name, or InvalidInput naming the formats that are supported."""
    extension = Path(file_name).suffix.lower()
    if extension not in FORMATS:
        known = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        shown = extension or "(keine)"
        raise InvalidInput(f"Dateityp {shown} wird nicht unterstützt; möglich sind {known}. (unknown extension {shown})")
    return FORMATS[extension]


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
        document = _parse(path, file_name, kind, max_pages, report)
    if sum(len(p.text) for p in document.passages) > max_chars:
        raise too_much_text(max_chars)
    return _require_text(document)


def _parse(path: Path, file_name: str, kind: str, max_pages: int | None, report: Progress) -> ParsedDocument:
    if kind == "pdf":
        from schulki.retrieval.parsing.pdf import parse_pdf

        document = parse_pdf(path, max_pages=max_pages, progress=report)
    elif kind in ("docx", "odt", "xlsx"):
        from schulki.retrieval.parsing import office

        document = {"docx": office.parse_docx, "odt": office.parse_odt, "xlsx": office.parse_xlsx}[kind](path, report)
    elif kind == "epub":
        from schulki.retrieval.parsing.ebook import parse_epub

        document = parse_epub(path, report)
    elif kind in ("eml", "mbox"):
        from schulki.retrieval.parsing import mail

        document = (mail.parse_eml if kind == "eml" else mail.parse_mbox)(path, report)
    elif kind == "csv":
        from schulki.retrieval.parsing.table import parse_csv

        document = parse_csv(path, Path(file_name).stem, report)
    elif kind == "html":
        from schulki.retrieval.parsing.web import parse_html

        document = parse_html(path, report)
    else:
        from schulki.retrieval.parsing.text import parse_text

        document = parse_text(path, markdown=kind == "md", progress=report)
    return document


def _require_text(document: ParsedDocument) -> ParsedDocument:
    """Drop empty passages; a document with no text left is InvalidInput."""
    document.passages = [p for p in document.passages if p.text.strip()]
    if not document.passages:
        if document.format == "pdf":
            raise InvalidInput(NO_TEXT_MESSAGE)
        raise InvalidInput("Die Datei enthält keinen Text. (no text found)")
    return document
