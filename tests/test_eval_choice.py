"""The multiple-choice scorer on the real default model: questions it cannot miss, and answers in every position."""

from __future__ import annotations

from dataclasses import replace

import pytest
from schulki.evaluation import data
from schulki.evaluation.choice import score_question, score_questions
from schulki.evaluation.data import Question
from schulki.evaluation.model import EvalModel

from tests.eval_support import THREADS, default_model

# The right answer repeats what the question says; the others are letter salad no German text contains.
CANNOT_MISS = [
    Question(
        "sicher-1",
        "Test",
        "Wiederhole bitte genau: Guten Morgen, liebe Klasse!",
        ("Guten Morgen, liebe Klasse!", "Xqzv Jkwp Bdfg!", "Zzrrt qqq wvvx!", "Ptkx vbnm zzq!"),
        0,
    ),
    Question(
        "sicher-2",
        "Test",
        "Montag, Dienstag, Mittwoch, Donnerstag, Freitag, Samstag und welcher Tag?",
        ("Sonntag", "Qwxzj", "Bvvkq", "Xxyzw"),
        0,
    ),
    Question("sicher-3", "Test", "Das Wort heißt Schule. Wie heißt das Wort?", ("Schule", "Kxqpw", "Zjvbt", "Wqqxz"), 0),
    Question(
        "sicher-4",
        "Test",
        "Die Hauptstadt von Deutschland ist Berlin. Was ist die Hauptstadt von Deutschland?",
        ("Berlin", "Qzxvw", "Jjkqp", "Xwvbz"),
        0,
    ),
]
SUBSET = 12
"""Dev questions used here (the held-out ones are never read by a test)."""


@pytest.fixture(scope="module")
def model():
    with EvalModel(default_model(), context=256, threads=THREADS) as loaded:
        yield loaded


def rotations(question: Question) -> list[Question]:
    """The question with its choices rotated, so the right answer stands once in every position."""
    n = len(question.choices)
    out = []
    for shift in range(n):
        choices = question.choices[shift:] + question.choices[:shift]
        out.append(replace(question, choices=choices, answer=(question.answer - shift) % n))
    return out


def test_questions_the_model_cannot_miss_are_answered_right_wherever_the_answer_stands(model):
    for question in CANNOT_MISS:
        for rotated in rotations(question):
            scored = score_question(model, rotated)
            assert scored.correct, f"{rotated.id}: picked {rotated.choices[scored.picked]!r} with {scored.scores}"
            assert rotated.answer in range(4)


def test_the_accuracy_does_not_depend_on_the_position_of_the_right_answer(model):
    questions = data.questions("dev")[:SUBSET]
    picked_by_position = []
    for position in range(4):
        placed = []
        for q in questions:
            # move the right answer to `position`, keeping the others in their order
            others = [c for i, c in enumerate(q.choices) if i != q.answer]
            choices = tuple([*others[:position], q.right, *others[position:]])
            placed.append(replace(q, choices=choices, answer=position))
        accuracy, results = score_questions(model, placed)
        picked_by_position.append(([r.question.choices[r.picked] for r in results], accuracy.correct))
    texts = [p[0] for p in picked_by_position]
    assert all(t == texts[0] for t in texts), "the picked answer changed with the order of the choices"
    assert len({p[1] for p in picked_by_position}) == 1
    print(f"default model, {SUBSET} dev questions: {picked_by_position[0][1]} right in every position")


def test_scores_are_mean_log_probabilities_per_token(model):
    scored = score_question(model, CANNOT_MISS[1])
    assert all(s < 0 for s in scored.scores)
    # one short right word against letter salad of the same length: the right word is far more likely per token
    assert scored.scores[0] > max(scored.scores[1:]) + 1.0
