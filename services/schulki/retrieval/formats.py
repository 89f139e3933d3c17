"""The one table of document formats: extension -> format name -> parser -> label.

Ingest refuses an extension not in ``FORMATS`` before a byte is received, the
parser (``schulki.retrieval.parsing``) checks the content and calls the
format's parser, and the gateway's upload field offers ``EXTENSIONS``. To add
a format, add a row here and its parser function in one module of
``schulki/retrieval/parsing/`` (signature ``(path, job: ParseJob) ->
ParsedDocument``).

This module imports nothing beyond the standard library: the gateway reads it
without the parsers' libraries installed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileFormat:
    """One document format the retrieval service reads."""

    name: str
    """Short name, stored with each document (DocumentRecord.format)."""
    extensions: tuple[str, ...]
    """File name extensions, lower case with their dot; the first is the usual one."""
    parser: str
    """``module:function`` in ``schulki.retrieval.parsing``, imported only when a file of this format is parsed."""
    label: str
    """What a student calls it, in German ("Word-Dokument (DOCX)"), for messages."""
    content: str
    """How the bytes are checked before parsing: "pdf" (a %PDF- header), "zip" (a zip container), "text" (no NUL bytes)."""
    zip_member: str = ""
    """For a zip container: the member that tells this format apart from other zips."""


FORMATS: tuple[FileFormat, ...] = (
    FileFormat("pdf", (".pdf",), "pdf:parse_pdf", "PDF", "pdf"),
    FileFormat("docx", (".docx",), "office:parse_docx", "Word-Dokument (DOCX)", "zip", "word/document.xml"),
    FileFormat("odt", (".odt",), "office:parse_odt", "OpenDocument-Text (ODT)", "zip", "content.xml"),
    FileFormat("epub", (".epub",), "ebook:parse_epub", "E-Book (EPUB)", "zip", "META-INF/container.xml"),
    FileFormat("eml", (".eml",), "mail:parse_eml", "E-Mail (EML)", "text"),
    FileFormat("mbox", (".mbox",), "mail:parse_mbox", "Postfach (MBOX)", "text"),
    FileFormat("csv", (".csv",), "table:parse_csv", "CSV-Tabelle", "text"),
    FileFormat("xlsx", (".xlsx",), "office:parse_xlsx", "Excel-Tabelle (XLSX)", "zip", "xl/workbook.xml"),
    FileFormat("html", (".html", ".htm"), "web:parse_html", "Webseite (HTML)", "text"),
    FileFormat("txt", (".txt",), "text:parse_plain", "Textdatei", "text"),
    FileFormat("md", (".md", ".markdown"), "text:parse_markdown", "Markdown-Datei", "text"),
    FileFormat("rst", (".rst",), "text:parse_rst", "reStructuredText-Datei", "text"),
)

BY_EXTENSION: dict[str, FileFormat] = {extension: f for f in FORMATS for extension in f.extensions}
"""File name extension (lower case, with its dot) to its format."""

BY_NAME: dict[str, FileFormat] = {f.name: f for f in FORMATS}

EXTENSIONS: tuple[str, ...] = tuple(BY_EXTENSION)
"""Every extension ingest accepts, in the table's order (the upload field's list)."""
