"""The shipped reference data: enough questions across subjects, a held-out part, a licence, clear errors for bad files."""

from __future__ import annotations

from collections import Counter

import pytest
from schulki.evaluation import data


def test_the_question_set_has_over_100_questions_across_school_subjects():
    questions = data.questions()
    assert len(questions) >= 100
    subjects = Counter(q.subject for q in questions)
    assert len(subjects) >= 10 and min(subjects.values()) >= 5
    assert len({q.id for q in questions}) == len(questions)
    for q in questions:
        assert len(q.choices) == 4 and len(set(q.choices)) == 4 and 0 <= q.answer < 4
    # the right answer is not always in the same place
    assert len(Counter(q.answer for q in questions)) == 4


def test_a_held_out_part_is_kept_apart_from_what_tests_use():
    dev, heldout = data.questions("dev"), data.questions("heldout")
    assert dev and len(heldout) >= len(dev)
    assert not {q.id for q in dev} & {q.id for q in heldout}
    assert len(dev) + len(heldout) == len(data.questions())


def test_the_data_carries_its_licence():
    licence = data.DATA.joinpath("LICENSE").read_text(encoding="utf-8")
    readme = data.DATA.joinpath("README.md").read_text(encoding="utf-8")
    assert "Apache License, Version 2.0" in licence and "written for schulki" in licence
    assert "Apache-2.0" in readme


def test_the_reference_text_loses_one_trailing_newline_as_llama_perplexity_reads_it(tmp_path):
    shipped = data.reference_text()
    assert len(shipped.text) > 20_000 and not shipped.text.endswith("\n")
    own = tmp_path / "text.txt"
    own.write_text("Erste Zeile.\n\n", encoding="utf-8")
    assert data.reference_text(own).text == "Erste Zeile.\n"


def test_a_bad_question_file_is_refused_with_its_line(tmp_path):
    bad = tmp_path / "fragen.jsonl"
    bad.write_text(
        '{"id": "a", "subject": "Mathe", "question": "1+1?", "choices": ["2", "3"], "answer": 0}\n'
        '{"id": "b", "subject": "Mathe", "question": "2+2?", "choices": ["4"], "answer": 3}\n',
        encoding="utf-8",
    )
    with pytest.raises(data.DataError, match=r"fragen\.jsonl:2"):
        data.questions(path=bad)
    with pytest.raises(data.DataError, match="split"):
        data.questions("test")
