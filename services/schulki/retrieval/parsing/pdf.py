"""PDF: the text of each page with its page number (pypdf)."""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

from schulki.retrieval.documents import ParsedDocument, Passage
from schulki.retrieval.parsing.common import ParseJob, clean
from schulki.runtime.errors import InvalidInput, TooLarge

CORRUPT = "Die PDF-Datei ist beschädigt und lässt sich nicht lesen. (corrupt PDF)"
ENCRYPTED = "Die PDF-Datei ist mit einem Passwort geschützt; bitte ohne Passwort speichern und erneut hochladen. (password-protected PDF)"


def parse_pdf(path: Path, job: ParseJob) -> ParsedDocument:
    """Each page's text as one passage with its page number; refuse corrupt and encrypted files."""
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError, PyPdfError

    # pypdf logs every oddity of a damaged file; those lines are noise in the service log.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            # Many PDFs are encrypted only to restrict printing: an empty user password opens them.
            try:
                opened = reader.decrypt("")
            except (DependencyError, NotImplementedError, PdfReadError):
                opened = PasswordType.NOT_DECRYPTED
            if not opened:
                raise InvalidInput(ENCRYPTED)
        total = len(reader.pages)
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError, OSError):
        raise InvalidInput(CORRUPT) from None
    if total == 0:
        raise InvalidInput(CORRUPT)
    if job.max_pages is not None and total > job.max_pages:
        raise TooLarge(f"Die PDF-Datei hat {total} Seiten; erlaubt sind höchstens {job.max_pages}. (too many pages)")
    passages: list[Passage] = []
    for number in range(1, total + 1):
        try:
            text = reader.pages[number - 1].extract_text() or ""
        except FileNotDecryptedError:
            raise InvalidInput(ENCRYPTED) from None
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError, OSError, ZeroDivisionError):
            raise InvalidInput(f"Seite {number} der PDF-Datei ist beschädigt. (corrupt PDF page {number})") from None
        text = _unwrap(clean(_join_hyphenated(text)))
        if text:
            passages.append(Passage(text=text, page=number))
        job.progress(number, total)
    title = ""
    with contextlib.suppress(PyPdfError, ValueError, KeyError, TypeError, AttributeError):
        metadata = reader.metadata
        title = clean(str(metadata.get("/Title") or "")) if metadata is not None else ""
    return ParsedDocument(format="pdf", passages=passages, page_count=total, title=title)


def _unwrap(text: str) -> str:
    """PDF lines are wrapped at the page's width: join a paragraph's lines, keep blank lines as breaks."""
    return "\n\n".join(" ".join(p.split("\n")) for p in text.split("\n\n"))


def _join_hyphenated(text: str) -> str:
    """Join words hyphenated across a line end ("Schul-\\nbuch" becomes "Schulbuch")."""
    return re.sub(r"(\w)-\n(?=[a-zäöüß])", r"\1", text)
