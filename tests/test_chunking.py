"""Chunking along paragraphs and sentences, with overlap, within pages and sections."""

from __future__ import annotations

import itertools

import pytest
from schulki.retrieval.chunking import chunk_document, split_sentences
from schulki.retrieval.documents import ParsedDocument, Passage

SENTENCES = [
    f"Satz {i} erzählt von der Klassenfahrt nach {city}."
    for i, city in enumerate(["Berlin", "Hamburg", "München", "Köln", "Dresden", "Leipzig", "Bremen", "Kiel", "Ulm", "Trier"])
]


def document(*passages: Passage) -> ParsedDocument:
    return ParsedDocument(format="txt", passages=list(passages))


def test_sentences_are_packed_up_to_the_size_and_neighbours_overlap():
    text = " ".join(SENTENCES[:5]) + "\n\n" + " ".join(SENTENCES[5:])
    chunks = chunk_document(document(Passage(text)), chunk_chars=150, overlap_chars=60)
    assert len(chunks) > 3
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert len(chunk.text) <= 150
    # Every sentence is whole in some chunk, in order.
    for sentence in SENTENCES:
        assert any(sentence in c.text for c in chunks), sentence
    # Each chunk begins with the last sentence of the chunk before (the overlap) and adds something new.
    for before, after in itertools.pairwise(chunks):
        first = split_sentences(after.text.replace("\n", " "))[0]
        assert before.text.endswith(first)
        assert not before.text.endswith(after.text)


def test_without_overlap_the_chunks_are_the_text_cut_at_sentences():
    text = " ".join(SENTENCES)
    chunks = chunk_document(document(Passage(text)), chunk_chars=120, overlap_chars=0)
    assert " ".join(c.text for c in chunks) == text
    assert all(c.text.endswith(".") for c in chunks)


def test_a_paragraph_break_is_kept_inside_a_chunk():
    chunks = chunk_document(document(Passage("Erster Absatz."), Passage("Zweiter Absatz.\n\nDritter Absatz.")), 200, 20)
    assert [c.text for c in chunks] == ["Erster Absatz.\n\nZweiter Absatz.\n\nDritter Absatz."]


def test_chunks_never_cross_a_page_or_section_and_keep_both():
    doc = document(
        Passage("Seite eins, Teil A.", page=1, section="A"),
        Passage("Noch Teil A auf Seite eins.", page=1, section="A"),
        Passage("Seite zwei, Teil A.", page=2, section="A"),
        Passage("Seite zwei, Teil B.", page=2, section="B"),
    )
    chunks = chunk_document(doc, chunk_chars=1000, overlap_chars=200)
    assert [(c.page, c.section, c.text) for c in chunks] == [
        (1, "A", "Seite eins, Teil A.\n\nNoch Teil A auf Seite eins."),
        (2, "A", "Seite zwei, Teil A."),
        (2, "B", "Seite zwei, Teil B."),
    ]


def test_a_sentence_longer_than_a_chunk_is_cut_at_spaces_and_a_huge_word_anywhere():
    long_sentence = " ".join(["Donaudampfschifffahrt"] * 20)
    chunks = chunk_document(document(Passage(long_sentence)), chunk_chars=100, overlap_chars=0)
    assert all(len(c.text) <= 100 for c in chunks)
    assert all(not c.text.startswith(" ") and not c.text.endswith(" ") for c in chunks)
    assert " ".join(c.text for c in chunks) == long_sentence
    word = "x" * 250
    assert [len(c.text) for c in chunk_document(document(Passage(word)), 100, 10)] == [100, 100, 50]


def test_german_abbreviations_and_numbers_do_not_end_a_sentence():
    text = "Wir lesen z. B. Goethe. Dr. Müller kommt am 3. Oktober um 8 Uhr. Was bringt ihr mit? Äpfel!"
    assert split_sentences(text) == ["Wir lesen z. B. Goethe.", "Dr. Müller kommt am 3. Oktober um 8 Uhr.", "Was bringt ihr mit?", "Äpfel!"]


def test_empty_passages_give_no_chunks_and_bad_sizes_are_refused():
    assert chunk_document(document(Passage("   "), Passage("")), 100, 10) == []
    for size, overlap in ((0, 0), (100, 100), (100, -1)):
        with pytest.raises(ValueError):
            chunk_document(document(Passage("Text.")), size, overlap)
