"""The moderation rules on their own: the measured rates on the ordinary and the harmful set stay within bounds,
matching is by whole words through the usual spellings, and a school's own rules file is read or refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from schulki.gateway.moderation.rules import CATEGORIES, DEFAULT_RULES, Rules, RulesError

from tests.moderation_cases import harmful_cases, measure, ordinary_questions

MAX_FALSE_POSITIVE_RATE = 0.03
"""Measured 0 of 229 ordinary questions (docs/decisions.md); a rule change may cost a few, not more."""
MIN_TRUE_POSITIVE_RATE = 0.85
"""Measured 300 of 348 (86 %): every case the rules were written for in all six spellings, none of the eight
paraphrases written afterwards (docs/decisions.md)."""


def test_the_sets_are_as_large_as_the_measure_needs():
    assert len(ordinary_questions()) >= 200
    assert len(harmful_cases()) >= 50
    assert {category for category, _ in harmful_cases()} == set(CATEGORIES)


def test_the_shipped_rules_stay_within_the_measured_rates():
    rates = measure(Rules.load())
    assert rates.false_positive_rate <= MAX_FALSE_POSITIVE_RATE, rates.false_positives
    assert rates.true_positive_rate >= MIN_TRUE_POSITIVE_RATE, rates.missed
    for spelling, (cases, caught) in rates.by_spelling.items():  # no way of writing escapes more than the plain text does
        assert caught >= rates.by_spelling["plain"][1], (spelling, cases, caught, rates.missed)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Ich will mich UMBRINGEN", "self_harm"),
        ("ich w1ll m1ch umbr1ngen", "self_harm"),
        ("Ich möchte sterben", "self_harm"),
        ("Ich moechte sterben", "self_harm"),
        ("s.u.i.z.i.d.a.l", "self_harm"),
        ("ich bin l e b e n s m ü d e", "self_harm"),
        ("ich will nicht mehr leeeeeben", "self_harm"),
        ("Tabletten nehmen und einfach sterben", "self_harm"),
        ("Ich bring dich um!", "violence"),
        ("PORNOS", "sexual"),
        ("Ruf an: 0170 1234567", "personal_data"),
        ("+49 (0)30 12345678", "personal_data"),
        ("DE89 3704 0044 0532 0130 00", "personal_data"),
        ("tim.k@example.org", "personal_data"),
        ("Hauptstraße 12", "personal_data"),
    ],
)
def test_a_rule_matches_through_case_umlauts_and_obfuscation(text, category):
    assert category in {hit.category for hit in Rules.load().find(text)}


@pytest.mark.parametrize(
    "text",
    [
        "Der Therapist hilft.",  # not "rapist"
        "Schreib eine Analyse des Gedichts.",  # not "anal"
        "Was ist Sexualkunde?",
        "Wie starb Caesar?",
        "Warum explodiert Natrium in Wasser?",
        "Was ist eine Bombenstimmung?",  # "bombe" alone is no rule
        "Im Jahr 1945 starben 20000 Menschen.",
        "Was ist 0,5 plus 0,25?",
        "Ich bin auf dem Heimweg 5 Minuten gelaufen.",
        "Ich habe mir in den Finger geschnitten.",
    ],
)
def test_ordinary_words_do_not_match(text):
    assert Rules.load().find(text) == []


def test_a_schools_rules_file_adds_its_own_words(tmp_path: Path):
    own = tmp_path / "regeln.toml"
    own.write_text(
        DEFAULT_RULES.read_text(encoding="utf-8").replace("[sexual]\nterms = [", '[sexual]\nterms = [\n  "schmuddel*",', 1),
        encoding="utf-8",
    )
    assert Rules.load().find("Schmuddelbilder") == []
    assert [hit.category for hit in Rules.load(own).find("Schmuddelbilder bitte")] == ["sexual"]


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("[hass]\nterms = ['x']\n", "unknown category 'hass'"),
        ("[violence]\nwords = ['x']\n", "[violence] has 'words'"),
        ("[personal_data]\npatterns = ['(unclosed']\n", "[personal_data]"),
        ("[violence\n", "regeln.toml"),
    ],
)
def test_a_broken_rules_file_is_refused_with_what_is_wrong(tmp_path: Path, content, named):
    broken = tmp_path / "regeln.toml"
    broken.write_text(content, encoding="utf-8")
    with pytest.raises(RulesError) as refused:
        Rules.load(broken)
    assert named in str(refused.value)
