"""Parsing every ingest format from real documents made here with each format's own library, and every bad input."""

from __future__ import annotations

import io
import mailbox
import os
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from schulki.retrieval.parsing import NO_TEXT_MESSAGE, SUPPORTED_EXTENSIONS, common, parse_file
from schulki.runtime.errors import InvalidInput, TooLarge


def write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def parse(folder: Path, name: str, data: bytes | str, **kwargs):
    return parse_file(write(folder, name, data), name, **kwargs)


def sections(document) -> list[str]:
    return list(dict.fromkeys(p.section for p in document.passages))


def text_of(document) -> str:
    return "\n".join(p.text for p in document.passages)


# --- makers ---------------------------------------------------------------------------------------


def pdf(pages: list[str], encrypt: bool = False) -> bytes:
    from fpdf import FPDF

    document = FPDF()
    document.set_title("Zellbiologie")
    if encrypt:
        document.set_encryption(owner_password="lehrer", user_password="geheim")
    document.set_font("Helvetica", size=12)
    for text in pages:
        document.add_page()
        document.multi_cell(0, 8, text)
    return bytes(document.output())


def docx() -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.core_properties.title = "Erdkunde"
    document.add_paragraph("Vorwort ohne Überschrift.")
    document.add_heading("Flüsse", level=1)
    document.add_paragraph("Der Rhein mündet in die Nordsee.")
    table = document.add_table(rows=2, cols=2)
    for cell, value in zip(table.rows[0].cells + table.rows[1].cells, ("Fluss", "Länge", "Elbe", "1094 km"), strict=True):
        cell.text = value
    document.add_heading("Gebirge", level=2)
    document.add_paragraph("Die Alpen liegen im Süden.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def odt() -> bytes:
    from odf.opendocument import OpenDocumentText
    from odf.text import H, P, Span

    document = OpenDocumentText()
    document.text.addElement(H(outlinelevel=1, text="Gebirge"))
    paragraph = P(text="Die Zugspitze ist ")
    paragraph.addElement(Span(text="2962 Meter hoch."))
    document.text.addElement(paragraph)
    document.text.addElement(H(outlinelevel=1, text="Seen"))
    document.text.addElement(P(text="Der Bodensee liegt an drei Ländern."))
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def xlsx() -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Elemente"
    for row in (("Element", "Symbol", "Ordnungszahl"), ("Wasserstoff", "H", 1), ("Eisen", "Fe", 26)):
        sheet.append(row)
    other = book.create_sheet("Noten")
    other.append(("Name", "Fach", None, "Note"))
    other.append(("Anna", "Mathe", None, 2.0))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def epub() -> bytes:
    from ebooklib import epub as ebook

    book = ebook.EpubBook()
    book.set_identifier("schulki-test")
    book.set_title("Mathematik Klasse 6")
    book.set_language("de")
    items = []
    for i, (title, body) in enumerate(
        [
            ("Teilbarkeit", "<p>Eine Zahl ist durch 3 teilbar, wenn ihre Quersumme es ist.</p>"),
            ("Bruchrechnung", "<h2>Kürzen</h2><p>Man teilt Zähler und Nenner durch dieselbe Zahl.</p>"),
        ],
        1,
    ):
        item = ebook.EpubHtml(title=title, file_name=f"kapitel{i}.xhtml", lang="de")
        item.content = f"<html><body><h1>{title}</h1>{body}</body></html>"
        book.add_item(item)
        items.append(item)
    book.toc = items
    book.add_item(ebook.EpubNcx())
    book.add_item(ebook.EpubNav())
    book.spine = items
    out = io.BytesIO()
    ebook.write_epub(out, book)
    return out.getvalue()


def mail(subject: str, body: str, html: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "Frau Schulz <schulz@schule.example>"
    message["To"] = "klasse7a@schule.example"
    message["Date"] = "Mon, 02 Mar 2026 09:00:00 +0100"
    message.set_content(body)
    if html:
        message.add_alternative(html, subtype="html")
    message.add_attachment(b"%PDF-1.4 attachment bytes", maintype="application", subtype="pdf", filename="plan.pdf")
    return message


def zip_with(members: dict[str, bytes], level: int = 9) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


# --- formats --------------------------------------------------------------------------------------


def test_pdf_pages_keep_their_numbers_and_progress_counts_them(tmp_path):
    done = []
    document = parse(
        tmp_path,
        "Zelle.PDF",
        pdf(["Die Zelle hat einen Kern.", "", "Mitochondrien sind die Kraft-\nwerke der Zelle."]),
        progress=lambda d, t: done.append((d, t)),
    )
    assert document.format == "pdf" and document.page_count == 3 and document.title == "Zellbiologie"
    assert [p.page for p in document.passages] == [1, 3]  # the empty page has no passage
    assert "Kern" in document.passages[0].text and "Mitochondrien" in document.passages[1].text
    assert done == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(TooLarge, match="3 Seiten"):
        parse(tmp_path, "zelle.pdf", pdf(["a", "b", "c"]), max_pages=2)


def test_docx_headings_become_sections_and_tables_keep_their_header(tmp_path):
    document = parse(tmp_path, "erdkunde.docx", docx())
    assert document.format == "docx" and document.title == "Erdkunde"
    assert [(p.section, p.text) for p in document.passages] == [
        ("", "Vorwort ohne Überschrift."),
        ("Flüsse", "Der Rhein mündet in die Nordsee."),
        ("Flüsse", "Fluss: Elbe; Länge: 1094 km"),
        ("Gebirge", "Die Alpen liegen im Süden."),
    ]


def test_odt_headings_become_sections(tmp_path):
    document = parse(tmp_path, "berge.odt", odt())
    assert [(p.section, p.text) for p in document.passages] == [
        ("Gebirge", "Die Zugspitze ist 2962 Meter hoch."),
        ("Seen", "Der Bodensee liegt an drei Ländern."),
    ]


def test_xlsx_rows_carry_their_header_and_sheet_and_row(tmp_path):
    done = []
    document = parse(tmp_path, "tabelle.xlsx", xlsx(), progress=lambda d, t: done.append((d, t)))
    assert [(p.section, p.text) for p in document.passages] == [
        ("Elemente / Zeile 2", "Element: Wasserstoff\nSymbol: H\nOrdnungszahl: 1"),
        ("Elemente / Zeile 3", "Element: Eisen\nSymbol: Fe\nOrdnungszahl: 26"),
        ("Noten / Zeile 2", "Name: Anna\nFach: Mathe\nNote: 2"),
    ]
    assert done == [(1, 2), (2, 2)]


def test_csv_in_german_excel_style_semicolons_and_windows_1252(tmp_path):
    data = "Land;Hauptstadt;Einwohner\r\nÖsterreich;Wien;9100000\r\nPortugal;Lissabon;10400000\r\n".encode("cp1252")
    document = parse(tmp_path, "hauptstaedte.csv", data)
    assert [(p.section, p.text) for p in document.passages] == [
        ("hauptstaedte / Zeile 2", "Land: Österreich\nHauptstadt: Wien\nEinwohner: 9100000"),
        ("hauptstaedte / Zeile 3", "Land: Portugal\nHauptstadt: Lissabon\nEinwohner: 10400000"),
    ]


def test_epub_chapters_become_sections_in_reading_order(tmp_path):
    done = []
    document = parse(tmp_path, "mathe.epub", epub(), progress=lambda d, t: done.append((d, t)))
    assert document.title == "Mathematik Klasse 6"
    assert [(p.section, p.text) for p in document.passages] == [
        ("Teilbarkeit", "Eine Zahl ist durch 3 teilbar, wenn ihre Quersumme es ist."),
        ("Bruchrechnung / Kürzen", "Man teilt Zähler und Nenner durch dieselbe Zahl."),
    ]
    assert done == [(1, 2), (2, 2)]


def test_an_eml_mail_has_subject_sender_and_date_and_no_attachment(tmp_path):
    message = mail("Wandertag am Freitag", "Der Wandertag führt zum Bodensee.", html="<p>HTML-Fassung</p>")
    document = parse(tmp_path, "wandertag.eml", message.as_bytes())
    (passage,) = document.passages
    assert passage.section == "Wandertag am Freitag" and document.title == "Wandertag am Freitag"
    assert passage.text.startswith("Betreff: Wandertag am Freitag\nVon: Frau Schulz <schulz@schule.example>\nDatum: 02.03.2026 09:00")
    assert "Der Wandertag führt zum Bodensee." in passage.text
    assert "HTML-Fassung" not in passage.text and "attachment" not in passage.text


def test_an_html_only_mail_is_read_as_text(tmp_path):
    message = EmailMessage()
    message["Subject"] = "Elternbrief"
    message.set_content("<html><body><script>x()</script><p>Bitte <b>unterschreiben</b>.</p></body></html>", subtype="html")
    (passage,) = parse(tmp_path, "brief.eml", message.as_bytes()).passages
    assert passage.text == "Betreff: Elternbrief\n\nBitte unterschreiben ."  # inline tags are joined with a space


def test_every_mail_of_an_mbox_is_its_own_section(tmp_path):
    path = tmp_path / "source.mbox"
    box = mailbox.mbox(path)
    box.add(mail("Mensa-Plan", "Montag gibt es Nudeln."))
    box.add(mail("Elternabend", "Der Elternabend ist am 12. März in der Aula."))
    box.close()
    done = []
    document = parse(tmp_path, "postfach.mbox", path.read_bytes(), progress=lambda d, t: done.append((d, t)))
    assert sections(document) == ["Mensa-Plan", "Elternabend"]
    assert "Aula" in document.passages[1].text and "Von: Frau Schulz" in document.passages[1].text
    assert done == [(1, 2), (2, 2)]


def test_html_keeps_the_main_text_without_navigation_scripts_styles_or_footer(tmp_path):
    page = """<!doctype html><html><head><title>Geschichte</title><style>p {color: red}</style></head><body>
    <header><a href="/">Startseite</a></header><nav>Navigation Menü</nav>
    <div role="navigation">Noch ein Menü</div>
    <main><h1>Französische Revolution</h1><p>Sie begann 1789 mit dem <em>Sturm</em> auf die Bastille.</p>
    <script>track()</script><h2>Folgen</h2><ul><li>Menschenrechte</li><li>Republik</li></ul></main>
    <aside>Werbung</aside><footer>Impressum</footer></body></html>"""
    document = parse(tmp_path, "revolution.htm", page.encode("utf-8"))
    assert document.title == "Geschichte"
    assert [(p.section, p.text) for p in document.passages] == [
        ("Französische Revolution", "Sie begann 1789 mit dem Sturm auf die Bastille."),
        ("Folgen", "Menschenrechte"),
        ("Folgen", "Republik"),
    ]
    for boilerplate in ("Startseite", "Navigation", "Menü", "color", "track", "Werbung", "Impressum"):
        assert boilerplate not in text_of(document)


def test_an_html_table_keeps_its_header_with_every_row(tmp_path):
    page = """<html><body><main><h2>Klassenfahrt</h2><table><caption>Kosten 2026</caption>
    <thead><tr><th>Klasse</th><th>Ziel</th><th colspan="2">Kosten und Tage</th></tr></thead>
    <tbody><tr><td>7a</td><td>Harz</td><td>180 €</td><td>3</td></tr>
    <tr><td>8b</td><td>Berlin</td><td>240 €</td><td>4</td></tr><tr><td></td><td></td><td></td><td></td></tr>
    <tr><td>9c</td><td><table><tr><td>Rom</td></tr></table></td><td>410 €</td><td>5</td></tr></tbody></table>
    <p>Anmeldung bis Freitag.</p></main></body></html>"""
    document = parse(tmp_path, "fahrt.html", page)
    assert [(p.section, p.text) for p in document.passages] == [
        ("Kosten 2026 / Zeile 2", "Klasse: 7a\nZiel: Harz\nKosten und Tage: 180 €\nKosten und Tage: 3"),
        ("Kosten 2026 / Zeile 3", "Klasse: 8b\nZiel: Berlin\nKosten und Tage: 240 €\nKosten und Tage: 4"),
        ("Kosten 2026 / Zeile 5", "Klasse: 9c\nZiel: Rom\nKosten und Tage: 410 €\nKosten und Tage: 5"),
        ("Klassenfahrt", "Anmeldung bis Freitag."),
    ]


def test_an_html_table_without_th_takes_its_first_row_as_header_and_the_heading_as_name(tmp_path):
    page = """<html><body><h1>Noten</h1><table><tr><td>Fach</td><td>Note</td></tr>
    <tr><td>Mathe</td><td>2</td></tr><tr><td>Kunst</td><td>1</td></tr></table></body></html>"""
    document = parse(tmp_path, "noten.html", page)
    assert [(p.section, p.text) for p in document.passages] == [
        ("Noten / Zeile 2", "Fach: Mathe\nNote: 2"),
        ("Noten / Zeile 3", "Fach: Kunst\nNote: 1"),
    ]


def test_a_layout_table_is_still_read_as_paragraphs(tmp_path):
    long = "Willkommen auf der Seite der Grundschule am Park, hier finden Eltern alle Termine."
    page = f"""<html><body><table><tr><td>{long}</td><td>Sommerfest am 3. Juli.</td></tr>
    <tr><td>Elternabend</td><td>am Montag</td></tr></table>
    <table><tr><td>Nur eine Spalte</td></tr><tr><td>und noch eine Zeile</td></tr></table></body></html>"""
    document = parse(tmp_path, "schule.html", page)
    assert [p.text for p in document.passages] == [
        long,
        "Sommerfest am 3. Juli.",
        "Elternabend",
        "am Montag",
        "Nur eine Spalte",
        "und noch eine Zeile",
    ]


def test_an_html_table_keeps_the_header_cap_and_the_text_budget(tmp_path):
    header = "Ueberschrift" * 20
    page = f"<html><body><table><tr><th>{header}</th><th>B</th></tr><tr><td>1</td><td>2</td></tr></table></body></html>"
    text = text_of(parse(tmp_path, "breit.html", page))
    assert text.startswith(header[: common.MAX_HEADER_CHARS - 1] + "…: 1") and header not in text
    rows = "".join(f"<tr><td>{i}</td><td>x</td></tr>" for i in range(2000))
    wide = f"<html><body><table><tr><th>{'K' * 50}</th><th>{'L' * 50}</th></tr>{rows}</table></body></html>"
    with pytest.raises(TooLarge):
        parse(tmp_path, "lang.html", wide, max_chars=50_000)  # the cells are 12 kB of text; the rows with their header 220 kB


def test_html_in_its_declared_charset(tmp_path):
    page = '<html><head><meta charset="iso-8859-1"></head><body><p>Grüße aus Köln</p></body></html>'.encode("latin-1")
    assert text_of(parse(tmp_path, "gruss.html", page)) == "Grüße aus Köln"


def test_text_paragraphs_and_markdown_headings(tmp_path):
    txt = parse(tmp_path, "notiz.txt", "Erster Absatz\nmit zwei Zeilen.\n\n\nZweiter Absatz.\n")
    assert [p.text for p in txt.passages] == ["Erster Absatz\nmit zwei Zeilen.", "Zweiter Absatz."]
    md = parse(
        tmp_path,
        "vokabeln.md",
        "# Vokabeln\n\nEinleitung.\n\n## Tiere ##\n\nSchmetterling heißt butterfly.\n\n"
        "```\n# kein Titel\n```\n\nFarben\n------\n\nRot heißt red.\n\n* * *\n\nBlau heißt blue.\n",
    )
    assert md.title == "Vokabeln"
    assert [(p.section, p.text) for p in md.passages] == [
        ("Vokabeln", "Einleitung."),
        ("Tiere", "Schmetterling heißt butterfly."),
        ("Tiere", "# kein Titel"),
        ("Farben", "Rot heißt red."),
        ("Farben", "Blau heißt blue."),
    ]


def test_the_supported_extensions_are_those_the_issue_names():
    assert {".pdf", ".docx", ".odt", ".epub", ".eml", ".mbox", ".csv", ".xlsx", ".html", ".txt", ".md"} <= SUPPORTED_EXTENSIONS


# --- bad input ------------------------------------------------------------------------------------


def test_a_corrupt_pdf_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInput, match="corrupt PDF"):
        parse(tmp_path, "kaputt.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj\n" + os.urandom(2000))
    whole = pdf(["Ein ganz normaler Text."])
    with pytest.raises(InvalidInput, match=r"(?i)corrupt PDF"):
        parse(tmp_path, "abgeschnitten.pdf", whole[: len(whole) // 3])


def test_a_password_protected_pdf_says_so(tmp_path):
    with pytest.raises(InvalidInput, match="password-protected"):
        parse(tmp_path, "geheim.pdf", pdf(["Die Lösungen."], encrypt=True))


def test_a_pdf_without_text_asks_whether_it_is_a_scan(tmp_path):
    from fpdf import FPDF

    scan = FPDF()
    scan.add_page()
    scan.rect(20, 20, 100, 60, style="F")
    with pytest.raises(InvalidInput) as error:
        parse(tmp_path, "scan.pdf", bytes(scan.output()))
    assert error.value.message == NO_TEXT_MESSAGE
    assert "no text found, scanned?" in NO_TEXT_MESSAGE


@pytest.mark.parametrize("name", ["leer.pdf", "leer.docx", "leer.txt", "leer.csv", "leer.eml"])
def test_an_empty_file_is_invalid_input(tmp_path, name):
    with pytest.raises(InvalidInput, match="empty file"):
        parse(tmp_path, name, b"")


@pytest.mark.parametrize("name", ["leer.txt", "leer.md", "leer.html", "leer.csv"])
def test_a_file_of_only_whitespace_has_no_text(tmp_path, name):
    with pytest.raises(InvalidInput, match="no text found"):
        parse(tmp_path, name, b" \n\n\t \n" if name != "leer.html" else b"<html><body><nav>Menu</nav></body></html>")


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("text.pdf", lambda: b"Nur Text, keine PDF."),
        ("tabelle.xlsx", docx),
        ("brief.docx", lambda: pdf(["Hallo"])),
        ("buch.epub", lambda: zip_with({"readme.txt": b"hallo"})),
        ("text.odt", xlsx),
        ("notiz.txt", lambda: pdf(["Hallo"])),
        ("seite.html", lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
        ("mail.eml", lambda: b"Das ist keine E-Mail, nur ein Satz.\n"),
        ("post.mbox", lambda: b"Subject: Hallo\n\nkein mbox\n"),
    ],
)
def test_a_wrong_extension_is_invalid_input(tmp_path, name, make):
    with pytest.raises(InvalidInput, match="wrong extension"):
        parse(tmp_path, name, make())


@pytest.mark.parametrize("name", ["programm.exe", "bild.png", "ohne_endung", "archiv.zip"])
def test_an_unknown_extension_is_invalid_input(tmp_path, name):
    with pytest.raises(InvalidInput, match="unknown extension") as error:
        parse(tmp_path, name, b"irgendwas")
    assert ".pdf" in error.value.message  # the message names what is supported


@pytest.mark.parametrize(
    ("name", "marker"),
    [
        ("bombe.docx", "word/document.xml"),
        ("bombe.xlsx", "xl/workbook.xml"),
        ("bombe.odt", "content.xml"),
        ("bombe.epub", "META-INF/container.xml"),
    ],
)
def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path, name, marker):
    bomb = zip_with({"[Content_Types].xml": b"<Types/>", marker: b"\0" * (16 * 1024 * 1024)})
    assert len(bomb) < 100_000
    with pytest.raises(InvalidInput, match="zip bomb"):
        parse(tmp_path, name, bomb)


def test_a_zip_that_unpacks_to_more_than_the_limit_is_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "MAX_UNPACKED_BYTES", 1024 * 1024)
    noise = os.urandom(700 * 1024)  # incompressible, so the ratio check does not fire first
    big = zip_with({"word/document.xml": noise, "word/media/bild.bin": noise}, level=1)
    with pytest.raises(TooLarge, match="unpacked size"):
        parse(tmp_path, "gross.docx", big)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("kaputt.docx", b"PK\x03\x04" + b"\x00" * 200),
        ("kaputt.docx", zip_with({"[Content_Types].xml": b"<Types", "word/document.xml": b"<w:document"})),
        ("kaputt.xlsx", zip_with({"xl/workbook.xml": b"<workbook"})),
        ("kaputt.odt", zip_with({"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<office"})),
        ("kaputt.epub", zip_with({"mimetype": b"application/epub+zip", "META-INF/container.xml": b"<container"})),
    ],
)
def test_a_corrupt_office_file_or_ebook_is_invalid_input(tmp_path, name, data):
    with pytest.raises(InvalidInput, match="corrupt"):
        parse(tmp_path, name, data)


# --- fetching web pages ---------------------------------------------------------------------------

PAGE = "<html><head><title>Mathe</title></head><body><nav>Menü</nav><p>Satz des Pythagoras</p></body></html>".encode()


@pytest.fixture(scope="module")
def web_server():
    """A real HTTP server on this machine's loopback address, which fetching must refuse unless allowed."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            port = self.server.server_address[1]
            routes = {
                "/seite": (200, "text/html; charset=utf-8", PAGE),
                "/skript.pdf": (200, "application/pdf", pdf(["Skript"])),
                "/gross": (200, "text/plain", b"x" * 5000),
                "/bild": (200, "image/png", b"\x89PNG"),
                "/fehlt": (404, "text/plain", b"not found"),
            }
            if self.path == "/schleife":
                self.send_response(301)
                self.send_header("Location", "/schleife")
                self.end_headers()
                return
            if self.path.startswith("/weiter"):  # /weiter?ziel=URL redirects there
                self.send_response(302)
                self.send_header("Location", self.path.split("ziel=", 1)[1].replace("PORT", str(port)))
                self.end_headers()
                return
            status, kind, body = routes.get(self.path, (404, "text/plain", b""))
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def allowed(web_server: str) -> str:
    """The test server as an allowed host entry: its address and port (an entry without a port opens 80 and 443 only)."""
    return web_server.removeprefix("http://")


def test_a_page_on_an_allowed_host_is_fetched_and_parsed(web_server, tmp_path):
    from schulki.retrieval.parsing import fetch_url

    data, name = fetch_url(f"{web_server}/seite", [allowed(web_server)], max_bytes=10_000)
    assert (data, name) == (PAGE, "page.html")
    assert text_of(parse(tmp_path, name, data)) == "Satz des Pythagoras"
    data, name = fetch_url(f"{web_server}/skript.pdf", [allowed(web_server)], max_bytes=100_000)
    assert name == "skript.pdf" and data.startswith(b"%PDF-")
    data, name = fetch_url(f"{web_server}/weiter?ziel=/seite", [allowed(web_server)], max_bytes=10_000)
    assert name == "page.html"


def test_loopback_is_refused_unless_the_host_is_allowed(web_server):
    from schulki.retrieval.parsing import fetch_url
    from schulki.runtime.errors import PermissionDenied

    with pytest.raises(PermissionDenied, match="private, loopback or link-local"):
        fetch_url(f"{web_server}/seite", [], max_bytes=10_000)
    # An allowed host that redirects to one that is not: each hop is checked.
    with pytest.raises(PermissionDenied):
        fetch_url(f"{web_server}/weiter?ziel=http://localhost:PORT/seite", [allowed(web_server)], max_bytes=10_000)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/",
        "http://192.168.178.1/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://100.64.0.1/",
        "http://240.0.0.1/",
        "https://localhost/",
    ],
)
def test_private_link_local_multicast_and_reserved_addresses_are_refused(url):
    from schulki.retrieval.parsing import fetch_url
    from schulki.runtime.errors import PermissionDenied

    with pytest.raises(PermissionDenied):
        fetch_url(url, [], max_bytes=10_000, timeout=2)


def test_public_addresses_are_told_apart_from_private_ones():
    from schulki.retrieval.parsing.web import is_public_address

    assert is_public_address("8.8.8.8") and is_public_address("2001:4860:4860::8888")
    assert not any(map(is_public_address, ["127.0.0.1", "10.0.0.1", "fd00::1", "::", "192.0.2.1", "255.255.255.255"]))


@pytest.mark.parametrize(
    ("path", "error", "expected"),
    [
        ("/gross", TooLarge, "size limit"),
        ("/fehlt", InvalidInput, "HTTP 404"),
        ("/bild", InvalidInput, "unsupported content type"),
        ("/schleife", InvalidInput, "too many redirects"),
    ],
)
def test_a_page_too_large_missing_or_unreadable_is_refused(web_server, path, error, expected):
    from schulki.retrieval.parsing import fetch_url

    with pytest.raises(error, match=expected):
        fetch_url(f"{web_server}{path}", [allowed(web_server)], max_bytes=1000)


@pytest.mark.parametrize(
    "url", ["ftp://example.org/datei.txt", "file:///etc/passwd", "javascript:alert(1)", "http://", "http://a:b@127.0.0.1/"]
)
def test_only_plain_http_and_https_urls_are_fetched(url):
    from schulki.retrieval.parsing import fetch_url

    with pytest.raises(InvalidInput):
        fetch_url(url, ["127.0.0.1"], max_bytes=1000)
