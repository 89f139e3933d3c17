"""The Hinweise tab: the moderation flags of the students of a teacher's classes (all users' for an admin).

The tab shows itself to teachers and admins only; its event asks ``Gateway.moderation_flags``, which refuses a
student whatever calls it (the Gradio API included).
"""

from __future__ import annotations

import time

import gradio as gr

from schulki.gateway.context import Gateway
from schulki.gateway.moderation.rules import LABELS
from schulki.gateway.ui.common import account_of, handles_errors
from schulki.gateway.web.i18n import Strings

TEXTS = {
    "de": {
        "tab": "Hinweise",
        "intro": "Hinweise der Moderation zu Schülerinnen und Schülern deiner Klassen: wer, wann, welcher Bereich. "
        "Bitte sprich die betroffene Person behutsam an.",
        "refresh": "Aktualisieren",
        "headers": ["Wer", "Klassen", "Wann", "Bereich", "Folge", "Frage/Antwort", "Text"],
        "none": "Keine Hinweise.",
        "input": "Frage",
        "output": "Antwort",
        "outcomes": {"pass": "durchgelassen", "warn": "Hinweis gegeben", "block": "blockiert"},
    },
    "en": {
        "tab": "Flags",
        "intro": "Moderation flags of the students of your classes: who, when, which category. Please approach the person with care.",
        "refresh": "Refresh",
        "headers": ["Who", "Classes", "When", "Category", "Outcome", "Question/answer", "Text"],
        "none": "No flags.",
        "input": "question",
        "output": "answer",
        "outcomes": {"pass": "passed", "warn": "warned", "block": "blocked"},
    },
}


def texts(s: Strings) -> dict:
    return TEXTS.get(s.lang, TEXTS["de"])


def build_moderation_tab(gateway: Gateway, s: Strings, demo: gr.Blocks) -> gr.Tab:
    """The tab (hidden until the page's user turns out to be a teacher or an admin) and its events."""
    t = texts(s)
    with gr.Tab(t["tab"], id="flags", visible=False) as tab:
        gr.Markdown(t["intro"])
        refresh = gr.Button(t["refresh"], elem_id="flags-refresh")
        table = gr.Dataframe(headers=t["headers"], interactive=False, elem_id="flags-table", wrap=True)

    @handles_errors(s)
    def flags(request: gr.Request) -> list[list[str]]:
        account = account_of(gateway, request, s)
        rows = []
        for flag in gateway.moderation_flags(account):
            rows.append(
                [
                    flag.user,
                    ", ".join(flag.classes),
                    time.strftime("%d.%m.%Y %H:%M", time.localtime(flag.at)),
                    LABELS.get(flag.category, flag.category),
                    t["outcomes"].get(flag.outcome, flag.outcome),
                    t.get(flag.direction, flag.direction),
                    flag.text or "",
                ]
            )
        return rows

    def show(request: gr.Request) -> gr.Tab:
        return gr.Tab(visible=account_of(gateway, request, s).role in ("teacher", "admin"))

    refresh.click(flags, None, table, api_name="moderation_flags")
    demo.load(show, None, tab, api_name="moderation_tab")
    return tab
