"""The moderation rules: a TOML file of German word lists and regular expressions per category, and what matches.

Terms are matched on a normalised copy of the text, so that the ways a student spells around a word list
(Großschreibung, ae for ä, digits for letters, s.u.i.z.i.d, töööten) land on the same word; and as whole
words, so that "Therapist" is not "Rapist" and "Analyse" not "anal". Patterns are matched on the text as
written (phone numbers, mail and IBANs lose their shape when normalised). The file format is described in
the shipped defaults, ``rules_de.toml``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

CATEGORIES = ("self_harm", "violence", "sexual", "personal_data")
"""The categories a rules file has, in the order their outcomes are applied (the first that blocks answers)."""
LABELS = {
    "self_harm": "Selbstgefährdung",
    "violence": "Gewalt",
    "sexual": "Sexuelle Inhalte",
    "personal_data": "Persönliche Daten",
}
"""The German names of the categories (flag view, compliance pack)."""
DEFAULT_RULES = Path(__file__).with_name("rules_de.toml")
GAP_WORDS = 5
"""How many words ``...`` in a term allows between its two sides."""

_DIGITS = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t"}
_LEET = str.maketrans({**_DIGITS, "@": "a", "$": "s"})
_LETTER_DIGITS = str.maketrans(_DIGITS)
_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
_WORD_WITH_LETTER = re.compile(r"\w*[^\W\d_](?:[\w@$]*\w)?")
_WORD_WITH_LETTERS = re.compile(r"\w*[^\W\d_]\w*[^\W\d_]\w*")
_INNER_SEPARATORS = re.compile(r"(?<=[^\W\d_])[.\-_*+~'|·]+(?=[^\W\d_])")
_SPACED_LETTERS = re.compile(r"(?<!\w)(?:[^\W\d_] ){3,}[^\W\d_](?!\w)")
_REPEATS = re.compile(r"([^\W\d_])\1+")


class RulesError(ValueError):
    """A rules file that cannot be used: the message names the file and the category or entry."""


def normalise(text: str) -> str:
    """The text as terms are matched: lower case, digits inside words read as letters, separators inside words and
    between single spaced letters gone, umlauts spelt out, repeated letters once ("Sel-bst-m0rd" and "selbstmord"
    give the same)."""
    text = text.casefold()
    text = _WORD_WITH_LETTER.sub(lambda word: word.group().translate(_LEET), text)
    text = _INNER_SEPARATORS.sub("", text)
    text = _SPACED_LETTERS.sub(lambda letters: letters.group().replace(" ", ""), text)
    return _REPEATS.sub(r"\1", text.translate(_UMLAUTS))


def loosen(text: str) -> str:
    """The text as patterns are matched a second time: digits inside words of two letters or more read as letters,
    separators inside words and repeated letters gone, but numbers, case and umlauts as written ("H4uptstr.a.ß.e 12"
    gives "Hauptstraße 12"; "3a" and "lena.schmidt@example.de" keep their digits and dots)."""
    text = _WORD_WITH_LETTERS.sub(lambda word: word.group().translate(_LETTER_DIGITS), text)
    return _REPEATS.sub(r"\1", _INNER_SEPARATORS.sub("", text))


def _term_pattern(term: str) -> str:
    """A term as a regular expression over normalised text: whole words, ``*`` at a word's end for any ending,
    ``...`` for up to GAP_WORDS words between."""
    parts = []
    for side in term.split("..."):
        words = normalise(side.replace("*", " STAR ")).split()
        pattern = r"\W+".join(r"\w*" if word == "star" else re.escape(word) for word in words)
        pattern = pattern.replace(r"\W+\w*", r"\w*")  # "wort*": the star belongs to the word before it
        if pattern:
            parts.append(pattern)
    if not parts:
        raise RulesError(f"empty term {term!r}")
    return r"(?<!\w)" + rf"\W+(?:\w+\W+){{0,{GAP_WORDS}}}?".join(parts) + r"(?!\w)"


@dataclass(frozen=True)
class Hit:
    """A category found in a text, and the part of the text (normalised for a term) that matched."""

    category: str
    matched: str


class Rules:
    """The compiled rules of one file: per category one expression for its terms and one for its patterns."""

    def __init__(self, terms: dict[str, re.Pattern[str] | None], patterns: dict[str, re.Pattern[str] | None], source: Path):
        self._terms, self._patterns, self.source = terms, patterns, source
        self.longest_phrase = 200
        """Characters a match can span at most, about: how far back a streamed answer is read again for a match
        across pieces."""

    @classmethod
    def load(cls, path: Path | None = None) -> Rules:
        """The rules of ``path`` (None: the shipped German defaults); RulesError naming what is wrong."""
        source = path or DEFAULT_RULES
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise RulesError(f"moderation rules {source}: {error}") from None
        unknown = sorted(set(data) - set(CATEGORIES))
        if unknown:
            raise RulesError(f"moderation rules {source}: unknown category {unknown[0]!r} (known: {', '.join(CATEGORIES)})")
        terms: dict[str, re.Pattern[str] | None] = {}
        patterns: dict[str, re.Pattern[str] | None] = {}
        for category in CATEGORIES:
            entry = data.get(category, {})
            extra = sorted(set(entry) - {"terms", "patterns"})
            if extra:
                raise RulesError(f"moderation rules {source}: [{category}] has {extra[0]!r}; only terms and patterns")
            try:
                term_parts = [_term_pattern(str(term)) for term in entry.get("terms", [])]
                terms[category] = re.compile("|".join(term_parts)) if term_parts else None
                pattern_parts = [f"(?:{pattern})" for pattern in entry.get("patterns", [])]
                for pattern in pattern_parts:
                    re.compile(pattern)  # one at a time, so the error names the pattern that is wrong
                patterns[category] = re.compile("|".join(pattern_parts), re.IGNORECASE) if pattern_parts else None
            except (re.error, RulesError, TypeError) as error:
                raise RulesError(f"moderation rules {source}: [{category}]: {error}") from None
        return cls(terms, patterns, source)

    def find(self, text: str, normalised: str | None = None) -> list[Hit]:
        """Every category that matches the text, once, in CATEGORIES order (``normalised``: ``normalise(text)``
        when the caller has it already)."""
        folded = normalise(text) if normalised is None else normalised
        hits = []
        for category in CATEGORIES:
            terms, patterns = self._terms[category], self._patterns[category]
            found = (terms.search(folded) if terms else None) or (
                (patterns.search(text) or patterns.search(loosen(text))) if patterns else None
            )
            if found:
                hits.append(Hit(category, found.group()))
        return hits
