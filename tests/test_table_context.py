"""Tables in document questions: every chunk of a row names its row and columns, and the rows a question finds
reach the model as one Markdown table with the header once (a pure function, fed with real CSV and XLSX files
through the real parser and chunker)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from schulki.gateway.documents.question_context import build_context, is_numeric_question, markdown_table, table_row
from schulki.retrieval.chunking import chunk_document
from schulki.retrieval.parsing import parse_file
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

HEADER = ["Name", "Fach", "Note", "Bemerkung", "Punkte"]
LONG_REMARK = " ".join(f"Beobachtung {i}: arbeitet im Labor sorgfältig mit." for i in range(60))


def marks_csv() -> bytes:
    rows = [
        ["Anna", "Chemie", "2", "arbeitet gut mit", "14"],
        ["Ben", "Chemie", "3", LONG_REMARK, "9"],
        ["Carla", "Physik", "1", "", "15"],
        ["David", "Physik", "4", "Referat fehlt | nachholen", "7"],
    ]
    return "\n".join(";".join(r) for r in [HEADER, *rows]).encode()


def marks_xlsx() -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "7a"
    for row in (("Name", "Punkte", "Note"), ("Emil", 12, 2.0), ("Fatma", 15, 1.0), ("Greta", 6, 4.0)):
        sheet.append(row)
    other = book.create_sheet("7b")
    for row in (("Name", "Punkte", "Note"), ("Hasan", 11, 2.0), ("Ida", 3, 5.0)):
        other.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def chunks_of(folder: Path, name: str, data: bytes, chunk_chars: int = 1200) -> list:
    (folder / name).write_bytes(data)
    return chunk_document(parse_file(folder / name, name), chunk_chars, 200)


def hit(chunk, source: str, document_id: str = "d1") -> retrieval_pb.Hit:
    return retrieval_pb.Hit(
        text=chunk.text, source=source, page=chunk.page, section=chunk.section, document_id=document_id, chunk_index=chunk.index
    )


def cite(h) -> str:
    return f"{h.source}, S. {h.page}" if h.page else h.source


@pytest.mark.parametrize("chunk_chars", [1200, 300])
def test_every_chunk_of_a_table_row_names_its_row_and_its_columns(tmp_path, chunk_chars):
    chunks = chunks_of(tmp_path, "noten.csv", marks_csv(), chunk_chars)
    bens = [c for c in chunks if c.section == "noten / Zeile 3"]
    assert len(bens) >= 2  # the long remark does not fit one chunk
    for chunk in chunks:
        assert len(chunk.text) <= chunk_chars
        for line in chunk.text.split("\n"):
            column = line.split(": ", 1)[0].removesuffix(" (Forts.)")
            assert column in HEADER, (chunk.section, line)
    assert all(c.text.startswith("Name: Ben\n") for c in bens)  # every piece says whose row it is
    lines = [line for c in bens for line in c.text.split("\n") if line.startswith("Bemerkung")]
    words = " ".join(re.sub(r"^Bemerkung( \(Forts\.\))?: ", "", line) for line in lines)
    assert all(f"Beobachtung {i}:" in words for i in range(60))  # nothing of the cell is lost
    assert "Punkte: 9" in bens[-1].text


def test_xlsx_rows_keep_their_header_in_every_chunk(tmp_path):
    chunks = chunks_of(tmp_path, "punkte.xlsx", marks_xlsx())
    assert [c.section for c in chunks] == ["7a / Zeile 2", "7a / Zeile 3", "7a / Zeile 4", "7b / Zeile 2", "7b / Zeile 3"]
    assert all(c.text.startswith("Name: ") and "\nPunkte: " in c.text and "\nNote: " in c.text for c in chunks)


def test_rows_of_a_csv_reach_the_model_as_one_markdown_table_with_the_header_once(tmp_path):
    chunks = {c.section: c for c in chunks_of(tmp_path, "noten.csv", marks_csv())}
    passage = retrieval_pb.Hit(text="Die Noten werden am Freitag besprochen.", source="brief.pdf", page=2, document_id="d2")
    hits = [
        hit(chunks["noten / Zeile 5"], "noten.csv"),
        passage,
        hit(chunks["noten / Zeile 2"], "noten.csv"),
        hit(chunks["noten / Zeile 4"], "noten.csv"),
    ]
    context = build_context(hits, cite)
    table, rest = context.split("\n\n", 1)
    assert table.splitlines() == [
        "[noten.csv, Tabelle „noten“, Auszug, Zeilen 2, 4, 5]",
        "| Zeile | Name | Fach | Note | Bemerkung | Punkte |",
        "|---|---|---|---|---|---|",
        "| 2 | Anna | Chemie | 2 | arbeitet gut mit | 14 |",
        "| 4 | Carla | Physik | 1 |  | 15 |",  # an empty cell stays an empty cell, the columns stay in place
        "| 5 | David | Physik | 4 | Referat fehlt \\| nachholen | 7 |",
    ]
    assert rest == "[brief.pdf, S. 2]\nDie Noten werden am Freitag besprochen."
    assert "Name:" not in context  # no "Spalte: Wert" passages left


def test_the_pieces_of_a_long_row_become_one_row_again(tmp_path):
    chunks = [c for c in chunks_of(tmp_path, "noten.csv", marks_csv(), 300) if c.section == "noten / Zeile 3"]
    context = build_context([hit(c, "noten.csv") for c in reversed(chunks)], cite)
    rows = [line for line in context.splitlines() if line.startswith("| 3 |")]
    assert len(rows) == 1 and context.count("| Zeile |") == 1
    cells = [cell.strip() for cell in rows[0].strip("|").split(" | ")]
    assert cells[:4] == ["3", "Ben", "Chemie", "3"] and cells[-1] == "9"
    assert all(f"Beobachtung {i}:" in cells[4] for i in range(60))


def test_each_sheet_of_an_xlsx_is_its_own_table(tmp_path):
    chunks = chunks_of(tmp_path, "punkte.xlsx", marks_xlsx())
    context = build_context([hit(c, "punkte.xlsx") for c in chunks], cite, whole=frozenset({"d1"}))
    assert context.split("\n\n") == [
        "[punkte.xlsx, Tabelle „7a“, alle 3 Zeilen]\n"
        + markdown_table(
            ["Name", "Punkte", "Note"],
            [
                (2, {"Name": "Emil", "Punkte": "12", "Note": "2"}),
                (3, {"Name": "Fatma", "Punkte": "15", "Note": "1"}),
                (4, {"Name": "Greta", "Punkte": "6", "Note": "4"}),
            ],
        ),
        "[punkte.xlsx, Tabelle „7b“, alle 2 Zeilen]\n"
        + markdown_table(
            ["Name", "Punkte", "Note"],
            [(2, {"Name": "Hasan", "Punkte": "11", "Note": "2"}), (3, {"Name": "Ida", "Punkte": "3", "Note": "5"})],
        ),
    ]


def test_text_that_only_looks_like_a_row_stays_a_passage():
    odd = [
        retrieval_pb.Hit(text="Zeile 3 des Gedichts: Der Mond ist aufgegangen", source="gedicht.txt", section="Gedichte"),
        retrieval_pb.Hit(text="Name: Anna\nund ein zweiter Absatz", source="x.csv", section="x / Zeile 2"),
    ]
    assert [table_row(h) for h in odd] == [None, None]
    assert (
        build_context(odd, cite)
        == "[gedicht.txt]\nZeile 3 des Gedichts: Der Mond ist aufgegangen\n\n[x.csv]\nName: Anna\nund ein zweiter Absatz"
    )


@pytest.mark.parametrize(
    ("question", "counts"),
    [
        ("Wie viele Schüler haben eine 1?", True),
        ("Was ist der Durchschnitt der Punkte?", True),
        ("Wer hat die meisten Punkte?", True),
        ("Welche Note ist die schlechteste?", True),
        ("Wie hoch ist die Summe aller Punkte?", True),
        ("How many students are in 7b?", True),
        ("Was hat Ben in Chemie gemacht?", False),
        ("Was steht über Vulkane im Text?", False),
        ("Give me a summary of the letter.", False),
    ],
)
def test_counting_and_comparing_questions_are_told_apart(question, counts):
    assert is_numeric_question(question) is counts
