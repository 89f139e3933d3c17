"""A translated document as a file: plain text, Markdown or Word (.docx), with its headings as headings."""

from __future__ import annotations

import io
import re

from schulki.gateway.documents.whole_document import Block, to_markdown

FORMATS = {
    "txt": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
"""Download formats and their media types."""


def to_text(blocks: list[Block]) -> str:
    """Headings underlined, paragraphs separated by blank lines."""
    out = []
    for block in blocks:
        out.append(f"{block.text}\n{'=' * min(len(block.text), 72)}" if block.kind == "heading" else block.text)
    return "\n\n".join(out) + "\n"


def to_docx(blocks: list[Block], title: str = "") -> bytes:
    """A Word document: headings in the style "Heading 1", paragraphs as paragraphs."""
    import docx

    document = docx.Document()
    if title:
        document.core_properties.title = title
    for block in blocks:
        if block.kind == "heading":
            document.add_heading(block.text, level=1)
        else:
            document.add_paragraph(block.text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def export(blocks: list[Block], file_format: str, title: str = "") -> bytes:
    """The document in ``file_format`` (a key of FORMATS)."""
    if file_format == "docx":
        return to_docx(blocks, title)
    if file_format == "md":
        return (to_markdown(blocks) + "\n").encode()
    if file_format == "txt":
        return to_text(blocks).encode()
    raise ValueError(f"unknown format {file_format!r}")


def file_name(source: str, language: str, file_format: str) -> str:
    """A safe download name from the document's name: "Brief-fr.docx"."""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", source.rsplit("/", 1)[-1])
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._")[:60] or "dokument"
    return f"{stem}-{language}.{file_format}"
