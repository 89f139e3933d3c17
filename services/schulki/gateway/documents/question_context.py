"""The context a document question's prompt carries: cited passages, and the rows of a table as one Markdown table.

Retrieval stores each row of a CSV, XLSX or HTML table as its own chunk,
"Spalte: Wert" per cell, with the section "Tabelle / Zeile N" (see
``schulki.retrieval.parsing.table``). Handed to the model one by one, four
such rows are four lists of the same column names, and a question such as
"Wer hat die meisten Punkte?" asks it to compare values spread over them.
So the hits that are rows of one table are put together into one Markdown
table with the header once and a column for the row number, in the place of
the table's best hit; every other hit stays a cited passage.

For a question that counts or compares (sum, average, largest, "wie viele"),
the rows a search finds are rarely all the rows that matter, so a table with
at most WHOLE_TABLE_ROWS rows is given whole (``whole_tables``), as long as
its Markdown stays under WHOLE_TABLE_CHARS; a larger table stays an excerpt,
and the prompt says which rows it holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schulki.retrieval.chunking import CONTINUED
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

ROW_SECTION = re.compile(r"^(?P<table>.+) / Zeile (?P<row>\d+)$")
"""The section retrieval gives a table row's chunk ("noten / Zeile 7")."""
CELL_LINE = re.compile(r"^(?P<column>[^\n:]{1,60}): (?P<value>.*)$")
"""One cell of a table row's chunk: "Spalte: Wert" (column names are cut to 60 characters when stored)."""

WHOLE_TABLE_ROWS = 200
"""Most rows (chunks) of a table that a counting or comparing question gets whole; a larger table stays an excerpt."""
WHOLE_TABLE_CHARS = 6000
"""Most characters of a whole table in the prompt (about 2,000 tokens, half of the default 4,096-token context)."""

# Words that ask to count, add up, average or compare (German first, English too); prefixes match inflected forms.
NUMERIC_QUESTION = re.compile(
    r"\b(summe|summier|addier|zusammen|insgesamt|gesamt|durchschnitt|schnitt|mittelwert|median|"
    r"h(ö|oe)chst|gr(ö|oe)(ß|ss)t|meiste|kleinst|niedrigst|geringst|wenigste|beste[nrs]?\b|schlechtest|maximum|minimum|"
    r"wie viele|wie viel|anzahl|zähl|rangfolge|sortier|vergleich|mehr als|weniger als|"
    r"sum\b|total|average|mean\b|largest|smallest|highest|lowest|most\b|least\b|how many|how much|count\b|more than|less than)",
    re.IGNORECASE,
)


def is_numeric_question(question: str) -> bool:
    """Whether a question counts, adds up, averages or compares (and so needs many rows of a table, not a few)."""
    return NUMERIC_QUESTION.search(question) is not None


@dataclass
class TableRow:
    """One row of a table as a hit holds it: the table's name, the row's number and its cells by column."""

    table: str
    number: int
    cells: dict[str, str]


def table_row(hit: Any) -> TableRow | None:
    """The row a hit holds when it is a row of a table (section "… / Zeile N", every line "Spalte: Wert"); else None."""
    match = ROW_SECTION.match(hit.section or "")
    if match is None:
        return None
    cells: dict[str, str] = {}
    for line in hit.text.split("\n"):
        if not line.strip():
            continue
        cell = CELL_LINE.match(line)
        if cell is None:  # a cell with a line break, or a piece of a long row: not safely a table row
            return None
        column, value = cell["column"].strip().removesuffix(CONTINUED.strip()).strip(), cell["value"].strip()
        cells[column] = f"{cells[column]} {value}" if column in cells else value  # a cell cut over chunks, put together
    return TableRow(match["table"], int(match["row"]), cells) if cells else None


@dataclass
class _Table:
    """The rows of one table among the hits, and whether they are all of its rows."""

    source: str
    name: str
    whole: bool = False
    pieces: list[tuple[int, int, TableRow]] = field(default_factory=list)
    """(row number, chunk index, row) per hit; a long row comes in several chunks, found in any order."""

    def rows(self) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
        """The columns, in the order the rows name them, and each row's cells, by row number."""
        columns: list[str] = []
        rows: dict[int, dict[str, str]] = {}
        for number, _index, row in sorted(self.pieces, key=lambda piece: piece[:2]):
            previous = -1
            for column in row.cells:
                if column in columns:
                    previous = columns.index(column)
                else:
                    previous += 1
                    columns.insert(previous, column)
            cells = rows.setdefault(number, {})
            for column, value in row.cells.items():  # the pieces of a cut cell in turn; a piece found twice once
                if column not in cells or cells[column] in value:
                    cells[column] = value
                elif value not in cells[column]:
                    cells[column] = f"{cells[column]} {value}"
        return columns, sorted(rows.items())


def _escape(value: str) -> str:
    """A cell's text made safe for one Markdown table cell."""
    return " ".join(value.split()).replace("\\", "\\\\").replace("|", "\\|")


def markdown_table(columns: Sequence[str], rows: Sequence[tuple[int, dict[str, str]]], row_label: str = "Zeile") -> str:
    """Rows as one Markdown table: the header once, then one line per row, its number first."""
    head = [row_label, *columns]
    lines = ["| " + " | ".join(_escape(c) for c in head) + " |", "|" + "---|" * len(head)]
    for number, cells in rows:
        lines.append("| " + " | ".join([str(number), *(_escape(cells.get(c, "")) for c in columns)]) + " |")
    return "\n".join(lines)


def _table_block(table: _Table) -> str:
    columns, rows = table.rows()
    which = f"alle {len(rows)} Zeilen" if table.whole else "Auszug, Zeilen " + ", ".join(str(number) for number, _ in rows)
    return f"[{table.source}, Tabelle „{table.name}“, {which}]\n{markdown_table(columns, rows)}"


def build_context(hits: Sequence[Any], cite: Callable[[Any], str], whole: frozenset[str] = frozenset()) -> str:
    """The hits as the prompt's context: each a cited passage, except the rows of a table, which become one Markdown table.

    A table stands where its first (best) hit stood. ``cite`` names a hit's
    source for the reader ("biologie.pdf, S. 2"); ``whole`` holds the
    document ids whose rows are all among the hits (said so in the prompt).
    """
    blocks: list[str | _Table] = []
    tables: dict[tuple[str, str, str], _Table] = {}
    for hit in hits:
        row = table_row(hit)
        if row is None:
            blocks.append(f"[{cite(hit)}]\n{hit.text}")
            continue
        key = (hit.document_id, hit.source, row.table)
        if key not in tables:
            tables[key] = _Table(hit.source, row.table, whole=hit.document_id in whole)
            blocks.append(tables[key])
        tables[key].pieces.append((row.number, hit.chunk_index, row))
    return "\n\n".join(block if isinstance(block, str) else _table_block(block) for block in blocks)


async def whole_tables(services: Any, workspace: str, question: str, hits: list[Any]) -> tuple[list[Any], frozenset[str]]:
    """For a counting or comparing question, the hits with every row of each small table among them.

    Returns the hits (each table's rows at the place of its best hit, in row
    order) and the ids of the documents now given whole. Other questions,
    and tables over WHOLE_TABLE_ROWS rows or WHOLE_TABLE_CHARS characters,
    keep the hits as they are.
    """
    if not is_numeric_question(question):
        return hits, frozenset()
    table_documents = list(dict.fromkeys(h.document_id for h in hits if table_row(h) is not None))
    if not table_documents:
        return hits, frozenset()
    sizes = {d.document_id: d.chunk_count for d in await services.list_documents(workspace)}
    expanded: dict[str, list[Any]] = {}
    for document_id in table_documents[:2]:  # at most two tables: each may fill half the context
        if not 0 < sizes.get(document_id, 0) <= WHOLE_TABLE_ROWS:
            continue
        exported = await services.export_document(workspace, document_id)
        rows = [
            retrieval_pb.Hit(
                text=c.text,
                source=exported.document.source,
                page=c.page,
                section=c.section,
                document_id=document_id,
                chunk_index=c.chunk_index,
            )
            for c in exported.chunks
        ]
        # Only a table and nothing else, and only when its Markdown fits (the stored text is longer: it repeats the header).
        if all(table_row(r) is not None for r in rows) and len(build_context(rows, lambda hit: hit.source)) <= WHOLE_TABLE_CHARS:
            expanded[document_id] = rows
    if not expanded:
        return hits, frozenset()
    result: list[Any] = []
    for hit in hits:
        if hit.document_id in expanded:
            if hit.document_id not in {r.document_id for r in result}:
                result += expanded[hit.document_id]  # the whole table once, where its best hit stood
            if table_row(hit) is None:
                result.append(hit)  # not a row (a paragraph beside an HTML table): kept as it was
        else:
            result.append(hit)
    return result, frozenset(expanded)
