"""The "Wie denkt die KI?" tab's arithmetic: bars, words from tokens, perplexity per word, the most surprising word."""

from __future__ import annotations

import math

from schulki.gateway.ui.thinking import BAR_CELLS, bar, bar_label, comparison_table, most_surprising, texts, word_perplexity, words_of
from schulki.gateway.web.i18n import strings
from schulki.inference.v1 import inference_service_pb2 as pb


def scored(*tokens: tuple[str, float, str]) -> pb.ScoreTextResponse:
    """A ScoreText answer from (piece, logprob, the likeliest piece there) triples."""
    return pb.ScoreTextResponse(
        tokens=[
            pb.TokenLogprob(
                chosen=pb.TokenChoice(piece=piece.encode(), logprob=logprob),
                alternatives=[pb.TokenChoice(piece=best.encode(), logprob=-0.5)],
            )
            for piece, logprob, best in tokens
        ]
    )


PURPLE = scored(
    ("Der", -8.4, "Die"), (" Himmel", -7.8, " Welt"), (" ist", -1.1, " ist"), (" l", -7.4, " blau"), ("ila", -0.5, "ila"), (".", -1.5, ".")
)


def test_tokens_become_words_and_punctuation_stands_alone():
    words = words_of(PURPLE)
    assert [w.text for w in words] == ["Der", "Himmel", "ist", "lila", "."]
    assert math.isclose(words[3].logprob, -7.9, rel_tol=1e-6)
    assert words[3].expected == "blau"  # what the model expected where the word began


def test_the_most_surprising_word_is_never_the_first_and_counts_all_its_tokens():
    assert most_surprising(words_of(PURPLE)).text == "lila"  # -7.9 in two tokens beats "Himmel"'s -7.8 in one
    expected = math.exp((8.4 + 7.8 + 1.1 + 7.4 + 0.5 + 1.5) / 4)  # four words; the full stop adds to the sum only
    assert math.isclose(word_perplexity(words_of(PURPLE)), expected, rel_tol=1e-6)


def test_bars_grow_with_the_probability_and_labels_show_percent_and_token():
    assert bar(1.0) == "█" * BAR_CELLS
    assert bar(0.5) == "█" * (BAR_CELLS // 2)
    assert bar(0.0) == "▏"  # a bar is always there to click
    assert len(bar(0.01)) == 1 and bar(0.01) != "█"
    label = bar_label(pb.TokenChoice(piece=b" blau", logprob=math.log(0.05)), 0.1, "de")
    # half as likely as the top token: half its bar, padded so that the percentages stand in one column
    assert label == "█" * (BAR_CELLS // 2) + " " * (BAR_CELLS // 2) + "    5,0 %  „␣blau“"


def test_the_table_writes_sentences_as_plain_text():
    table = comparison_table([("Der <b>Himmel</b> ist [lila](http://x).", PURPLE)], texts(strings("de")), "de")
    assert "<b>" not in table and "](http" not in table
    assert "**lila**" in table
