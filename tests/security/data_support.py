"""What the data attack tests share: the worst files we can make, and a retrieval service in a process of its own.

The retrieval service runs as ``schulki serve retrieval`` in a child process
whose address space is capped, so an attack that works (a table that expands
to gigabytes) ends that process rather than the test run or the machine.
"""

from __future__ import annotations

import io
import os
import random
import resource
import string
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from xml.sax.saxutils import escape

from schulki.runtime.client import wait_until_serving

from tests.conftest import free_port

SERVICE_ADDRESS_SPACE = 8 * 1024 * 1024 * 1024
"""Address space of the retrieval process under attack: far above what it needs, far below what an expanding table takes."""


class RetrievalProcess:
    """``schulki serve retrieval`` with its address space capped and the settings given as environment."""

    def __init__(self, settings: dict[str, str]):
        self.port = free_port()
        self.env = {**os.environ, **settings}
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> RetrievalProcess:
        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (SERVICE_ADDRESS_SPACE, SERVICE_ADDRESS_SPACE))

        self.process = subprocess.Popen(
            [sys.executable, "-m", "schulki.cli", "serve", "retrieval", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=cap,  # noqa: PLW1509 - cap only calls setrlimit, which is safe between fork and exec
        )
        wait_until_serving(self.address, 120, is_alive=lambda: self.process.poll() is None)
        return self

    def children(self) -> list[int]:
        """The ids of the service's child processes (parse processes) right now."""
        found = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            with suppress(OSError):
                found += [int(pid) for pid in (task / "children").read_text().split()]
        return found

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def retrieval_process(
    store: Path, embeddings_address: str, engine_environment: dict[str, str] | None = None, **settings: str
) -> Iterator[RetrievalProcess]:
    """The service on the embedded store in ``store``, or on the engine ``engine_environment`` names (StoreEngine.environment)."""
    env = {
        **(engine_environment or {}),
        "SCHULKI_DATA_DIR": str(store),
        "SCHULKI_RETRIEVAL__STORE_PATH": str(store / "retrieval"),
        "SCHULKI_RETRIEVAL__EMBEDDINGS_ADDRESS": embeddings_address,
        **{f"SCHULKI_RETRIEVAL__{name.upper()}": value for name, value in settings.items()},
    }
    with RetrievalProcess(env) as running:
        yield running


# The worst files. ------------------------------------------------------------------------


def wide_header_csv(columns: int = 1000, header_chars: int = 100, rows: int = 1500) -> bytes:
    """A CSV whose every cell would carry a 100-character header: 3 MB that expanded to 150 million characters."""
    header = ";".join(f"Spalte{i:04d}-" + "x" * (header_chars - 12) for i in range(columns))
    row = ";".join("1" for _ in range(columns))
    return ("\n".join([header] + [row] * rows) + "\n").encode()


def _xlsx(shared: list[str], sheet_rows: list[list[int]]) -> bytes:
    """A minimal valid XLSX whose cells all point into the shared strings table."""

    def column(index: int) -> str:
        name = ""
        index += 1
        while index:
            index, rest = divmod(index - 1, 26)
            name = chr(65 + rest) + name
        return name

    rows = "".join(
        f'<row r="{r + 1}">' + "".join(f'<c r="{column(c)}{r + 1}" t="s"><v>{v}</v></c>' for c, v in enumerate(cells)) + "</row>"
        for r, cells in enumerate(sheet_rows)
    )
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>"
        ),
        "xl/workbook.xml": (
            '<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>'
            '<sheet name="Tabelle1" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
            '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>'
            "</Relationships>"
        ),
        "xl/worksheets/sheet1.xml": (
            '<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            f"<sheetData>{rows}</sheetData></worksheet>"
        ),
        "xl/sharedStrings.xml": (
            '<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            f'count="{len(shared)}" uniqueCount="{len(shared)}">' + "".join(f"<si><t>{escape(t)}</t></si>" for t in shared) + "</sst>"
        ),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in parts.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def random_words(chars: int, seed: int = 7) -> str:
    """Letters and spaces at random: text that does not compress much (so no zip-bomb check stops it first)."""
    alphabet = (string.ascii_lowercase * 9 + " " * 22).encode()  # 256 entries: every byte maps to one
    return random.Random(seed).randbytes(chars).translate(alphabet).decode()


def huge_shared_string_xlsx(string_chars: int = 2_000_000, columns: int = 200, rows: int = 50) -> bytes:
    """An XLSX with one 2-million-character shared string used by every cell: 10 GB of text once expanded."""
    return _xlsx([random_words(string_chars)], [[0] * columns for _ in range(rows)])


def big_shared_strings_xlsx(total_chars: int) -> bytes:
    """An XLSX whose shared strings table alone holds ``total_chars`` characters (each string used once)."""
    piece = 30_000
    count = total_chars // piece
    text = random_words(piece * count)
    strings = [text[i * piece : (i + 1) * piece] for i in range(count)]
    return _xlsx(strings, [[i] for i in range(count)])


def wide_table_docx(columns: int = 50, header_chars: int = 20_000, rows: int = 200) -> bytes:
    """A DOCX with one table: 50 headers of 20,000 characters and 200 rows of one-letter cells (200 million once expanded)."""
    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'

    def cell(text: str) -> str:
        return f"<w:tc><w:p><w:r><w:t>{escape(text)}</w:t></w:r></w:p></w:tc>"

    # Random header text, so the document does not pack well enough to look like a zip bomb.
    header = "<w:tr>" + "".join(cell(f"Kopf{i} " + random_words(header_chars, seed=i)) for i in range(columns)) + "</w:tr>"
    body = ("<w:tr>" + "".join(cell("x") for _ in range(columns)) + "</w:tr>") * rows
    document = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document {w}><w:body>'
        f"<w:p><w:r><w:t>Stundenplan</w:t></w:r></w:p><w:tbl>{header}{body}</w:tbl></w:body></w:document>"
    )
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>'
            "</Relationships>"
        ),
        "word/document.xml": document,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in parts.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def nested_html(depth: int = 200_000) -> bytes:
    """An HTML page of 200,000 nested elements around one sentence."""
    return (
        b"<html><body>"
        + b"<div><span>" * (depth // 2)
        + "Tief verschachtelter Satz über Vulkane.".encode()
        + b"</span></div>" * (depth // 2)
        + b"</body></html>"
    )


def single_line_text(megabytes: int = 20) -> bytes:
    """One line of words without a single line break, ``megabytes`` long."""
    return (random_words(megabytes * 1024 * 1024, seed=3)).encode()


def padded_html(size_bytes: int, sentence: str) -> bytes:
    """An HTML file of ``size_bytes`` bytes with one sentence of text (the rest is a script): big on disk, one chunk."""
    head = f"<html><body><p>{sentence}</p><script>//".encode()
    tail = b"</script></body></html>"
    return head + b"a" * (size_bytes - len(head) - len(tail)) + tail
