"""The Chat tab: presets, streamed Markdown answers, stop, new chat, stored chats."""

from __future__ import annotations

import gradio as gr

from schulki.gateway.context import Gateway
from schulki.gateway.i18n import Strings
from schulki.gateway.ui.common import account_of, status_banner, user_error

PRESETS = {
    "preset_assistant": "Du bist ein freundlicher, hilfsbereiter Assistent für Schülerinnen und Schüler. Antworte klar und auf Deutsch, außer man schreibt dir in einer anderen Sprache.",
    "preset_tutor": "Du bist ein geduldiger Tutor. Gib nie einfach die Lösung. Erkläre Schritt für Schritt, stelle Rückfragen und gib Hinweise, damit die Schülerin oder der Schüler selbst auf die Lösung kommt.",
    "preset_translator": "Du bist ein Übersetzer. Übersetze den Text der Nutzerin oder des Nutzers ins Deutsche (oder ins Englische, wenn er schon Deutsch ist). Gib nur die Übersetzung aus.",
    "preset_coding": "Du bist eine Programmierhilfe für Schülerinnen und Schüler. Erkläre Code verständlich, zeige kurze Beispiele in Markdown-Codeblöcken mit Sprachangabe und weise auf typische Fehler hin.",
}


def build_chat_tab(gateway: Gateway, s: Strings, timer: gr.Timer, demo: gr.Blocks) -> None:
    status_banner(gateway, s, ("inference",), timer, demo, "chat_status")
    preset = gr.Dropdown([(s[key], key) for key in PRESETS], value="preset_assistant", label=s["preset"])
    chatbot = gr.Chatbot(label="Chat", height=420, buttons=["copy"], feedback_options=None, elem_id="chatbot")
    messages = gr.State([])
    chat_id = gr.State(None)
    with gr.Row():
        textbox = gr.Textbox(label=s["message"], placeholder=s["message_placeholder"], scale=5, elem_id="chat-input")
        send = gr.Button(s["send"], variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button(s["stop"], variant="stop", scale=1, elem_id="chat-stop")
        new = gr.Button(s["new_chat"], scale=1, elem_id="chat-new")
    with gr.Accordion(s["saved_chats"], open=False):
        retention = gr.Markdown()
        saved = gr.Dropdown([], label=s["saved_chats"], elem_id="saved-chats", allow_custom_value=True)
        load = gr.Button(s["load_chat"])

    def retention_text() -> str:
        days = gateway.retention_days()
        return s["retention_note"].format(days=days) if days > 0 else s["retention_none"]

    def saved_choices(request: gr.Request):
        account = account_of(gateway, request, s)
        return gr.Dropdown(choices=[(title, chat) for chat, title in gateway.accounts.list_chats(account.id)], value=None), retention_text()

    async def respond(message: str, history: list[dict], preset_key: str, current_id, request: gr.Request):
        account = account_of(gateway, request, s)
        message = (message or "").strip()
        if not message:
            raise gr.Error(s["empty_message"])
        history = list(history or []) + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield history, history, "", current_id
        prompt = [{"role": "system", "content": PRESETS.get(preset_key, PRESETS["preset_assistant"])}] + history[:-1]
        try:
            async for event in gateway.chat(account, prompt, gateway.config.gateway.max_chat_tokens):
                if not event.HasField("finish"):
                    history[-1]["content"] += event.text
                    yield history, history, "", current_id
        except Exception as error:
            raise user_error(s, error) from error
        if gateway.retention_days() > 0:
            current_id = gateway.accounts.save_chat(account.id, current_id, history)
        yield history, history, "", current_id

    def new_chat():
        return [], [], "", None

    def open_chat(chosen, request: gr.Request):
        account = account_of(gateway, request, s)
        loaded = gateway.accounts.load_chat(account.id, int(chosen)) if chosen is not None else None
        if loaded is None:
            return gr.skip(), gr.skip(), gr.skip()
        return loaded, loaded, int(chosen)

    outputs = [chatbot, messages, textbox, chat_id]
    submit_event = textbox.submit(respond, [textbox, messages, preset, chat_id], outputs, api_name="chat")
    click_event = send.click(respond, [textbox, messages, preset, chat_id], outputs, api_name="chat_send")
    stop.click(None, cancels=[submit_event, click_event], api_name="chat_stop")
    new.click(new_chat, None, outputs, api_name="chat_new")
    load.click(open_chat, saved, [chatbot, messages, chat_id], api_name="chat_open")
    demo.load(saved_choices, None, [saved, retention], api_name="chat_saved")
