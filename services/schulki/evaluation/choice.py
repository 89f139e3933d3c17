"""Multiple-choice scoring by log-likelihood: no generation, no judge model.

Each choice is scored as a continuation of the question,
``"Frage: …\\nAntwort:" + " " + choice``, by the mean log-probability of its
own tokens, and the choice with the highest score is the model's answer.

Why the mean per token and not the sum: the choices of one question differ in
length ("Kupfer" against "Kohlenstoffdioxid und Wasser"), and a sum punishes
every extra token, so a sum-scored model prefers short answers whatever they
say. The mean per token removes that bias; it is also what llama.cpp's own
multiple-choice and HellaSwag scorers use. Because every choice is scored on
its own, with nothing else in the context, the answer cannot depend on the
order in which the choices are listed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from schulki.evaluation.data import Question
from schulki.evaluation.model import EvalModel
from schulki.evaluation.perplexity import EvalCancelled

PROMPT = "Frage: {question}\nAntwort:"


@dataclass(frozen=True)
class Scored:
    """The model's answer to one question: the choice it picked and each choice's mean log-probability."""

    question: Question
    picked: int
    scores: tuple[float, ...]

    @property
    def correct(self) -> bool:
        return self.picked == self.question.answer


@dataclass
class Accuracy:
    """Right answers overall, per subject and per split."""

    correct: int = 0
    total: int = 0
    by_subject: dict[str, list[int]] = field(default_factory=dict)
    by_split: dict[str, list[int]] = field(default_factory=dict)

    def add(self, scored: Scored) -> None:
        self.total += 1
        self.correct += scored.correct
        for key, table in ((scored.question.subject, self.by_subject), (scored.question.split, self.by_split)):
            entry = table.setdefault(key, [0, 0])
            entry[0] += scored.correct
            entry[1] += 1

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        return {
            "correct": self.correct,
            "total": self.total,
            "accuracy": self.accuracy,
            "by_subject": {k: {"correct": c, "total": t} for k, (c, t) in sorted(self.by_subject.items())},
            "by_split": {k: {"correct": c, "total": t} for k, (c, t) in sorted(self.by_split.items())},
        }


def _log_softmax(row: np.ndarray) -> np.ndarray:
    row = np.asarray(row, dtype=np.float32)
    top = row.max()
    return row - top - np.float32(np.log(np.exp(row - top).sum(dtype=np.float64)))


def _shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def score_question(model: EvalModel, question: Question) -> Scored:
    """Mean log-probability per token of each ``" " + choice`` after the question; the highest is the model's answer.

    The question is read once; for each choice only its own tokens are decoded
    after it (the KV cache is cut back to the question in between), which is the
    same computation as reading question and choice together, in a fraction of
    the time. The answer's tokens are those after the longest prefix shared with
    the question alone (a tokenizer may merge across the seam). The first of
    equal scores wins (ties are all but impossible).
    """
    prompt = PROMPT.format(question=question.question)
    context_tokens = model.tokenize(prompt, add_bos=True)
    fulls = [model.tokenize(f"{prompt} {choice}", add_bos=True) for choice in question.choices]
    shared = min(_shared_prefix(context_tokens, full) for full in fulls)
    shared = max(1, min(shared, min(len(full) for full in fulls) - 1))
    model.clear()
    first = _log_softmax(model.decode(fulls[0][:shared], first_output=shared - 1)[-1])
    scores = []
    for full in fulls:
        answer = full[shared:]
        log_probs = [float(first[answer[0]])]
        if len(answer) > 1:
            if not model.keep(shared):  # this memory cannot be cut back: read the question again
                model.clear()
                model.decode(full[:shared], first_output=shared - 1)
            rows = model.decode(answer[:-1], first_output=0, start_pos=shared)
            log_probs += [float(_log_softmax(rows[i])[answer[i + 1]]) for i in range(len(answer) - 1)]
        scores.append(float(np.mean(log_probs)))
    return Scored(question=question, picked=int(np.argmax(scores)), scores=tuple(scores))


def score_questions(
    model: EvalModel,
    questions: Sequence[Question],
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Accuracy, list[Scored]]:
    """Accuracy of the model on a question set, with each question's result."""
    accuracy, results = Accuracy(), []
    for i, question in enumerate(questions):
        if cancel is not None and cancel.is_set():
            raise EvalCancelled()
        scored = score_question(model, question)
        accuracy.add(scored)
        results.append(scored)
        if progress:
            progress(i + 1, len(questions))
    return accuracy, results
