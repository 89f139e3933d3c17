"""What ingest works with: a parsed document's passages, and the chunks cut from them.

Parsers (``schulki.retrieval.parsing``) turn a file into a ParsedDocument: its
text as passages in reading order, each with the page or section it came
from. The chunker (``schulki.retrieval.chunking``) cuts passages into Chunks of
about the configured length along sentences and paragraphs, with overlap,
keeping page and section. Stores keep Chunks with their vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Passage:
    """A stretch of a document's text with where it came from."""

    text: str
    page: int = 0
    """The page, counting from 1; 0 when the format has no pages."""
    section: str = ""
    """The chapter, heading, mail subject, sheet and row, ...; empty when none."""
    table_row: bool = False
    """A row of a table, one "Spalte: Wert" line per cell: cut by cells, so that every chunk of a long row names its row and columns."""


@dataclass
class ParsedDocument:
    """A document's text, ready to be chunked."""

    format: str
    """The format recognised, for example "pdf", "docx", "eml"."""
    passages: list[Passage] = field(default_factory=list)
    page_count: int = 0
    """Pages, for formats that have them; 0 otherwise."""
    title: str = ""
    """The document's title when it names one."""


@dataclass
class Chunk:
    """A piece of a document that is embedded and searched as one."""

    text: str
    index: int
    """Position in the document, counting from 0."""
    page: int = 0
    section: str = ""
