"""A stored document as parts that fit the chat model's context: the one place for "document → parts".

ExportDocument gives every chunk of a document with its page and section.
Neighbouring chunks of the same page and section repeat the last whole
sentences of the one before (the retrieval service's overlap, so a search
finds a fact that straddles a cut); that overlap is removed here, so every
sentence appears once. The de-duplicated pieces are then packed, in order,
into parts of at most a given number of tokens; each part knows its first and
last page and its sections, so a summary can name the pages each point comes
from and a translation can keep the headings.

Token counts are estimated from UTF-8 bytes, without asking the model (see
``BYTES_PER_TOKEN``); the inference service still refuses a prompt that does
not fit, so an estimate that is too low ends with a clear error, never with a
cut-off text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

BYTES_PER_TOKEN = 2.0
"""UTF-8 bytes per token assumed when sizing parts. Gemma's and Llama's tokenizers average 3-4 bytes a token on German
and English prose; 2 leaves room for numbers, tables and Cyrillic or Arabic text, which need more tokens per byte."""
PROMPT_OVERHEAD_TOKENS = 160
"""Tokens set aside for the instruction, the chat template and the page and heading markers of a part."""
TABLE_ROW = re.compile(r"\s*/\s*Zeile \d+$")
"""The end of the section the table parser gives each row."""
MIN_PART_TOKENS = 64
"""The smallest part worth a call to the model; a context too small for it is refused."""


def estimate_tokens(text: str) -> int:
    """A generous estimate of the tokens of a text (see BYTES_PER_TOKEN)."""
    return math.ceil(len(text.encode()) / BYTES_PER_TOKEN)


@dataclass
class Piece:
    """A chunk's text without the sentences the chunk before it already holds.

    ``joiner`` is what separates it from the piece before in the same block:
    "\\n\\n" at a paragraph break, "\\n" at a line break, " " inside a paragraph.
    """

    text: str
    page: int
    section: str
    joiner: str = "\n\n"


@dataclass
class Part:
    """Consecutive pieces of a document that fit into one request to the model."""

    index: int
    pieces: list[Piece] = field(default_factory=list)

    @property
    def first_page(self) -> int:
        return min((p.page for p in self.pieces if p.page), default=0)

    @property
    def last_page(self) -> int:
        return max((p.page for p in self.pieces if p.page), default=0)

    @property
    def sections(self) -> list[str]:
        """The part's sections (headings), each once, in order."""
        return list(dict.fromkeys(p.section for p in self.pieces if p.section))

    def pages(self) -> str:
        """The page reference of the part, "S. 3–5" or "S. 3"; empty for a format without pages."""
        return page_reference(self.first_page, self.last_page)

    def segments(self) -> list[tuple[str, str]]:
        """(section, text) for each run of pieces with the same section; paragraphs separated by blank lines."""
        runs: list[tuple[str, str]] = []
        for piece in self.pieces:
            heading = heading_of(piece.section)
            if runs and runs[-1][0] == heading:
                runs[-1] = (heading, runs[-1][1] + piece.joiner + piece.text)
            else:
                runs.append((heading, piece.text))
        return runs

    def marked_text(self) -> str:
        """The part's text with "[S. n]" before each new page and "## heading" before each new section, for the model."""
        lines: list[str] = []
        page, section = None, None
        for piece in self.pieces:
            new_block = piece.page != page or piece.section != section
            if piece.page and piece.page != page:
                lines.append(f"\n[S. {piece.page}]\n")
            if piece.section and heading_of(piece.section) != heading_of(section or ""):
                lines.append(f"\n## {heading_of(piece.section)}\n")
            lines.append(("\n\n" if new_block else piece.joiner) + piece.text)
            page, section = piece.page, piece.section
        return "".join(lines).strip()


def heading_of(section: str) -> str:
    """The heading a section stands for: a table row's section ("Tabelle1 / Zeile 7") stands for its sheet, not a heading per row."""
    return TABLE_ROW.sub("", section)


def page_reference(first: int, last: int) -> str:
    if not first:
        return ""
    return f"S. {first}" if first == last else f"S. {first}–{last}"


def _starts_at_boundary(text: str, length: int) -> bool:
    return length == len(text) or text[length] in " \n"


def remove_overlap(chunks: Sequence[retrieval_pb.DocumentChunk]) -> list[Piece]:
    """The chunks' texts in order with the repeated sentences at the start of each chunk removed.

    ``chunks``: objects with ``text``, ``page`` and ``section`` (DocumentChunk). Only a chunk that follows
    one of the same page and section can start with an overlap (the chunker never overlaps across a page or
    section); the overlap is the longest start of the chunk, ending at a word boundary, that the chunk
    before ends with.
    """
    pieces: list[Piece] = []
    previous = None
    for chunk in chunks:
        text, joiner = chunk.text.strip(), "\n\n"
        if previous is not None and (previous.page, previous.section) == (chunk.page, chunk.section):
            before = previous.text.strip()
            overlap = 0
            for length in range(min(len(before), len(text)), 0, -1):
                if _starts_at_boundary(text, length) and before.endswith(text[:length]):
                    cut = len(before) - length
                    if cut == 0 or before[cut - 1] in " \n":
                        overlap = length
                        break
            if overlap:
                rest = text[overlap:]
                stripped = rest.lstrip(" \n")
                gap = rest[: len(rest) - len(stripped)]
                joiner = "\n\n" if "\n\n" in gap else ("\n" if "\n" in gap else " ")
                text = stripped
            else:
                joiner = "\n\n"
        previous = chunk
        if text:
            pieces.append(Piece(text=text, page=chunk.page, section=chunk.section, joiner=joiner))
    return pieces


def _split_piece(piece: Piece, max_tokens: int) -> list[Piece]:
    """A piece longer than a part, cut after sentences (or at spaces) into pieces that fit."""
    limit = max(int(max_tokens * BYTES_PER_TOKEN), 1)
    pieces: list[Piece] = []
    text, joiner = piece.text, piece.joiner
    while len(text.encode()) > limit:
        window = text.encode()[:limit].decode(errors="ignore")
        ends = [m.end() for m in re.finditer(r"[.!?…]\s", window)]
        at = ends[-1] if ends else window.rfind(" ") + 1
        if at <= 0:
            at = len(window)
        pieces.append(Piece(text[:at].rstrip(), piece.page, piece.section, joiner))
        text, joiner = text[at:].lstrip(), " "
    if text:
        pieces.append(Piece(text, piece.page, piece.section, joiner))
    return pieces


def group_into_parts(pieces: list[Piece], max_tokens: int) -> list[Part]:
    """Pack pieces in order into parts whose text is at most ``max_tokens`` (estimated); no piece is split unless it alone is too long."""
    if max_tokens < MIN_PART_TOKENS:
        raise ValueError(f"a part must hold at least {MIN_PART_TOKENS} tokens, not {max_tokens}")
    parts: list[Part] = []
    current = Part(0)
    used = 0
    for whole in pieces:
        for piece in _split_piece(whole, max_tokens) if estimate_tokens(whole.text) > max_tokens else [whole]:
            # page and heading markers cost a few tokens each
            cost = estimate_tokens(piece.joiner + piece.text) + 8 + estimate_tokens(piece.section)
            if current.pieces and used + cost > max_tokens:
                parts.append(current)
                current, used = Part(len(parts)), 0
            current.pieces.append(piece)
            used += cost
    if current.pieces:
        parts.append(current)
    return parts


def part_budget(context_length: int, answer_tokens: int, answer_per_input: float = 0.0) -> int:
    """The most tokens of document text in a part, for a model with ``context_length`` tokens per sequence.

    The context must hold the instruction, the part and the answer: ``answer_tokens`` plus
    ``answer_per_input`` tokens for each token of the part (a translation is about as long as its source).
    """
    room = context_length - PROMPT_OVERHEAD_TOKENS - answer_tokens
    return int(room / (1.0 + answer_per_input))
