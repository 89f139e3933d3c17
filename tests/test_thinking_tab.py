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


def test_the_leaderboard_keeps_numbers_as_numbers_best_perplexity_first_and_unmeasured_last():
    from schulki.gateway.ui.thinking_leaderboard import leaderboard_rows

    records = [
        {"model_name": "Gemma", "quant": "Q2_K", "host": "pc", "size_bytes": 180 * 2**20, "perplexity": 45.3, "mean_kld": 0.3},
        {"file": "x.gguf", "quant": "F16", "host": "pc"},  # stored without figures: no row invents any
        {
            "model_name": "Gemma",
            "quant": "Q4_K_M",
            "host": "pc",
            "size_bytes": 241 * 2**20,
            "perplexity": 30.12,
            "mean_kld": 0.0,
            "questions": {"correct": 2, "total": 4, "accuracy": 0.5},
            "speed": {"generation_tokens_per_s": 21.04},
        },
    ]
    rows = leaderboard_rows(records)
    assert [row[1] for row in rows] == ["Q4_K_M", "Q2_K", "F16"]
    assert rows[0] == ["Gemma", "Q4_K_M", "pc", 241.0, 30.12, 0.0, 50.0, 21.0]
    assert rows[2] == ["x.gguf", "F16", "pc", None, None, None, None, None]


def test_the_attention_heat_map_shows_per_cents_with_the_tokens_as_labels():
    from schulki.gateway.ui.thinking_attention import heat_map, token_label

    labels = [token_label(b"", 0, "(Textanfang)"), token_label(b" Gut", 1, "(Textanfang)")]
    assert labels == ["0: (Textanfang)", "1: ␣Gut"]
    frame = heat_map([1.0, 0.0, 0.25, 0.75], labels, "schaut auf →").data
    assert frame.values.tolist() == [["0: (Textanfang)", 100.0, 0.0], ["1: ␣Gut", 25.0, 75.0]]
