"""The documents' Markdown set as PDF with fpdf2 (pure Python): headings, paragraphs with bold, lists and tables.

Only the Markdown that ``documents.py`` writes is understood. The PDF uses the built-in Helvetica, whose character
set is Latin-1: German letters are in it; the few other characters a setting might bring are replaced.
"""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

_REPLACEMENTS = str.maketrans(
    {"–": "-", "—": "-", "„": '"', "“": '"', "”": '"', "‚": "'", "‘": "'", "’": "'", "…": "...", "•": "-", "€": "EUR"}
)
LINE_MM = 5.5


def _latin(text: str) -> str:
    return text.translate(_REPLACEMENTS).encode("latin-1", "replace").decode("latin-1").replace("`", "")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


class _Document(FPDF):
    def __init__(self, title: str) -> None:
        super().__init__(format="A4")
        self.title_text = _latin(title)
        self.set_title(self.title_text)
        self.set_creator("schulki compliance")
        self.set_auto_page_break(auto=True, margin=18)
        self.add_page()

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("helvetica", size=8)
        self.cell(0, 6, f"{self.title_text} - Seite {self.page_no()}", align="C")


def _paragraph(pdf: FPDF, text: str, indent: float = 0) -> None:
    pdf.set_x(pdf.l_margin + indent)
    pdf.multi_cell(0, LINE_MM, _latin(text), markdown=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _table(pdf: FPDF, rows: list[list[str]]) -> None:
    pdf.set_font("helvetica", size=8)
    with pdf.table(text_align="LEFT", line_height=4.2, first_row_as_headings=True) as table:
        for cells in rows:
            row = table.row()
            for cell in cells:
                row.cell(_latin(cell))
    pdf.set_font("helvetica", size=10)
    pdf.ln(2)


class _Renderer:
    """Reads the Markdown line by line; a paragraph, a list item or a table is set once it ends."""

    def __init__(self, pdf: FPDF) -> None:
        self.pdf = pdf
        self.paragraph: list[str] = []
        self.bullet: list[str] = []  # a list item and its indented next lines
        self.table: list[list[str]] = []

    def flush(self) -> None:
        if self.bullet:
            _paragraph(self.pdf, "- " + " ".join(self.bullet), indent=3)
            self.bullet.clear()
        if self.paragraph:
            _paragraph(self.pdf, " ".join(self.paragraph))
            self.pdf.ln(1.5)
            self.paragraph.clear()
        if self.table:
            _table(self.pdf, self.table)
            self.table.clear()

    def heading(self, line: str) -> None:
        level = len(line) - len(line.lstrip("#"))
        self.pdf.set_font("helvetica", style="B", size={1: 15, 2: 12}.get(level, 11))
        self.pdf.ln(2)
        self.pdf.multi_cell(0, 7, _latin(line.lstrip("# ")), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.pdf.set_font("helvetica", size=10)
        self.pdf.ln(1)

    def line(self, line: str) -> None:
        stripped = line.strip()
        if stripped.startswith("|"):
            if self.paragraph or self.bullet:
                self.flush()
            if not set(stripped) <= set("|-: "):  # not the line under a table's head
                self.table.append(_cells(stripped))
            return
        if self.bullet and stripped and line.startswith("  "):
            self.bullet.append(stripped)
            return
        if self.table or self.bullet or not stripped or stripped.startswith(("#", "- ")):
            self.flush()
        if stripped.startswith("#"):
            self.heading(stripped)
        elif stripped.startswith("- "):
            self.bullet.append(stripped[2:])
        elif stripped:
            self.paragraph.append(stripped)


def write_pdf(markdown: str, title: str, path: Path) -> Path:
    """Set ``markdown`` as a PDF at ``path``."""
    pdf = _Document(title)
    pdf.set_font("helvetica", size=10)
    renderer = _Renderer(pdf)
    for line in markdown.splitlines():
        renderer.line(line)
    renderer.flush()
    pdf.output(str(path))
    return path
