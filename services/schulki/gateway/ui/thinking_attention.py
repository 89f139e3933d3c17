"""The attention view of the "Wie denkt die KI?" tab: which word looks at which, per layer and head, as a heat map.

The inference service reads the weights from llama.cpp's computation graph
(``Attention``; inference/attention.py): one evaluation of a short sentence
(at most 16 tokens), refused while the class's chats run or wait. The page
keeps the answer in a State, so picking another layer or head redraws the
table without asking the model again. The heat map is a table (row: the token
that looks, column: the token looked at, each cell its weight in per cent
and shaded by it): Gradio draws a pandas Styler's cell colours, and every
label in it is plain text. A model whose graph has no attention weights to
read gets the service's reason, not another table.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd  # type: ignore[import-untyped]  # comes with gradio

from schulki.gateway.context import Gateway
from schulki.gateway.ui.common import account_of, handles_errors
from schulki.gateway.web.i18n import Strings

MAX_SENTENCE_CHARS = 200
"""A sentence for the heat map is a handful of words; anything longer is refused before a request."""

TEXTS: dict[str, dict[str, str]] = {
    "de": {
        "title": "Aufmerksamkeit: Welches Wort schaut auf welches?",
        "intro": (
            "Bevor das Modell ein Wort vorhersagt, schaut jedes Wort auf die Wörter davor – in jeder **Schicht** "
            "mehrere **Köpfe**, jeder auf seine Weise. Jede Zeile zeigt, wie ein Wort seine Aufmerksamkeit (100 %) "
            "auf sich und die Wörter davor verteilt; auf spätere Wörter kann es nicht schauen. Kurze Sätze, höchstens "
            "16 Tokens."
        ),
        "sentence": "Kurzer Satz",
        "show": "Aufmerksamkeit zeigen",
        "layer": "Schicht",
        "head": "Kopf",
        "empty": "Schreib zuerst einen kurzen Satz.",
        "too_long": "Der Satz ist zu lang: höchstens {max} Zeichen.",
        "first": "Erst auf „Aufmerksamkeit zeigen“ klicken.",
        "looks": "schaut auf →",
        "start": "(Textanfang)",
        "summary": (
            "{tokens} Tokens, {shown} von {layers} Schichten mit je {heads} Köpfen, berechnet in {seconds} s "
            "(Architektur {arch}). Zeile: das Wort, das schaut; Spalte: das Wort, auf das es schaut."
        ),
        "unavailable": "Für dieses Modell gibt es keine Aufmerksamkeits-Ansicht: {reason}",
    },
    "en": {
        "title": "Attention: which word looks at which?",
        "intro": (
            "Before the model predicts a word, every word looks at the words before it – in every **layer** several "
            "**heads**, each in its own way. Each row shows how a word spreads its attention (100 %) over itself and the "
            "words before it; it cannot look at later words. Short sentences, at most 16 tokens."
        ),
        "sentence": "Short sentence",
        "show": "Show attention",
        "layer": "Layer",
        "head": "Head",
        "empty": "Write a short sentence first.",
        "too_long": "The sentence is too long: at most {max} characters.",
        "first": "Click “Show attention” first.",
        "looks": "looks at →",
        "start": "(start of text)",
        "summary": (
            "{tokens} tokens, {shown} of {layers} layers with {heads} heads each, computed in {seconds} s "
            "(architecture {arch}). Row: the word that looks; column: the word it looks at."
        ),
        "unavailable": "This model has no attention view: {reason}",
    },
}


def token_label(piece: bytes, index: int, start: str) -> str:
    """A token as a row or column label: its text (a leading space as ␣), numbered so that equal tokens stay apart;
    the model's start token, which has no text, as ``start``."""
    text = piece.decode("utf-8", errors="replace").replace("\n", "↵")
    text = "␣" + text[1:] if text.startswith(" ") else text
    return f"{index}: {text or start}"


def heat_map(weights: list[float], labels: list[str], looks: str) -> Any:
    """The n × n weights as a table of per cents, each cell shaded by its weight (white 0 %, dark blue 100 %)."""
    n = len(labels)
    frame = pd.DataFrame([[round(100 * weights[i * n + j], 1) for j in range(n)] for i in range(n)], columns=labels, index=labels)
    frame.index.name = looks
    frame = frame.reset_index()

    def shade(value: object) -> str:
        if not isinstance(value, float):
            return ""
        strength = max(0.0, min(1.0, value / 100))
        ink = "#ffffff" if strength > 0.5 else "#000000"
        return f"background-color: rgba(30, 80, 200, {strength:.3f}); color: {ink}"

    return frame.style.map(shade, subset=labels).format("{:.1f}", subset=labels)


def build_attention_section(gateway: Gateway, s: Strings) -> None:
    t = TEXTS.get(s.lang, TEXTS["de"])
    gr.Markdown(f"### {t['title']}\n\n{t['intro']}")
    with gr.Row():
        sentence = gr.Textbox(value="Gut Ding braucht Weile", label=t["sentence"], scale=3, elem_id="attention-text")
        show = gr.Button(t["show"], variant="primary", scale=1, elem_id="attention-show")
    with gr.Row():
        layer = gr.Dropdown(choices=[], label=t["layer"], elem_id="attention-layer", interactive=True)
        head = gr.Dropdown(choices=[], label=t["head"], elem_id="attention-head", interactive=True)
    summary = gr.Markdown(elem_id="attention-summary")
    table = gr.Dataframe(interactive=False, elem_id="attention-map", wrap=True)
    shown = gr.State({})
    """The last answer: token labels and, by layer, each head's weights (redrawn for another layer or head)."""

    def drawn(data: dict, chosen_layer: str | None, chosen_head: str | None) -> Any:
        if not data or not data.get("layers"):
            return gr.Dataframe(value=None)
        layers = data["layers"]
        key = chosen_layer if chosen_layer in layers else next(iter(layers))
        heads = layers[key]
        index = int(chosen_head) - 1 if chosen_head and chosen_head.isdigit() and 0 < int(chosen_head) <= len(heads) else 0
        return heat_map(heads[index], data["labels"], t["looks"])

    @handles_errors(s)
    async def show_attention(text: str, request: gr.Request) -> tuple[Any, Any, str, Any, dict]:
        account = account_of(gateway, request, s)
        text = (text or "").strip()
        if not text:
            raise gr.Error(t["empty"])
        if len(text) > MAX_SENTENCE_CHARS:
            raise gr.Error(t["too_long"].format(max=MAX_SENTENCE_CHARS))
        answer = await gateway.attention(account, text)
        if answer.unavailable:
            empty = gr.Dropdown(choices=[], value=None)
            return empty, empty, t["unavailable"].format(reason=answer.unavailable), gr.Dataframe(value=None), {}
        labels = [token_label(token.piece, i, t["start"]) for i, token in enumerate(answer.tokens)]
        data = {"labels": labels, "layers": {str(layer.layer + 1): [list(h.weights) for h in layer.heads] for layer in answer.layers}}
        heads = len(answer.layers[0].heads)
        first = next(iter(data["layers"]))
        message = t["summary"].format(
            tokens=len(labels),
            shown=len(answer.layers),
            layers=answer.layer_count,
            heads=heads,
            seconds=f"{answer.seconds:.2f}".replace(".", "," if s.lang == "de" else "."),
            arch=answer.architecture or "?",
        )
        layer_choice = gr.Dropdown(choices=list(data["layers"]), value=first)
        head_choice = gr.Dropdown(choices=[str(i + 1) for i in range(heads)], value="1")
        return layer_choice, head_choice, message, drawn(data, first, "1"), data

    @handles_errors(s)
    async def redraw(data: dict, chosen_layer: str | None, chosen_head: str | None, request: gr.Request) -> Any:
        account_of(gateway, request, s)  # a redraw asks the model nothing, but only a logged-in user redraws
        if not data:
            raise gr.Error(t["first"])
        return drawn(data, chosen_layer, chosen_head)

    show.click(show_attention, [sentence], [layer, head, summary, table, shown], api_name="thinking_attention")
    layer.input(redraw, [shown, layer, head], table, api_name="thinking_attention_layer")
    head.input(redraw, [shown, layer, head], table, api_name="thinking_attention_head")
