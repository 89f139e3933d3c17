"""A stored document as parts for the chat model: overlap removed, every sentence once, page ranges and sections kept."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from schulki.gateway.documents.parts import estimate_tokens, group_into_parts, part_budget, remove_overlap
from schulki.retrieval.chunking import chunk_document, split_sentences
from schulki.retrieval.documents import ParsedDocument, Passage


@dataclass
class ExportedChunk:
    """What ExportDocument sends for one chunk."""

    text: str
    page: int
    section: str


def synthetic_export(pages: int = 12, sentences_per_page: int = 9) -> tuple[list[ExportedChunk], list[str]]:
    """Chunks as the retrieval service's chunker cuts them (with its sentence overlap), and every sentence of the document."""
    passages, sentences = [], []
    for page in range(1, pages + 1):
        section = f"Kapitel {1 + (page - 1) // 4}"
        page_sentences = [
            f"Auf Seite {page} steht der Satz Nummer {n} über das Thema {section} im Heft." for n in range(1, sentences_per_page + 1)
        ]
        sentences += page_sentences
        # two paragraphs per page
        half = sentences_per_page // 2
        passages.append(
            Passage(text=" ".join(page_sentences[:half]) + "\n\n" + " ".join(page_sentences[half:]), page=page, section=section)
        )
    chunks = chunk_document(ParsedDocument(format="pdf", passages=passages), chunk_chars=300, overlap_chars=120)
    return [ExportedChunk(c.text, c.page, c.section) for c in chunks], sentences


def test_the_synthetic_export_really_overlaps():
    chunks, sentences = synthetic_export()
    repeated = sum(len(split_sentences(c.text.replace("\n", " "))) for c in chunks)
    assert repeated > len(sentences)  # the chunker repeats sentences; the parts must not


@pytest.mark.parametrize("max_tokens", [64, 200, 700, 100_000])
def test_parts_hold_every_sentence_once_in_order_with_their_pages(max_tokens):
    chunks, sentences = synthetic_export()
    parts = group_into_parts(remove_overlap(chunks), max_tokens)
    found = [s for part in parts for piece in part.pieces for s in split_sentences(piece.text.replace("\n", " "))]
    assert found == sentences
    for part in parts:
        pages = [int(s.split()[2]) for piece in part.pieces for s in split_sentences(piece.text.replace("\n", " "))]
        assert (part.first_page, part.last_page) == (min(pages), max(pages))
        assert part.sections == list(dict.fromkeys(f"Kapitel {1 + (p - 1) // 4}" for p in pages))
        assert sum(estimate_tokens(p.joiner + p.text) + 8 + estimate_tokens(p.section) for p in part.pieces) <= max_tokens
    if max_tokens == 100_000:
        assert len(parts) == 1 and parts[0].pages() == "S. 1–12"
    else:
        assert len(parts) > 1
        assert [p.index for p in parts] == list(range(len(parts)))
        # consecutive parts: pages never go backwards
        assert all(a.last_page <= b.first_page for a, b in itertools.pairwise(parts))


def test_paragraphs_and_headings_survive_for_translation():
    chunks, _ = synthetic_export(pages=4)
    (part,) = group_into_parts(remove_overlap(chunks), 100_000)
    segments = part.segments()
    assert [section for section, _ in segments] == ["Kapitel 1"]
    text = segments[0][1]
    assert text.count("\n\n") >= 4 * 2 - 1  # two paragraphs on each page
    marked = part.marked_text()
    assert marked.startswith("[S. 1]") and "## Kapitel 1" in marked and "[S. 4]" in marked


def test_a_sentence_longer_than_a_part_is_cut_and_kept_whole_in_the_sum():
    long = ExportedChunk(" ".join(f"Wort{n}" for n in range(400)), 3, "")
    parts = group_into_parts(remove_overlap([long]), 64)
    assert len(parts) > 1
    assert " ".join(piece.text for part in parts for piece in part.pieces) == long.text
    assert all(part.pages() == "S. 3" for part in parts)


def test_a_context_too_small_is_refused():
    assert part_budget(4096, 300) > 3000
    assert part_budget(4096, 32, 1.5) < part_budget(4096, 32)
    with pytest.raises(ValueError):
        group_into_parts([], part_budget(256, 300))


def test_table_rows_are_one_section_for_translation():
    rows = [ExportedChunk(f"Name: Kind {n}\nNote: {n % 6 + 1}", 0, f"Tabelle1 / Zeile {n}") for n in range(2, 30)]
    (part,) = group_into_parts(remove_overlap(rows), 100_000)
    assert [section for section, _ in part.segments()] == ["Tabelle1"]
    assert part.marked_text().count("## ") == 1 and part.pages() == ""
