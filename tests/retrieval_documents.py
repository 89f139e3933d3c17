"""Small real documents of every format ingest reads, made with the formats' own libraries.

Each sample carries one fact that a German (or English) question finds, and
says where that fact sits: the page (PDF) or the section (chapter, heading,
mail subject, table row) a search hit must cite.
"""

from __future__ import annotations

import io
import mailbox
import zipfile
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

FILLER = (
    "Dieser Absatz ist Fülltext, damit das Dokument mehr als einen Abschnitt hat. Er handelt von nichts Bestimmtem und wiederholt sich nur."
)


@dataclass
class Sample:
    """A document with the question that finds it and where the answer is."""

    file_name: str
    data: bytes
    question: str
    answer_words: tuple[str, ...]
    """Words the hit's text must contain."""
    page: int = 0
    section: str = ""
    """A part of the hit's section (the parser's exact label may add to it)."""


def pdf_bytes(pages: list[str], title: str = "Biologie") -> bytes:
    """A PDF with one page of text per entry, made with fpdf2 (its core fonts cover German umlauts)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title(title)
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def blank_pdf_bytes() -> bytes:
    """A PDF whose only page has a drawing and no text, like a scan without OCR."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 60, style="F")
    return bytes(pdf.output())


def encrypted_pdf_bytes() -> bytes:
    """A PDF that needs a password to open."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_encryption(owner_password="lehrer", user_password="geheim")
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, "Geheime Klassenarbeit: die Lösungen stehen hier.")
    return bytes(pdf.output())


def docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Einleitung", level=1)
    document.add_paragraph(FILLER)
    document.add_heading("Geographie", level=1)
    document.add_paragraph("Der Rhein ist etwa 1233 Kilometer lang und mündet in die Nordsee.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def odt_bytes() -> bytes:
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P

    document = OpenDocumentText()
    document.text.addElement(H(outlinelevel=1, text="Gebirge"))
    document.text.addElement(P(text="Die Zugspitze ist mit 2962 Metern der höchste Berg Deutschlands."))
    document.text.addElement(H(outlinelevel=1, text="Anhang"))
    document.text.addElement(P(text=FILLER))
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def epub_bytes() -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("schulki-mathe-1")
    book.set_title("Mathematik Klasse 6")
    book.set_language("de")
    chapters = [
        ("Kapitel 1: Teilbarkeit", f"<p>{FILLER}</p>"),
        ("Kapitel 2: Bruchrechnung", "<p>Beim Kürzen eines Bruchs teilt man Zähler und Nenner durch dieselbe Zahl.</p>"),
    ]
    items = []
    for i, (title, body) in enumerate(chapters, 1):
        item = epub.EpubHtml(title=title, file_name=f"kapitel{i}.xhtml", lang="de")
        item.content = f"<html><body><h1>{title}</h1>{body}</body></html>"
        book.add_item(item)
        items.append(item)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    out = io.BytesIO()
    epub.write_epub(out, book)
    return out.getvalue()


def _mail(subject: str, sender: str, body: str, date: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = "klasse7a@schule.example"
    message["Date"] = date
    message.set_content(body)
    return message


def eml_bytes() -> bytes:
    return _mail(
        "Wandertag am Freitag",
        "Frau Schulz <schulz@schule.example>",
        "Der Wandertag führt zum Bodensee. Treffpunkt ist um 8 Uhr am Bahnhof.",
        "Mon, 02 Mar 2026 09:00:00 +0100",
    ).as_bytes()


def mbox_bytes(folder: Path) -> bytes:
    path = folder / "postfach.mbox"
    box = mailbox.mbox(path)
    box.add(_mail("Mensa-Plan", "Mensa <mensa@schule.example>", FILLER, "Mon, 02 Mar 2026 08:00:00 +0100"))
    box.add(
        _mail(
            "Elternabend",
            "Herr Weber <weber@schule.example>",
            "Der Elternabend findet am 12. März um 19 Uhr in der Aula statt.",
            "Tue, 03 Mar 2026 10:00:00 +0100",
        )
    )
    box.flush()
    box.close()
    return path.read_bytes()


def csv_bytes() -> bytes:
    rows = ["Land;Hauptstadt;Einwohner", "Frankreich;Paris;68000000", "Portugal;Lissabon;10400000", "Polen;Warschau;36800000"]
    return ("\n".join(rows) + "\n").encode()


def xlsx_bytes() -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Elemente"
    for row in (("Element", "Symbol", "Ordnungszahl"), ("Wasserstoff", "H", 1), ("Eisen", "Fe", 26), ("Gold", "Au", 79)):
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


HTML_PAGE = """<!doctype html><html lang="de"><head><title>Geschichte</title></head><body>
<nav><a href="/">Startseite</a> <a href="/impressum">Impressum</a> Navigation Menü</nav>
<main><h1>Französische Revolution</h1>
<p>Die Französische Revolution begann 1789 mit dem Sturm auf die Bastille in Paris.</p></main>
<footer>Kontakt und Impressum der Schule</footer></body></html>"""

URL_PAGE = """<!doctype html><html lang="de"><head><title>Mathematik</title></head><body>
<nav>Startseite | Kurse | Login</nav>
<article><h1>Satz des Pythagoras</h1>
<p>Im rechtwinkligen Dreieck gilt der Satz des Pythagoras: die Summe der Kathetenquadrate ist gleich dem Hypotenusenquadrat.</p>
</article></body></html>"""


def samples(folder: Path) -> list[Sample]:
    """One sample per file format, each with its question."""
    return [
        Sample(
            "zellbiologie.pdf",
            pdf_bytes([FILLER, "Die Mitochondrien sind die Kraftwerke der Zelle.", FILLER]),
            "Was sind die Kraftwerke der Zelle?",
            ("Mitochondrien",),
            page=2,
        ),
        Sample("erdkunde.docx", docx_bytes(), "Wie lang ist der Rhein?", ("1233",), section="Geographie"),
        Sample("berge.odt", odt_bytes(), "Welcher ist der höchste Berg Deutschlands?", ("Zugspitze",), section="Gebirge"),
        Sample("mathe.epub", epub_bytes(), "Wie kürzt man einen Bruch?", ("Zähler", "Nenner"), section="Bruchrechnung"),
        Sample("wandertag.eml", eml_bytes(), "Wohin geht der Wandertag?", ("Bodensee",), section="Wandertag"),
        Sample("postfach.mbox", mbox_bytes(folder), "Wann ist der Elternabend?", ("Aula",), section="Elternabend"),
        Sample("hauptstaedte.csv", csv_bytes(), "Was ist die Hauptstadt von Portugal?", ("Lissabon",), section="Zeile 3"),
        Sample("elemente.xlsx", xlsx_bytes(), "Welche Ordnungszahl hat Eisen?", ("26",), section="Zeile 3"),
        Sample("revolution.html", HTML_PAGE.encode(), "Wann begann die Französische Revolution?", ("Bastille",)),
        Sample(
            "water.txt",
            b"The water cycle\n\nWater evaporates from the oceans, condenses into clouds and falls back as rain.\n\n" + FILLER.encode(),
            "How does water get from the ocean into the clouds?",
            ("evaporates",),
        ),
        Sample(
            "vokabeln.md",
            "# Vokabeln\n\n## Tiere\n\nDas englische Wort für Schmetterling ist butterfly.\n\n## Farben\n\n".encode() + FILLER.encode(),
            "What is the English word for Schmetterling?",
            ("butterfly",),
            section="Tiere",
        ),
    ]


def zip_bomb(file_name: str, marker: str) -> bytes:
    """A zip that names itself a DOCX or XLSX and unpacks one member to far more than the limits allow."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open(marker, "w", force_zip64=True) as member:
            block = b"\0" * (1024 * 1024)
            for _ in range(300):  # 300 MiB of zeros pack into about 300 KiB
                member.write(block)
    return out.getvalue()
