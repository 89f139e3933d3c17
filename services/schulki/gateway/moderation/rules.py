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
PATTERN_CHARS = 80
"""Characters a pattern's match spans at most, about (an IBAN with its spaces is 34 and more): how far back a
streamed answer is read again for the patterns."""
GAP_WORDS = 5
PREFIX_KEY = 4
"""Letters of a prefix term (``porno*``) it is looked up by: a word is compared with the few terms that share its start."""
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
_STRETCHED = re.compile(r"([^\W\d_])\1{2,}")
_WORD = re.compile(r"\w+")
_ANY_DIGIT = re.compile(r"\d")
_HAS_LEET = re.compile(r"[\d@$]")


class RulesError(ValueError):
    """A rules file that cannot be used: the message names the file and the category or entry."""


def normalise(text: str) -> str:
    """The text as terms are matched: lower case, digits inside words read as letters, separators inside words and
    between single spaced letters gone, umlauts spelt out, repeated letters once ("Sel-bst-m0rd" and "selbstmord"
    give the same)."""
    text = text.casefold()
    if _HAS_LEET.search(text):  # most text has no digit, @ or $ in a word: skip the word-by-word pass
        text = _WORD_WITH_LETTER.sub(lambda word: word.group().translate(_LEET), text)
    text = _INNER_SEPARATORS.sub("", text)
    text = _SPACED_LETTERS.sub(lambda letters: letters.group().replace(" ", ""), text)
    return _REPEATS.sub(r"\1", text.translate(_UMLAUTS))


def words(text: str) -> list[str]:
    """The normalised words of a text, as terms are matched against them."""
    return _WORD.findall(normalise(text))


def loosen(text: str) -> str:
    """The text as patterns are matched a second time: digits inside words of two letters or more read as letters,
    separators inside words and letters written three times or more once, but numbers, case and umlauts as written ("H4uptstr.a.ß.e 12"
    gives "Hauptstraße 12"; "3a" and "lena.schmidt@example.de" keep their digits and dots)."""
    if _ANY_DIGIT.search(text):
        text = _WORD_WITH_LETTERS.sub(lambda word: word.group().translate(_LETTER_DIGITS), text)
    return _STRETCHED.sub(r"\1", _INNER_SEPARATORS.sub("", text))


Side = tuple[tuple[str, bool], ...]
"""Words of a term between gaps: each word as normalised, and whether it stands for every word it begins (``wort*``)."""


def _term(term: str) -> tuple[Side, ...]:
    """A term as the word sequences it is made of (split at ``...``); RulesError for one without words."""
    sides = []
    for side in term.split("..."):
        words = normalise(side.replace("*", "\x00")).replace("\x00", "*").split()
        words = [w for word in words for w in _WORD.findall(word.rstrip("*")) + (["*"] if word.endswith("*") else [])]
        parsed: list[tuple[str, bool]] = []
        for word in words:
            if word == "*":
                if not parsed:
                    raise RulesError(f"term {term!r}: * stands only at the end of a word")
                parsed[-1] = (parsed[-1][0], True)
            else:
                parsed.append((word, False))
        if parsed:
            sides.append(tuple(parsed))
    if not sides:
        raise RulesError(f"empty term {term!r}")
    return tuple(sides)


def _side_at(words: list[str], index: int, side: Side) -> bool:
    if index + len(side) > len(words):
        return False
    return all(words[index + k].startswith(w) if prefix else words[index + k] == w for k, (w, prefix) in enumerate(side))


class _Terms:
    """One category's terms, indexed by their first word: reading a text costs a dictionary look-up per word, not a
    regular expression per term (a combined expression of sixty terms took about a millisecond per 200 characters)."""

    def __init__(self, terms: list[str]) -> None:
        self._exact: dict[str, list[tuple[str, tuple[Side, ...]]]] = {}
        self._prefixed: dict[str, list[tuple[str, tuple[Side, ...]]]] = {}
        """Terms whose first word is a prefix (``porno*``), by the prefix's first PREFIX_KEY letters."""
        self.longest = 1
        for term in terms:
            sides = _term(term)
            first, prefix = sides[0][0]
            if prefix:
                self._prefixed.setdefault(first[:PREFIX_KEY], []).append((term, sides))
            else:
                self._exact.setdefault(first, []).append((term, sides))
            self.longest = max(self.longest, sum(len(side) for side in sides) + GAP_WORDS * (len(sides) - 1))

    def find(self, words: list[str]) -> str | None:
        """The first term found in the words (normalised, in order), or None."""
        for index, word in enumerate(words):
            candidates = self._exact.get(word, [])
            if self._prefixed:
                for key in {word[:length] for length in range(1, PREFIX_KEY + 1)}:
                    candidates = candidates + self._prefixed.get(key, [])
            for term, sides in candidates:
                if _match(words, index, sides):
                    return term
        return None


def _match(words: list[str], index: int, sides: tuple[Side, ...]) -> bool:
    if not _side_at(words, index, sides[0]):
        return False
    position = index + len(sides[0])
    for side in sides[1:]:  # each further side within GAP_WORDS words of the one before (the nearest)
        found = next((at for at in range(position, min(position + GAP_WORDS, len(words)) + 1) if _side_at(words, at, side)), None)
        if found is None:
            return False
        position = found + len(side)
    return True


@dataclass(frozen=True)
class Hit:
    """A category found in a text, and the part of the text (normalised for a term) that matched."""

    category: str
    matched: str


class Rules:
    """The compiled rules of one file: per category its terms (indexed by first word) and one expression for its patterns."""

    def __init__(self, terms: dict[str, _Terms | None], patterns: dict[str, re.Pattern[str] | None], source: Path):
        self._terms, self._patterns, self.source = terms, patterns, source
        self.longest_words = max((t.longest for t in terms.values() if t), default=1)
        """Words a term spans at most (gaps included): how many words back a streamed answer is read again."""

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
        terms: dict[str, _Terms | None] = {}
        patterns: dict[str, re.Pattern[str] | None] = {}
        for category in CATEGORIES:
            entry = data.get(category, {})
            extra = sorted(set(entry) - {"terms", "patterns"})
            if extra:
                raise RulesError(f"moderation rules {source}: [{category}] has {extra[0]!r}; only terms and patterns")
            try:
                listed = [str(term) for term in entry.get("terms", [])]
                terms[category] = _Terms(listed) if listed else None
                pattern_parts = [f"(?:{pattern})" for pattern in entry.get("patterns", [])]
                for pattern in pattern_parts:
                    re.compile(pattern)  # one at a time, so the error names the pattern that is wrong
                patterns[category] = re.compile("|".join(pattern_parts), re.IGNORECASE) if pattern_parts else None
            except (re.error, RulesError, TypeError) as error:
                raise RulesError(f"moderation rules {source}: [{category}]: {error}") from None
        return cls(terms, patterns, source)

    def find(self, text: str) -> list[Hit]:
        """Every category that matches the text, once, in CATEGORIES order."""
        return self.find_in(words(text), text)

    def find_in(self, words: list[str], text: str) -> list[Hit]:
        """Every category whose terms match ``words`` (normalised) or whose patterns match ``text`` (as written):
        a streamed answer gives its last words and characters only."""
        hits = []
        loose: str | None = None
        for category in CATEGORIES:
            terms, patterns = self._terms[category], self._patterns[category]
            found = terms.find(words) if terms else None
            if found is None and patterns is not None:
                match = patterns.search(text)
                if match is None:
                    loose = loosen(text) if loose is None else loose
                    match = patterns.search(loose) if loose != text else None
                found = match.group() if match else None
            if found is not None:
                hits.append(Hit(category, found))
        return hits
