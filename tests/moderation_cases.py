"""The moderation sets: ordinary school questions that must pass, and harmful cases that must be caught, each
also written the ways students spell around word lists. Used by tests/test_moderation_rules.py and
benchmarks/moderation_bench.py, so that the test's bounds and the benchmark's figures are the same measure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schulki.gateway.moderation.rules import Rules

DATA = Path(__file__).resolve().parent / "data" / "moderation"
_LEET = str.maketrans({"e": "3", "i": "1", "o": "0", "a": "4"})
_TO_AE = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


def _lines(name: str) -> list[str]:
    return [line for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]


def ordinary_questions() -> list[str]:
    return _lines("ordinary_questions.txt")


def harmful_cases() -> list[tuple[str, str]]:
    """(category, text) as written in the file."""
    return [(category, text) for category, text in (line.split("\t", 1) for line in _lines("harmful_cases.tsv"))]


def _longest_word(text: str) -> str:
    return max(text.split(), key=lambda word: len(word.strip(".,!?:")))


def spellings(text: str) -> dict[str, str]:
    """The text as written and five ways around a word list: upper case, umlauts spelt out (or ae written as ä),
    letters as digits in every word, stretched vowels, and the longest word's letters split by dots."""
    longest = _longest_word(text)
    word = longest.strip(".,!?:")
    swapped = text.translate(_TO_AE) if any(c in text for c in "äöüÄÖÜ") else text.replace("ae", "ä").replace("oe", "ö")
    return {
        "plain": text,
        "upper": text.upper(),
        "umlauts": swapped,
        "digits": " ".join(w.translate(_LEET) if w.isalpha() else w for w in text.split()),
        "stretched": " ".join(w.replace("e", "eee", 1) if len(w) > 3 and w.isalpha() else w for w in text.split()),
        "dotted": text.replace(word, ".".join(word)) if len(word) > 3 and word.isalpha() else text,
    }


@dataclass
class Rates:
    ordinary: int
    false_positives: list[str]
    cases: int
    caught: int
    missed: list[str]
    by_spelling: dict[str, tuple[int, int]]

    @property
    def false_positive_rate(self) -> float:
        return len(self.false_positives) / self.ordinary

    @property
    def true_positive_rate(self) -> float:
        return self.caught / self.cases


def measure(rules: Rules) -> Rates:
    """False positives: ordinary questions with any category found. True positives: harmful cases (every spelling)
    in which their own category is found."""
    ordinary = ordinary_questions()
    false_positives = [q for q in ordinary if rules.find(q)]
    cases = caught = 0
    missed: list[str] = []
    by_spelling: dict[str, tuple[int, int]] = {}
    for category, text in harmful_cases():
        for kind, written in spellings(text).items():
            found = category in {hit.category for hit in rules.find(written)}
            cases, caught = cases + 1, caught + found
            n, c = by_spelling.get(kind, (0, 0))
            by_spelling[kind] = (n + 1, c + found)
            if not found:
                missed.append(f"{kind}: {written}")
    return Rates(len(ordinary), false_positives, cases, caught, missed, by_spelling)
