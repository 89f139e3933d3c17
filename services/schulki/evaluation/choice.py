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
        return {"correct": self.correct, "total": self.total, "accuracy": self.accuracy,
                "by_subject": {k: {"correct": c, "total": t} for k, (c, t) in sorted(self.by_subject.items())},
                "by_split": {k: {"correct": c, "total": t} for k, (c, t) in sorted(self.by_split.items())}}


def choice_log_prob(model: EvalModel, prompt: str, choice: str) -> float:
    """Mean log-probability per token of ``" " + choice`` after the prompt."""
    context_tokens = model.tokenize(prompt, add_bos=True)
    full = model.tokenize(f"{prompt} {choice}", add_bos=True)
    # The answer's tokens are those after the longest common prefix (a tokenizer may merge across the seam).
    shared = 0
    while shared < min(len(context_tokens), len(full)) and context_tokens[shared] == full[shared]:
        shared += 1
    shared = max(1, min(shared, len(full) - 1))
    model.clear()
    logits = model.decode(full, first_output=shared - 1)
    rows = np.asarray(logits[: len(full) - shared], dtype=np.float32)
    targets = np.asarray(full[shared:])
    top = rows.max(axis=1)
    log_sum = np.log(np.exp(rows - top[:, None]).sum(axis=1, dtype=np.float64))
    log_probs = rows[np.arange(len(rows)), targets] - top - log_sum
    return float(log_probs.mean())


def score_question(model: EvalModel, question: Question) -> Scored:
    """Score every choice of one question; the first of equal scores wins (ties are all but impossible)."""
    prompt = PROMPT.format(question=question.question)
    scores = tuple(choice_log_prob(model, prompt, choice) for choice in question.choices)
    return Scored(question=question, picked=int(np.argmax(scores)), scores=scores)


def score_questions(model: EvalModel, questions: Sequence[Question], progress: Callable[[int, int], None] | None = None,
                    cancel: threading.Event | None = None) -> tuple[Accuracy, list[Scored]]:
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
