"""The reference data shipped with schulki: a German text and a multiple-choice question set.

Both were written for schulki (Apache-2.0, see ``data/LICENSE``). The questions
carry a split: ``dev`` questions may be used by tests, ``heldout`` questions
are read by no test, so nothing is tuned on them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

DATA = files("schulki.evaluation").joinpath("data")
TEXT_NAME = "referenztext.de.txt"
QUESTIONS_NAME = "fragen.de.jsonl"
SPLITS = ("all", "dev", "heldout")


class DataError(ValueError):
    """A reference text or question file is unusable; the message says where."""


@dataclass(frozen=True)
class Question:
    """One multiple-choice question with its choices and the index of the right one."""

    id: str
    subject: str
    question: str
    choices: tuple[str, ...]
    answer: int
    split: str = "dev"

    @property
    def right(self) -> str:
        return self.choices[self.answer]


@dataclass(frozen=True)
class ReferenceText:
    """A text to measure perplexity on, with a short fingerprint so results name what they were measured on."""

    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _load(path: Path | None, shipped: str, german: str, english: str) -> tuple[str, str]:
    """The name and content of the admin's file, or of the shipped one when ``path`` is None; the names say what it is."""
    if path is None:
        return shipped, DATA.joinpath(shipped).read_text(encoding="utf-8")
    try:
        return path.name, path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{german} nicht lesbar ({english} not readable): {path}: {error}") from None


def reference_text(path: Path | None = None) -> ReferenceText:
    """The shipped German reference text, or a text file the admin names.

    One trailing newline is dropped, as ``llama-perplexity -f`` drops it, so
    both tokenize the same text.
    """
    name, text = _load(path, TEXT_NAME, "Referenztext", "reference text")
    if text.endswith("\n"):
        text = text[:-1]
    if not text.strip():
        raise DataError(f"Referenztext ist leer (reference text is empty): {name}")
    return ReferenceText(name=name, text=text)


def parse_question(line: str, where: str) -> Question:
    """One question from one JSON line; DataError says which line is wrong and why."""
    try:
        raw = json.loads(line)
        choices = tuple(str(c) for c in raw["choices"])
        question = Question(
            id=str(raw["id"]),
            subject=str(raw["subject"]),
            question=str(raw["question"]),
            choices=choices,
            answer=int(raw["answer"]),
            split=str(raw.get("split", "dev")),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{where}: keine gültige Frage (not a valid question): {error}") from None
    if len(choices) < 2 or not 0 <= question.answer < len(choices):
        raise DataError(
            f"{where}: braucht mindestens zwei Antworten und einen gültigen Index (needs two or more choices and a valid answer index)"
        )
    if len(set(choices)) != len(choices):
        raise DataError(f"{where}: Antworten doppelt (duplicate choices)")
    return question


def questions(split: str = "all", path: Path | None = None) -> list[Question]:
    """The shipped question set (or the admin's own file), all of it or one split."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    name, content = _load(path, QUESTIONS_NAME, "Fragen", "questions")
    found = [parse_question(line, f"{name}:{n}") for n, line in enumerate(content.splitlines(), 1) if line.strip()]
    ids = [q.id for q in found]
    if len(set(ids)) != len(ids):
        raise DataError(f"{name}: Frage-IDs doppelt (duplicate question ids)")
    return [q for q in found if split in ("all", q.split)]
