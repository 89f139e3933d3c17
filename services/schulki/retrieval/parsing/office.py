"""Office documents: DOCX (python-docx), ODT (odfpy) and XLSX (openpyxl).

Headings become sections; a table row becomes one line with its header.
The zip container was checked for bombs before any of these open it.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import TYPE_CHECKING

from schulki.retrieval.documents import ParsedDocument, Passage
from schulki.retrieval.parsing.common import ParseJob, charge, clean, header_name
from schulki.retrieval.parsing.table import row_passages
from schulki.runtime.errors import InvalidInput, SchulkiError

if TYPE_CHECKING:
    from odf.element import Element  # odfpy ships no types: Element is Any to mypy

CORRUPT = "Die Datei ist beschädigt und lässt sich nicht lesen. (corrupt {kind} file)"
# Built-in heading styles are "Heading 1", "Title"; German Word names them "Überschrift 1", "Titel".
_HEADING_STYLE = re.compile(r"^(heading|überschrift|title|titel)\b", re.IGNORECASE)


def parse_docx(path: Path, job: ParseJob) -> ParsedDocument:
    """Paragraphs and tables of a DOCX in order; headings start sections."""
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(str(path))
        title = clean(document.core_properties.title or "")
        passages: list[Passage] = []
        section = ""
        for block in document.iter_inner_content():
            if isinstance(block, Paragraph):
                text = clean(block.text)
                style = block.style.name if block.style is not None else ""
                if text and _HEADING_STYLE.match(style or ""):
                    section = text
                    title = title or text
                elif text:
                    passages.append(Passage(text=text, section=section))
            elif isinstance(block, Table):
                rows = [[clean(cell.text) for cell in row.cells] for row in block.rows]
                passages += [Passage(text=t, section=section) for t in _table_lines(rows)]
    except (SchulkiError, MemoryError):  # our own refusals (too much text) and the memory limit are not damage
        raise
    except Exception:  # python-docx raises many kinds on a damaged file (KeyError, lxml errors, ...)
        raise InvalidInput(CORRUPT.format(kind="DOCX")) from None
    job.progress(1, 1)
    return ParsedDocument(format="docx", passages=passages, title=title)


def _table_lines(rows: list[list[str]]) -> list[str]:
    """A table in a text document as lines "Header: value; ..." (merged cells repeat, so drop repeats).

    Headers are cut to MAX_HEADER_CHARS and each line is charged to the text budget as it is made.
    """
    if not rows:
        return []
    header, lines = [header_name(c) for c in rows[0]], []
    for row in rows[1:]:
        cells, seen = [], set()
        for name, value in zip(header, row, strict=False):  # rows may be shorter or longer than the header row
            if value and (name, value) not in seen:
                seen.add((name, value))
                cells.append((name, value))
        if cells:
            line = "; ".join(f"{n}: {v}" if n else v for n, v in cells)
            charge(len(line))
            lines.append(line)
    if not lines:  # a one-row table: its cells are the text
        lines = ["; ".join(dict.fromkeys(c for c in header if c))]
    return lines


def parse_odt(path: Path, job: ParseJob) -> ParsedDocument:
    """Headings and paragraphs of an ODT in reading order; headings start sections."""
    from odf import dc, teletype
    from odf.namespaces import TEXTNS
    from odf.opendocument import load

    try:
        document = load(str(path))
        passages: list[Passage] = []
        section = ""
        heading, paragraph = (TEXTNS, "h"), (TEXTNS, "p")

        def walk(node: Element) -> None:
            nonlocal section
            for child in node.childNodes:
                qname = getattr(child, "qname", None)
                if qname == heading:
                    section = clean(teletype.extractText(child)) or section
                elif qname == paragraph:
                    line = clean(teletype.extractText(child))
                    if line:
                        passages.append(Passage(text=line, section=section))
                elif getattr(child, "childNodes", None):
                    walk(child)

        walk(document.text)
        title = ""
        for element in document.meta.getElementsByType(dc.Title):
            title = clean(teletype.extractText(element))
    except (SchulkiError, MemoryError):
        raise
    except Exception:  # odfpy raises parser and key errors of all kinds on a damaged file
        raise InvalidInput(CORRUPT.format(kind="ODT")) from None
    job.progress(1, 1)
    return ParsedDocument(format="odt", passages=passages, title=title or next((p.section for p in passages if p.section), ""))


def parse_xlsx(path: Path, job: ParseJob) -> ParsedDocument:
    """Each row of each sheet with its header; "sheet / Zeile N" is the section."""
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    except MemoryError:
        raise
    except Exception:  # openpyxl raises KeyError, InvalidFileException, XML errors, ...
        raise InvalidInput(CORRUPT.format(kind="XLSX")) from None
    passages: list[Passage] = []
    try:
        sheets = workbook.worksheets
        for done, sheet in enumerate(sheets, start=1):
            rows = ([_cell_text(v) for v in row] for row in sheet.iter_rows(values_only=True))
            passages += row_passages(sheet.title, rows)
            job.progress(done, len(sheets))
        title = clean(workbook.properties.title or "") if workbook.properties else ""
    except (SchulkiError, MemoryError):
        raise
    except Exception:
        raise InvalidInput(CORRUPT.format(kind="XLSX")) from None
    finally:
        workbook.close()
    return ParsedDocument(format="xlsx", passages=passages, title=title)


MAX_CELL_CHARS = 32_767
"""Excel's own limit for one cell; a longer one was not written by a spreadsheet, and is cut before it is cleaned."""


def _cell_text(value: object) -> str:
    """A cell's value as a German reader writes it (dates as 24.12.2026)."""
    if value is None:
        return ""
    if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
        value = value[:MAX_CELL_CHARS]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.datetime):
        return value.strftime("%d.%m.%Y %H:%M" if (value.hour, value.minute) != (0, 0) else "%d.%m.%Y")
    if isinstance(value, datetime.date):
        return value.strftime("%d.%m.%Y")
    if isinstance(value, datetime.time):
        return value.strftime("%H:%M")
    return clean(str(value))
