"""Tables: CSV files, and the rows of any sheet, each row with its header."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from schulki.retrieval.documents import ParsedDocument, Passage
from schulki.retrieval.parsing.common import ParseJob, charge, clean, header_name, read_text
from schulki.runtime.errors import InvalidInput

MAX_FIELD_CHARS = 1024 * 1024


def row_passages(sheet: str, rows: Iterable[list[str]]) -> list[Passage]:
    """One passage per row, "Header: value" per cell, with "sheet / Zeile N" as the section.

    The first row with any content is the header. N is the row's number as
    a spreadsheet shows it (the header is the first counted row). Headers are
    cut to MAX_HEADER_CHARS, and every row is charged to the document's text
    budget as it is made, so a wide header cannot multiply the text unbounded.
    """
    passages: list[Passage] = []
    header: list[str] | None = None
    for number, row in enumerate(rows, start=1):
        cells = [clean(c) for c in row]
        if not any(cells):
            continue
        if header is None:
            header = [header_name(c) for c in cells]
            continue
        parts = []
        for i, value in enumerate(cells):
            if not value:
                continue
            name = header[i] if i < len(header) and header[i] else f"Spalte {i + 1}"
            charge(len(name) + len(value) + 3)  # per cell: one row of huge cells is stopped before it is joined
            parts.append(f"{name}: {value}")
        text = "\n".join(parts)
        passages.append(Passage(text=text, section=f"{sheet} / Zeile {number}", table_row=True))
    if header is not None and not passages:  # a table of one row: the row itself is the content
        passages.append(Passage(text="\n".join(c for c in header if c), section=f"{sheet} / Zeile 1"))
    return passages


def parse_csv(path: Path, job: ParseJob) -> ParsedDocument:
    """Rows of a CSV file (comma, semicolon or tab separated, as German Excel writes them); the file's name is the sheet's."""
    sheet = Path(job.file_name).stem
    text = read_text(path)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        rows = list(csv.reader(io.StringIO(text), dialect))
    except csv.Error as error:
        raise InvalidInput(f"Die CSV-Datei ist fehlerhaft: {error}. (malformed CSV)") from None
    passages = row_passages(sheet, rows)
    job.progress(1, 1)
    return ParsedDocument(format="csv", passages=passages, title=sheet)
