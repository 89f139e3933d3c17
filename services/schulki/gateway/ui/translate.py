"""The Übersetzen tab: source language detected or chosen, a target among many, both texts side by side."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import gradio as gr

from schulki.gateway.context import Gateway
from schulki.gateway.ui.common import account_of, handles_errors, status_banner
from schulki.gateway.web.i18n import Strings

TARGETS = [
    ("Deutsch", "Deutsch"),
    ("English", "Englisch"),
    ("Français", "Französisch"),
    ("Italiano", "Italienisch"),
    ("Español", "Spanisch"),
    ("Türkçe", "Türkisch"),
    ("Українська", "Ukrainisch"),
    ("العربية", "Arabisch"),
    ("Polski", "Polnisch"),
    ("Русский", "Russisch"),
    ("Nederlands", "Niederländisch"),
    ("Português", "Portugiesisch"),
]

# Frequent short words per language: enough to tell the school languages apart in a sentence or two.
STOPWORDS = {
    "Deutsch": "der die das und ist nicht ich du wir ein eine mit von zu auf für sie es den dem auch",
    "Englisch": "the and is are not you we with of to in for it this that have be was",
    "Französisch": "le la les et est pas je tu nous un une avec de des pour il elle ce que dans",
    "Italienisch": "il lo la gli le e è non io tu noi un una con di per che sono della",
    "Spanisch": "el la los las y es no yo tú nosotros un una con de para que en por",
    "Türkisch": "ve bir bu da de ne için ile ben sen biz değil mi çok gibi var",
    "Polnisch": "i w nie jest to się na że z do jak ale czy tak",
    "Niederländisch": "de het een en is niet ik je wij met van voor dat zijn op",
    "Portugiesisch": "o a os as e é não eu tu nós um uma com de para que em",
}
STOPWORD_SETS = {language: set(words.split()) for language, words in STOPWORDS.items()}


def detect_language(text: str) -> str | None:
    """The most likely language of a text, by script and frequent words; None when unsure."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return None
    if sum("\u0600" <= c <= "\u06ff" for c in letters) > len(letters) / 2:
        return "Arabisch"
    if sum("\u0400" <= c <= "\u04ff" for c in letters) > len(letters) / 2:
        return "Ukrainisch" if re.search(r"[іїєґ]", text.lower()) else "Russisch"
    words = re.findall(r"\w+", text.lower())
    scores = {language: sum(w in stop for w in words) for language, stop in STOPWORD_SETS.items()}
    best = max(scores, key=lambda language: scores[language])
    return best if scores[best] >= 1 and list(scores.values()).count(scores[best]) == 1 else None


def build_translate_tab(gateway: Gateway, s: Strings, timer: gr.Timer, demo: gr.Blocks) -> None:
    status_banner(gateway, s, ("inference",), timer, demo, "translate_status")
    with gr.Row():
        source_language = gr.Dropdown([(s["auto_detect"], ""), *TARGETS], value="", label=s["source_language"], elem_id="source-language")
        target_language = gr.Dropdown(TARGETS, value="Englisch", label=s["target_language"], elem_id="target-language")
    with gr.Row():
        source = gr.Textbox(label=s["source_text"], lines=10, elem_id="source-text")
        target = gr.Textbox(label=s["translation"], lines=10, interactive=False, elem_id="translation")
    detected = gr.Markdown(elem_id="detected")
    run = gr.Button(s["translate"], variant="primary", elem_id="translate")

    @handles_errors(s)
    async def translate(text: str, source_name: str, target_name: str, request: gr.Request) -> AsyncIterator[tuple[str, str]]:
        account = account_of(gateway, request, s)
        text = (text or "").strip()
        if not text:
            raise gr.Error(s["empty_message"])
        found = source_name or detect_language(text)
        note = "" if source_name else (s["detected"].format(language=found) if found else s["not_detected"])
        source_part = f"aus dem {found}en " if found and found.endswith("sch") else (f"aus dem {found} " if found else "")
        prompt = [
            {
                "role": "system",
                "content": f"Du bist ein Übersetzer. Übersetze den Text {source_part}ins {target_name}e. Gib nur die Übersetzung aus."
                if target_name.endswith("sch")
                else f"Du bist ein Übersetzer. Übersetze den Text {source_part}ins {target_name}. Gib nur die Übersetzung aus.",
            },
            {"role": "user", "content": text},
        ]
        translation = ""
        async for event in gateway.chat(account, prompt, gateway.config.gateway.max_chat_tokens, temperature=0.2):
            if not event.HasField("finish"):
                translation += event.text
                yield translation, note
        yield translation, note

    run.click(translate, [source, source_language, target_language], [target, detected], api_name="translate")
