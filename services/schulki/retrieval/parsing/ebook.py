"""EPUB: the book's chapters in reading order, each chapter a section (ebooklib)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from schulki.retrieval.documents import ParsedDocument, Passage
from schulki.retrieval.parsing.common import ParseJob
from schulki.retrieval.parsing.web import decode_html, html_to_document
from schulki.runtime.errors import InvalidInput

CORRUPT = "Das E-Book ist beschädigt und lässt sich nicht lesen. (corrupt EPUB)"


def parse_epub(path: Path, job: ParseJob) -> ParsedDocument:
    """Chapters in spine order; a chapter's title (from the table of contents or its first heading) is its section."""
    import ebooklib
    from ebooklib import epub

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ebooklib warns about options it will change
            book = epub.read_epub(str(path), options={"ignore_ncx": False})
        titles = _toc_titles(book.toc)
        chapters = []
        for item_id, _linear in book.spine:
            item = book.get_item_with_id(item_id)
            if item is not None and item.get_type() == ebooklib.ITEM_DOCUMENT:
                chapters.append(item)
        title_meta = book.get_metadata("DC", "title")
    except MemoryError:  # the parse process's memory limit: not a damaged book
        raise
    except Exception:  # ebooklib raises KeyError, lxml and zip errors on a damaged book
        raise InvalidInput(CORRUPT) from None
    passages: list[Passage] = []
    for done, item in enumerate(chapters, start=1):
        chapter = html_to_document(decode_html(item.get_content()))
        name = titles.get(item.get_name()) or chapter.title or f"Kapitel {done}"
        # Headings inside a chapter refine the section; the chapter's name stays in front.
        for p in chapter.passages:
            section = name if not p.section or p.section == name else f"{name} / {p.section}"
            passages.append(Passage(text=p.text, section=section))
        job.progress(done, len(chapters))
    title = title_meta[0][0] if title_meta else ""
    return ParsedDocument(format="epub", passages=passages, title=title)


def _toc_titles(toc: Sequence[object]) -> dict[str, str]:
    """File name of each chapter to its title in the table of contents (first entry wins)."""
    from ebooklib import epub

    titles: dict[str, str] = {}

    def visit(entries: Sequence[object]) -> None:
        for entry in entries:
            if isinstance(entry, tuple):  # (Section, [children])
                visit([entry[0]])
                visit(entry[1])
            elif isinstance(entry, (epub.Link, epub.Section)) and getattr(entry, "href", None):
                titles.setdefault(entry.href.split("#", 1)[0], entry.title)
            elif isinstance(entry, epub.EpubHtml):
                titles.setdefault(entry.get_name(), entry.title)

    visit(toc)
    return titles
