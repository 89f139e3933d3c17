"""The Chat tab: model picker, presets, streamed Markdown answers, stop, new chat, stored chats, a class's lesson model."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import gradio as gr
from starlette.concurrency import run_in_threadpool

from schulki.gateway.context import Gateway
from schulki.gateway.ui.agent import build_agent_box
from schulki.gateway.ui.common import account_of, handles_errors, status_banner
from schulki.gateway.web.i18n import Strings
from schulki.gateway.web.safe_markup import safe_chatbot

PRESETS = {
    "preset_assistant": "Du bist ein freundlicher, hilfsbereiter Assistent für Schülerinnen und Schüler. Antworte klar und auf Deutsch, außer man schreibt dir in einer anderen Sprache.",
    "preset_tutor": "Du bist ein geduldiger Tutor. Gib nie einfach die Lösung. Erkläre Schritt für Schritt, stelle Rückfragen und gib Hinweise, damit die Schülerin oder der Schüler selbst auf die Lösung kommt.",
    "preset_translator": "Du bist ein Übersetzer. Übersetze den Text der Nutzerin oder des Nutzers ins Deutsche (oder ins Englische, wenn er schon Deutsch ist). Gib nur die Übersetzung aus.",
    "preset_coding": "Du bist eine Programmierhilfe für Schülerinnen und Schüler. Erkläre Code verständlich, zeige kurze Beispiele in Markdown-Codeblöcken mit Sprachangabe und weise auf typische Fehler hin.",
}


Event = Callable[..., object]
"""A Gradio event handler: Gradio reads its inputs from its signature."""


def build_chat_tab(gateway: Gateway, s: Strings, timer: gr.Timer, demo: gr.Blocks) -> None:
    status_banner(gateway, s, ("inference",), timer, demo, "chat_status")
    demo_note, model, preset, model_info = _model_row(s)
    chatbot, messages, chat_id, textbox, send, stop, new = _conversation(s)
    build_agent_box(gateway, s, demo, textbox, chatbot, messages)
    retention, saved, load = _saved_chats(s)
    lesson, lesson_class, lesson_model, lesson_set, lesson_result = _lesson_box(s)
    saved_choices, new_chat, open_chat = _saved_chat_events(gateway, s)
    model_choices, model_picked, set_lesson_model = _model_events(gateway, s)
    respond = _respond_event(gateway, s)

    outputs = [chatbot, messages, textbox, chat_id]
    inputs = [textbox, messages, preset, chat_id, model]
    submit_event = textbox.submit(respond, inputs, outputs, api_name="chat")
    click_event = send.click(respond, inputs, outputs, api_name="chat_send")
    stop.click(None, cancels=[submit_event, click_event], api_name="chat_stop")
    new.click(new_chat, None, outputs, api_name="chat_new")
    load.click(open_chat, saved, [chatbot, messages, chat_id], api_name="chat_open")
    demo.load(saved_choices, None, [saved, retention], api_name="chat_saved")
    demo.load(model_choices, None, [model, model_info, demo_note, lesson, lesson_class, lesson_model], api_name="chat_models")
    model.change(model_picked, model, model_info, api_name="chat_model_info", show_progress="hidden")
    lesson_set.click(set_lesson_model, [lesson_class, lesson_model], lesson_result, api_name="chat_lesson_model")


def _model_row(s: Strings) -> tuple[gr.Markdown, gr.Dropdown, gr.Dropdown, gr.Markdown]:
    demo_note = gr.Markdown(visible=False, elem_id="demo-model-note")
    with gr.Row():
        # Any value may arrive through the API: respond() checks it against what this user may use.
        model = gr.Dropdown([], value=None, label=s["model"], elem_id="chat-model", allow_custom_value=True, scale=2)
        preset = gr.Dropdown([(s[key], key) for key in PRESETS], value="preset_assistant", label=s["preset"], scale=2)
    model_info = gr.Markdown(elem_id="chat-model-info")
    return demo_note, model, preset, model_info


def _conversation(s: Strings) -> tuple[gr.Chatbot, gr.State, gr.State, gr.Textbox, gr.Button, gr.Button, gr.Button]:
    chatbot = safe_chatbot(label="Chat", height=420, buttons=["copy"], feedback_options=None, elem_id="chatbot")
    messages = gr.State([])
    chat_id = gr.State(None)
    with gr.Row():
        textbox = gr.Textbox(label=s["message"], placeholder=s["message_placeholder"], scale=5, elem_id="chat-input")
        send = gr.Button(s["send"], variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button(s["stop"], variant="stop", scale=1, elem_id="chat-stop")
        new = gr.Button(s["new_chat"], scale=1, elem_id="chat-new")
    return chatbot, messages, chat_id, textbox, send, stop, new


def _saved_chats(s: Strings) -> tuple[gr.Markdown, gr.Dropdown, gr.Button]:
    with gr.Accordion(s["saved_chats"], open=False):
        retention = gr.Markdown()
        saved = gr.Dropdown([], label=s["saved_chats"], elem_id="saved-chats", allow_custom_value=True)
        load = gr.Button(s["load_chat"])
    return retention, saved, load


def _lesson_box(s: Strings) -> tuple[gr.Accordion, gr.Dropdown, gr.Dropdown, gr.Button, gr.Markdown]:
    with gr.Accordion(s["lesson_model"], open=False, visible=False) as lesson:
        # Choices are filled per user; set_lesson_model checks class and model itself.
        with gr.Row():
            lesson_class = gr.Dropdown([], label=s["lesson_class"], elem_id="lesson-class", allow_custom_value=True)
            lesson_model = gr.Dropdown([], label=s["model"], elem_id="lesson-model", allow_custom_value=True)
            lesson_set = gr.Button(s["lesson_set"], elem_id="lesson-set")
        lesson_result = gr.Markdown(elem_id="lesson-result")

    return lesson, lesson_class, lesson_model, lesson_set, lesson_result


def _saved_chat_events(gateway: Gateway, s: Strings) -> tuple[Event, Event, Event]:
    """The saved chats with the retention note, a new chat, and opening a saved one."""

    def retention_text() -> str:
        days = gateway.retention_days()
        return s["retention_note"].format(days=days) if days > 0 else s["retention_none"]

    def saved_choices(request: gr.Request) -> tuple[gr.Dropdown, str]:
        account = account_of(gateway, request, s)
        return gr.Dropdown(choices=[(title, chat) for chat, title in gateway.accounts.list_chats(account.id)], value=None), retention_text()

    def new_chat() -> tuple[list[dict], list[dict], str, None]:
        return [], [], "", None

    def open_chat(chosen: str | int | None, request: gr.Request) -> tuple[object, object, object]:
        account = account_of(gateway, request, s)
        if chosen is None:
            return gr.skip(), gr.skip(), gr.skip()
        try:  # the picker sends a chat's id; the API may send anything
            chat = int(chosen)
        except (TypeError, ValueError, OverflowError):
            raise gr.Error(s["unknown_chat"]) from None
        loaded = gateway.accounts.load_chat(account.id, chat) if 0 < chat < 2**63 else None  # SQL integers have 64 bits
        if loaded is None:
            raise gr.Error(s["unknown_chat"])
        return loaded, loaded, chat

    return saved_choices, new_chat, open_chat


def _model_events(gateway: Gateway, s: Strings) -> tuple[Event, Event, Event]:
    """The model picker for this user, its description, and a teacher's model for a lesson."""

    def model_choices(request: gr.Request) -> tuple[gr.Dropdown, str, gr.Markdown, gr.Accordion, gr.Dropdown, gr.Dropdown]:
        """The picker with the models this user may use, the preselected one, its description and the demo-model line."""
        account = account_of(gateway, request, s)
        allowed = gateway.models.allowed(account)
        chosen = gateway.models.preselected(account)
        choices = [(name + (" (Standard)" if name == gateway.models.default() else ""), name) for name in allowed]
        teaching = account.role in ("teacher", "admin")
        # the school's classes are the admin's to see, a teacher's own are hers; a student gets none
        if account.role == "admin":
            classes = sorted({c for a in gateway.accounts.list_users() for c in a.classes})
        else:
            classes = list(account.classes) if account.role == "teacher" else []
        return (
            gr.Dropdown(choices=choices, value=chosen),
            gateway.models.description(chosen) if chosen else s["no_model"],
            gr.Markdown(s["demo_model_note"], visible=gateway.models.only_demo()),
            gr.Accordion(visible=teaching),
            gr.Dropdown(choices=classes, value=classes[0] if classes else None),
            gr.Dropdown(choices=[(s["lesson_default"], "")] + [(name, name) for name in allowed], value=""),
        )

    def model_picked(name: str | None) -> str:
        return gateway.models.description(name)

    @handles_errors(s)
    def set_lesson_model(class_name: str | None, name: str | None, request: gr.Request) -> str:
        account = account_of(gateway, request, s)
        if not class_name:
            raise gr.Error(s["lesson_class"] + "?")
        gateway.models.set_class_model(account, class_name, name or None)
        return s["lesson_saved"].format(name=class_name, model=name or s["lesson_default"])

    return model_choices, model_picked, set_lesson_model


def _respond_event(gateway: Gateway, s: Strings) -> Event:
    """One answer, streamed into the conversation, and saved when chats are kept."""

    @handles_errors(s)
    async def respond(
        message: str,
        history: list[dict],
        preset_key: str,
        current_id: int | None,
        model_name: str | None = None,
        request: gr.Request | None = None,
    ) -> AsyncIterator[tuple[list[dict], list[dict], str, int | None]]:
        # model_name defaults to None (the preselected model), so API callers that predate the picker keep working
        account = account_of(gateway, request, s)
        message = (message or "").strip()
        if not message:
            raise gr.Error(s["empty_message"])
        history = [*list(history or []), {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        prompt = [{"role": "system", "content": PRESETS.get(preset_key, PRESETS["preset_assistant"])}, *history[:-1]]
        answer = gateway.chat(account, prompt, gateway.config.gateway.max_chat_tokens, model=model_name)  # the model is checked here
        yield history, history, "", current_id
        first_piece = None
        async for event in answer:
            if event.HasField("finish"):
                if first_piece is not None:
                    gateway.models.record_speed(answer.model, event.finish.usage.completion_tokens - 1, time.monotonic() - first_piece)
            else:
                first_piece = first_piece or time.monotonic()
                # a blocked answer is replaced, not continued: moderation's fixed answer takes the place of what was shown
                history[-1]["content"] = event.text.strip() if answer.filtered else history[-1]["content"] + event.text
                yield history, history, "", current_id
        if gateway.retention_days() > 0:
            # the commit on a worker thread: the event loop streams the other students' answers meanwhile
            current_id = await run_in_threadpool(gateway.accounts.save_chat, account.id, current_id, history)
        yield history, history, "", current_id

    return respond
