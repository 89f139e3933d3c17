"""Cutting a parsed document into chunks along paragraphs and sentences, with overlap.

Neighbouring passages with the same page and section form one block; a chunk
never spans two blocks, so every chunk has exactly one page and section to
cite. Inside a block, text is cut into sentences (a sentence longer than a
chunk is cut at spaces), and sentences are packed greedily into chunks of at
most ``chunk_chars`` characters. Each new chunk starts with the last whole
sentences of the one before, up to ``overlap_chars`` characters, so a fact
that straddles a cut is still found in one piece.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schulki.retrieval.documents import Chunk, ParsedDocument, Passage

# A sentence ends at . ! ? or … (maybe followed by quotes or brackets) before
# whitespace and a capital letter, digit or opening quote. Common German and
# English abbreviations and ordinal numbers do not end a sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'»«“”’)\]]*\s+(?=[\"'»«„“(\[]?[A-ZÄÖÜ0-9])")
_ABBREVIATIONS = {
    "z.",
    "b.",
    "d.",
    "h.",
    "u.",
    "a.",
    "s.",
    "o.",
    "v.",
    "dr.",
    "prof.",
    "nr.",
    "bzw.",
    "usw.",
    "vgl.",
    "ca.",
    "etc.",
    "evtl.",
    "ggf.",
    "inkl.",
    "str.",
    "st.",
    "hr.",
    "fr.",
    "mr.",
    "mrs.",
    "ms.",
    "e.g.",
    "i.e.",
    "vs.",
    "abs.",
    "art.",
    "bd.",
    "jh.",
    "jhd.",
    "mio.",
    "mrd.",
    "tel.",
    "min.",
    "max.",
    "bsp.",
    "sog.",
    "dt.",
    "engl.",
}
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


@dataclass
class _Unit:
    """A sentence (or a piece of one) and what joins it to the unit before."""

    text: str
    joiner: str  # "\n\n" at a paragraph break, "\n" at a line break, " " inside a paragraph


def chunk_document(doc: ParsedDocument, chunk_chars: int, overlap_chars: int) -> list[Chunk]:
    """Cut a document into chunks of at most ``chunk_chars`` characters.

    Chunks follow paragraphs and sentences, overlap by up to
    ``overlap_chars`` characters of whole sentences, never cross a page or
    section boundary, and keep the page and section of their passages.
    Raises ValueError when chunk_chars is not positive or overlap_chars is
    negative or not smaller than chunk_chars.
    """
    if chunk_chars <= 0:
        raise ValueError(f"chunk_chars must be positive, not {chunk_chars}")
    if not 0 <= overlap_chars < chunk_chars:
        raise ValueError(f"overlap_chars must be at least 0 and below chunk_chars ({chunk_chars}), not {overlap_chars}")
    chunks: list[Chunk] = []
    for first, texts in _blocks(doc.passages):
        pieces = _row_chunks(texts, chunk_chars) if first.table_row else _pack(_units(texts, chunk_chars), chunk_chars, overlap_chars)
        for text in pieces:
            chunks.append(Chunk(text=text, index=len(chunks), page=first.page, section=first.section))
    return chunks


CONTINUED = " (Forts.)"
"""Marks the column name of a cell cut over several chunks, from its second piece on."""


def _row_chunks(texts: list[str], chunk_chars: int) -> list[str]:
    """A table row's "Spalte: Wert" lines packed into chunks, whole cells where they fit, without overlap.

    A row longer than a chunk is cut between cells; a cell longer than the
    room left is cut at spaces, and each piece keeps its column name. Every
    chunk after the first starts with the row's first cell (usually what
    names the row, "Name: Anna"), so each chunk still says whose row it is
    and what its values are.
    """
    text = "\n".join(texts)
    if len(text) <= chunk_chars:
        return [text]
    lines = [line for line in text.split("\n") if line.strip()]
    lead = lines[0] if len(lines[0]) <= chunk_chars // 4 else ""
    chunks: list[list[str]] = [[]]

    def free() -> int:
        """Characters the current chunk still takes, with the line break before a new line."""
        return chunk_chars - len("\n".join(chunks[-1])) - (1 if chunks[-1] else 0)

    def new_chunk() -> None:
        chunks.append([lead] if lead else [])

    for line in lines:
        if len(line) <= free():
            chunks[-1].append(line)
            continue
        if len(line) <= chunk_chars - (len(lead) + 1 if lead else 0):
            new_chunk()
            chunks[-1].append(line)
            continue
        column, colon, value = line.partition(": ")
        label = column + colon if colon and len(column) + len(CONTINUED) + 2 <= chunk_chars // 4 else ""
        rest, name = (value, label) if label else (line, "")
        while rest:
            if free() - len(name) < min(100, chunk_chars // 4):  # too little room left here: the piece starts a chunk
                new_chunk()
            piece = _cut(rest, max(1, free() - len(name)))[0]
            chunks[-1].append(name + piece)
            rest = rest[len(piece) :].lstrip()
            name = f"{column}{CONTINUED}: " if label else ""
    return ["\n".join(chunk) for chunk in chunks if chunk and chunk != [lead]]


def _blocks(passages: list[Passage]) -> list[tuple[Passage, list[str]]]:
    """Group neighbouring passages with the same page and section."""
    blocks: list[tuple[Passage, list[str]]] = []
    for passage in passages:
        if not passage.text.strip():
            continue
        if blocks and (blocks[-1][0].page, blocks[-1][0].section) == (passage.page, passage.section):
            blocks[-1][1].append(passage.text)
        else:
            blocks.append((passage, [passage.text]))
    return blocks


def _units(texts: list[str], chunk_chars: int) -> list[_Unit]:
    """Sentences of a block's paragraphs, none longer than chunk_chars."""
    units: list[_Unit] = []
    for text in texts:
        for paragraph in _PARAGRAPH_BREAK.split(text):
            joiner = "\n\n"
            for line in paragraph.strip().split("\n"):
                for sentence in split_sentences(line):
                    for piece in _cut(sentence, chunk_chars):
                        units.append(_Unit(piece, joiner))
                        joiner = " "
                joiner = "\n"
    return units


def split_sentences(text: str) -> list[str]:
    """A line of text as sentences; abbreviations such as "z. B." or "Dr." do not end one."""
    text = " ".join(text.split())
    if not text:
        return []
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start : match.start()].strip()
        last_word = candidate.rsplit(" ", 1)[-1].lower()
        # "z.", "Dr." and German ordinals ("am 3. Oktober", "im 19. Jahrhundert") end no sentence.
        if last_word in _ABBREVIATIONS or re.fullmatch(r"[a-zäöü]\.|\d{1,4}\.", last_word):
            continue
        sentences.append(candidate)
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def _cut(sentence: str, limit: int) -> list[str]:
    """A sentence longer than limit, cut at spaces (or anywhere, for a word longer than limit)."""
    pieces: list[str] = []
    while len(sentence) > limit:
        at = sentence.rfind(" ", 0, limit + 1)
        if at <= 0:
            at = limit
        pieces.append(sentence[:at].rstrip())
        sentence = sentence[at:].lstrip()
    if sentence:
        pieces.append(sentence)
    return pieces


def _joined(units: list[_Unit]) -> str:
    return "".join((u.joiner if i else "") + u.text for i, u in enumerate(units))


def _length(units: list[_Unit]) -> int:
    return len(_joined(units))


def _pack(units: list[_Unit], chunk_chars: int, overlap_chars: int) -> list[str]:
    """Pack units greedily into chunks; each chunk after the first repeats the last sentences of the one before."""
    chunks: list[str] = []
    current: list[_Unit] = []
    fresh = 0  # units in current that no chunk holds yet
    for unit in units:
        if current and _length([*current, unit]) > chunk_chars:
            chunks.append(_joined(current))
            current = _overlap(current, overlap_chars)
            # The overlap must leave room for the new sentence, else it is dropped.
            while current and _length([*current, unit]) > chunk_chars:
                current.pop(0)
            fresh = 0
        current.append(unit)
        fresh += 1
    if current and fresh:
        chunks.append(_joined(current))
    return chunks


def _overlap(units: list[_Unit], overlap_chars: int) -> list[_Unit]:
    """The trailing whole units of a chunk that fit into overlap_chars."""
    tail: list[_Unit] = []
    for unit in reversed(units):
        if _length([unit, *tail]) > overlap_chars:
            break
        tail.insert(0, unit)
    return tail
