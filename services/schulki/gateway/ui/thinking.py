"""The "Wie denkt die KI?" tab: how the school's own chat model picks its next word, for a class on a projector.

- Nächstes Wort: a beginning, and the model's most likely next tokens as bars
  of their probability at the temperature the slider sets. The inference
  service computes softmax(logits / T) over the whole vocabulary (NextTokens);
  nothing here is made up or rescaled. Picking a bar appends exactly that
  token to the text and shows the next step.
- Überraschung: two sentences, the perplexity of each and the word the model
  found most surprising, with what it expected there instead. The tab counts
  perplexity per word (exp of the mean negative log-probability per word,
  from ScoreText's token log-probabilities): per token, "Der Himmel ist lila."
  scores lower than "… blau." on Gemma 3 270M (86 against 117), because "lila"
  is two tokens and the second ("ila" after "l") is nearly certain; per word
  it is the other way round (about 800 against 380), as a class expects.

The bars are the options of one radio group: each label is a bar of block
characters (as long as the token's probability against the likeliest one's),
the percentage and the token, so the chart is itself what a
student clicks, and every text in it is plain text (Gradio writes option labels
as text, never as markup). The comparison table is Markdown whose sentences and
words go through ``plain``. Each step is one request against the user's quota,
as a chat message is (``Gateway.next_tokens`` and ``Gateway.score_text``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import gradio as gr

from schulki.gateway.context import Gateway
from schulki.gateway.ui.common import account_of, handles_errors, status_banner
from schulki.gateway.ui.thinking_attention import build_attention_section
from schulki.gateway.ui.thinking_leaderboard import build_leaderboard_section
from schulki.gateway.web.i18n import Strings
from schulki.gateway.web.safe_markup import plain
from schulki.inference.v1 import inference_service_pb2 as inference_pb

NEXT_COUNT = 10
"""Bars shown: enough to see the long tail flatten at a high temperature, few enough to read on a projector."""
BAR_CELLS = 30
"""Width of a bar at 100 %, in block characters; eighths of a block make the steps in between."""
MAX_TEXT_CHARS = 1000
"""A beginning or a sentence longer than this is not what the tab is for; it is refused before any request."""
TEMPERATURES = (0.1, 3.0)
"""The slider's range: 0.1 makes the most likely token nearly certain, 3 flattens a small model's list visibly."""
EIGHTHS = " ▏▎▍▌▋▊▉"
CSS = """
#thinking-choices .wrap { flex-direction: column; align-items: stretch; }
#thinking-choices label { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 1.05em; white-space: pre; }
"""
"""The bars one below the other, in a monospaced font so that bars and percentages line up (the page's css)."""

TEXTS: dict[str, dict[str, str]] = {
    "de": {
        "tab": "Wie denkt die KI?",
        "intro": (
            "Ein Sprachmodell schreibt Wort für Wort: Zu jedem Anfang berechnet es, wie wahrscheinlich jedes mögliche "
            "nächste Wort (genauer: Token, ein Wortstück) ist. Hier siehst du diese Wahrscheinlichkeiten – vom selben "
            "Modell, mit dem du chattest."
        ),
        "beginning": "Dein Anfang",
        "temperature": "Temperatur (klein: sicherer, groß: zufälliger)",
        "show": "Nächste Wörter zeigen",
        "choices": "Die wahrscheinlichsten nächsten Tokens – klicke eines an, um den Text damit fortzusetzen",
        "empty": "Schreib zuerst einen Anfang.",
        "too_long": "Der Text ist zu lang: höchstens {max} Zeichen.",
        "sentence_a": "Satz 1",
        "sentence_b": "Satz 2",
        "compare": "Vergleichen",
        "compare_intro": (
            "Die **Perplexität** misst, wie überrascht das Modell von einem Satz ist: Je kleiner, desto eher hätte es "
            "ihn selbst so geschrieben. Hier ist sie pro Wort gerechnet; das erste Wort zählt nicht als Überraschung, "
            "weil vor ihm noch nichts steht."
        ),
        "col_sentence": "Satz",
        "col_perplexity": "Perplexität (pro Wort)",
        "col_surprise": "Überraschendstes Wort",
        "col_probability": "Wahrscheinlichkeit",
        "col_expected": "Erwartet hätte es",
        "start_of_text": "(Textanfang)",
    },
    "en": {
        "tab": "How does the AI think?",
        "intro": (
            "A language model writes word by word: for every beginning it computes how likely each possible next word "
            "(more precisely: token, a piece of a word) is. Here you see those probabilities – from the very model you chat with."
        ),
        "beginning": "Your beginning",
        "temperature": "Temperature (low: surer, high: more random)",
        "show": "Show next words",
        "choices": "The most likely next tokens – click one to continue the text with it",
        "empty": "Write a beginning first.",
        "too_long": "The text is too long: at most {max} characters.",
        "sentence_a": "Sentence 1",
        "sentence_b": "Sentence 2",
        "compare": "Compare",
        "compare_intro": (
            "**Perplexity** measures how surprised the model is by a sentence: the lower, the more it would have written it "
            "itself. It is computed per word here; the first word never counts as the surprise, as nothing comes before it."
        ),
        "col_sentence": "Sentence",
        "col_perplexity": "Perplexity (per word)",
        "col_surprise": "Most surprising word",
        "col_probability": "Probability",
        "col_expected": "It expected",
        "start_of_text": "(start of text)",
    },
}


def texts(s: Strings) -> dict[str, str]:
    return TEXTS.get(s.lang, TEXTS["de"])


def bar(probability: float) -> str:
    """A bar of block characters, BAR_CELLS long at probability 1, in eighths of a cell."""
    eighths = round(max(0.0, min(1.0, probability)) * BAR_CELLS * 8)
    return "█" * (eighths // 8) + (EIGHTHS[eighths % 8] if eighths % 8 else "") or "▏"


def token_text(piece: bytes) -> str:
    """A token as a student reads it: its text, with a leading space shown as ␣ (a new word starts) and a line break as ↵."""
    text = piece.decode("utf-8", errors="replace").replace("\n", "↵")
    return "␣" + text[1:] if text.startswith(" ") else text


def bar_label(choice: inference_pb.TokenChoice, top: float, lang: str) -> str:
    """A bar as long as the token's probability against the likeliest one's (``top``; a small model's best guess is
    often a few per cent, too short a bar to read), then its probability in per cent and the token."""
    probability = math.exp(choice.logprob)
    percent = f"{100 * probability:.1f}".replace(".", "," if lang == "de" else ".")
    # Padded to the full width, so that the percentages stand in one column (the page sets these labels monospaced).
    return f"{bar(probability / top if top > 0 else 0.0):<{BAR_CELLS}}  {percent:>5} %  „{token_text(choice.piece)}“"


def _checked(text: str | None, t: dict[str, str]) -> str:
    text = text or ""
    if not text.strip():
        raise gr.Error(t["empty"])
    if len(text) > MAX_TEXT_CHARS:
        raise gr.Error(t["too_long"].format(max=MAX_TEXT_CHARS))
    return text


@dataclass
class Word:
    """A word of a scored sentence: its text, the log-probability of all its tokens together, and the model's
    likeliest token where the word began (what it expected instead)."""

    text: str
    logprob: float
    expected: str
    expected_logprob: float


def words_of(scored: inference_pb.ScoreTextResponse) -> list[Word]:
    """The scored tokens grouped into words: a token that starts with a space starts a word, and a token without
    letters or digits (punctuation) stands alone; a word's probability is the product of its tokens'."""
    words: list[Word] = []
    for token in scored.tokens:
        text = token.chosen.piece.decode("utf-8", errors="replace")
        letters = bool(re.search(r"\w", text))
        joins = words and letters and not text[:1].isspace() and re.search(r"\w$", words[-1].text)
        if joins:
            last = words[-1]
            words[-1] = Word(last.text + text, last.logprob + token.chosen.logprob, last.expected, last.expected_logprob)
            continue
        best = token.alternatives[0] if token.alternatives else token.chosen
        expected = token_text(best.piece)
        words.append(Word(text.strip(), token.chosen.logprob, expected.removeprefix("␣") or expected, best.logprob))
    return words


def word_perplexity(words: list[Word]) -> float:
    """exp of the mean surprise per word (punctuation counts into the sum, not as a word): unlike the per-token
    perplexity, a word the model splits into several tokens ("l" + "ila") is not diluted by its easy second half."""
    counted = sum(1 for word in words if re.search(r"\w", word.text)) or 1
    return math.exp(-sum(word.logprob for word in words) / counted)


def most_surprising(words: list[Word]) -> Word:
    """The least likely word after the first (nothing comes before the first word: any start surprises a model)."""
    candidates = [word for word in words[1:] if re.search(r"\w", word.text)] or words
    return min(candidates, key=lambda word: word.logprob)


def comparison_table(rows: list[tuple[str, inference_pb.ScoreTextResponse]], t: dict[str, str], lang: str) -> str:
    """The Markdown table of sentences, perplexities and surprises; every text in it through ``plain``."""

    def number(value: float, digits: int = 1) -> str:
        written = f"{value:.{digits}f}"
        return written.replace(".", ",") if lang == "de" else written

    lines = [
        t["compare_intro"],
        "",
        f"| {t['col_sentence']} | {t['col_perplexity']} | {t['col_surprise']} | {t['col_probability']} | {t['col_expected']} |",
        "|---|---:|---|---:|---|",
    ]
    for sentence, scored in rows:
        words = words_of(scored)
        found = most_surprising(words)
        lines.append(
            f"| {plain(sentence)} | {number(word_perplexity(words))} | **{plain(found.text)}** | "
            f"{number(100 * math.exp(found.logprob), 3)} % | {plain(found.expected)} ({number(100 * math.exp(found.expected_logprob))} %) |"
        )
    return "\n".join(lines)


def build_thinking_tab(gateway: Gateway, s: Strings, timer: gr.Timer, demo: gr.Blocks) -> None:
    t = texts(s)
    status_banner(gateway, s, ("inference",), timer, demo, "thinking_status")
    gr.Markdown(t["intro"])
    with gr.Row():
        beginning = gr.Textbox(value="Der Himmel ist", label=t["beginning"], lines=2, scale=3, elem_id="thinking-text")
        temperature = gr.Slider(*TEMPERATURES, value=1.0, step=0.1, label=t["temperature"], scale=1, elem_id="thinking-temperature")
    show = gr.Button(t["show"], variant="primary", elem_id="thinking-show")
    choices = gr.Radio(choices=[], label=t["choices"], elem_id="thinking-choices", elem_classes=["thinking-bars"])
    pieces = gr.State([])
    """The tokens behind the bars, as text, in the bars' order: what a click appends."""

    async def next_words(account_text: str, temp: float, request: gr.Request) -> tuple[gr.Radio, list[str]]:
        account = account_of(gateway, request, s)
        text = _checked(account_text, t)
        answer = await gateway.next_tokens(account, text, NEXT_COUNT, float(temp))
        top = math.exp(answer.tokens[0].logprob) if answer.tokens else 1.0
        labels = [(bar_label(choice, top, s.lang), str(i)) for i, choice in enumerate(answer.tokens)]
        return gr.Radio(choices=labels, value=None), [choice.piece.decode("utf-8", errors="replace") for choice in answer.tokens]

    @handles_errors(s)
    async def show_next(text: str, temp: float, request: gr.Request) -> tuple[gr.Radio, list[str]]:
        return await next_words(text, temp, request)

    @handles_errors(s)
    async def extend(chosen: str | None, text: str, temp: float, shown: list[str], request: gr.Request) -> tuple[str, gr.Radio, list[str]]:
        if chosen is None or not chosen.isdigit() or int(chosen) >= len(shown):
            raise gr.Error(t["empty"])
        longer = (text or "") + shown[int(chosen)]
        radio, following = await next_words(longer, temp, request)
        return longer, radio, following

    show.click(show_next, [beginning, temperature], [choices, pieces], api_name="thinking_next")
    temperature.release(show_next, [beginning, temperature], [choices, pieces], api_name="thinking_temperature")
    choices.input(extend, [choices, beginning, temperature, pieces], [beginning, choices, pieces], api_name="thinking_extend")

    with gr.Row():
        sentence_a = gr.Textbox(value="Der Himmel ist blau.", label=t["sentence_a"], elem_id="thinking-sentence-a")
        sentence_b = gr.Textbox(value="Der Himmel ist lila.", label=t["sentence_b"], elem_id="thinking-sentence-b")
    compare = gr.Button(t["compare"], elem_id="thinking-compare")
    table = gr.Markdown(elem_id="thinking-surprise")

    @handles_errors(s)
    async def compare_sentences(first: str, second: str, request: gr.Request) -> str:
        account = account_of(gateway, request, s)
        rows = []
        for sentence in (_checked(first, t), _checked(second, t)):
            rows.append((sentence, await gateway.score_text(account, sentence, top_logprobs=1)))
        return comparison_table(rows, t, s.lang)

    compare.click(compare_sentences, [sentence_a, sentence_b], table, api_name="thinking_compare")

    build_attention_section(gateway, s)
    build_leaderboard_section(gateway, s)
