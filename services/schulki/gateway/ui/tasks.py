"""The Aufgaben tab: a student's open tasks and the chat inside one (with the notice that the teacher reads along);
a teacher's form for a new task, their tasks' students and chats (read only, each read logged), and the stop.

Every event hands the account to the Gateway's lessons (``gateway/lessons/``), which check who may do what; a
task id or a student's name may arrive from any API caller, and is checked there, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from schulki.gateway.context import Gateway
from schulki.gateway.lessons.tasks import TABS
from schulki.gateway.ui.common import handles_errors
from schulki.gateway.ui.task_events import TaskEvents
from schulki.gateway.web.i18n import Strings
from schulki.gateway.web.safe_markup import safe_chatbot

NOTICE = "Deine Lehrkraft kann die Chats in dieser Aufgabe lesen."
"""The notice on every student's task page (German on both pages: it is the school's word to its students)."""
TEXTS = {
    "de": {
        "tab": "Aufgaben",
        "mine": "Meine Aufgaben",
        "none": "Gerade hast du keine Aufgaben.",
        "pick": "Aufgabe",
        "code": "Code einer Aufgabe",
        "join": "Mit Code öffnen",
        "message": "Deine Nachricht",
        "send": "Senden",
        "stop": "Stopp",
        "new": "Neue Aufgabe anlegen",
        "title": "Titel",
        "instructions": "Anweisungen an die KI (Systemprompt)",
        "model": "Modell",
        "workspace": "Dokumente als Wissen",
        "no_documents": "keine",
        "tabs": "Erlaubte Bereiche",
        "classes": "Klassen",
        "start": "Beginn (TT.MM.JJJJ HH:MM, leer: jetzt)",
        "end": "Ende (TT.MM.JJJJ HH:MM)",
        "budget": "Token-Budget (aus deinem Tageskontingent)",
        "with_code": "Auch per Code teilen",
        "create": "Aufgabe anlegen",
        "created": "Die Aufgabe „{title}“ ist angelegt (Nummer {id}).",
        "created_code": " Code für Schülerinnen und Schüler ohne diese Klasse: **`{code}`** (wird nur jetzt gezeigt).",
        "teaching": "Aufgaben meiner Klassen (Lehrkraft)",
        "own": "Meine angelegten Aufgaben",
        "students": "Schülerinnen und Schüler",
        "show": "Übersicht",
        "student": "Schülerin / Schüler",
        "read": "Chat lesen (wird protokolliert)",
        "pause": "Aufgabe pausieren (Notstopp)",
        "resume": "Aufgabe fortsetzen",
        "class": "Klasse",
        "pause_class": "Ganze Klasse pausieren (Notstopp)",
        "resume_class": "Klasse fortsetzen",
        "paused": "Angehalten: {what}. {count} laufende Antworten beendet.",
        "resumed": "Fortgesetzt: {what}.",
        "state_open": "offen",
        "state_closed": "geschlossen",
        "state_paused": "pausiert",
        "state_not_yet": "noch nicht offen",
        "window": "{start} bis {end}",
        "usage": "Verbraucht: {used} von {budget} Tokens",
        "col_name": "Name",
        "col_messages": "Nachrichten",
        "col_requests": "Anfragen",
        "col_tokens": "Tokens",
    },
    "en": {
        "tab": "Tasks",
        "mine": "My tasks",
        "none": "You have no tasks right now.",
        "pick": "Task",
        "code": "A task's code",
        "join": "Open with code",
        "message": "Your message",
        "send": "Send",
        "stop": "Stop",
        "new": "Create a task",
        "title": "Title",
        "instructions": "Instructions for the AI (system prompt)",
        "model": "Model",
        "workspace": "Documents as knowledge",
        "no_documents": "none",
        "tabs": "Allowed tabs",
        "classes": "Classes",
        "start": "Start (DD.MM.YYYY HH:MM, empty: now)",
        "end": "End (DD.MM.YYYY HH:MM)",
        "budget": "Token budget (from your daily quota)",
        "with_code": "Share by code too",
        "create": "Create task",
        "created": "The task “{title}” is created (number {id}).",
        "created_code": " Code for students without this class: **`{code}`** (shown only now).",
        "teaching": "Tasks of my classes (teacher)",
        "own": "Tasks I created",
        "students": "Students",
        "show": "Overview",
        "student": "Student",
        "read": "Read chat (logged)",
        "pause": "Pause task (emergency stop)",
        "resume": "Resume task",
        "class": "Class",
        "pause_class": "Pause whole class (emergency stop)",
        "resume_class": "Resume class",
        "paused": "Stopped: {what}. {count} running answers ended.",
        "resumed": "Resumed: {what}.",
        "state_open": "open",
        "state_closed": "closed",
        "state_paused": "paused",
        "state_not_yet": "not open yet",
        "window": "{start} to {end}",
        "usage": "Used: {used} of {budget} tokens",
        "col_name": "Name",
        "col_messages": "Messages",
        "col_requests": "Requests",
        "col_tokens": "Tokens",
    },
}


def texts(s: Strings) -> dict[str, str]:
    return TEXTS.get(s.lang, TEXTS["de"])


@dataclass
class _StudentPart:
    listing: gr.Markdown
    pick: gr.Dropdown
    code_row: gr.Row
    code: gr.Textbox
    join: gr.Button
    info: gr.Markdown
    chatbot: gr.Chatbot
    message: gr.Textbox
    send: gr.Button
    stop: gr.Button


@dataclass
class _TeacherPart:
    box: gr.Accordion
    title: gr.Textbox
    instructions: gr.Textbox
    model: gr.Dropdown
    workspace: gr.Dropdown
    tabs: gr.CheckboxGroup
    classes: gr.Dropdown
    start: gr.Textbox
    end: gr.Textbox
    budget: gr.Number
    with_code: gr.Checkbox
    create: gr.Button
    result: gr.Markdown
    own: gr.Dropdown
    show: gr.Button
    usage: gr.Markdown
    students: gr.Dataframe
    student: gr.Dropdown
    read: gr.Button
    read_chat: gr.Chatbot
    pause: gr.Button
    resume: gr.Button
    pause_class_name: gr.Dropdown
    pause_class: gr.Button
    resume_class: gr.Button


def _student_part(t: dict[str, str]) -> _StudentPart:
    listing = gr.Markdown(elem_id="task-list")
    # the picked task's id is what the chat sends (any API caller may send any id: the Gateway checks it)
    pick = gr.Dropdown([], label=t["pick"], elem_id="task-pick", allow_custom_value=True)
    with gr.Row(visible=False) as code_row:
        code = gr.Textbox(label=t["code"], elem_id="task-code", scale=4, max_length=64)
        join = gr.Button(t["join"], elem_id="task-join", scale=1)
    info = gr.Markdown(elem_id="task-info")
    gr.Markdown(f"🔎 **{NOTICE}**", elem_id="task-notice")
    chatbot = safe_chatbot(label=t["tab"], height=360, buttons=["copy"], feedback_options=None, elem_id="task-chatbot")
    with gr.Row():
        message = gr.Textbox(label=t["message"], scale=5, elem_id="task-input")
        send = gr.Button(t["send"], variant="primary", scale=1, elem_id="task-send")
        stop = gr.Button(t["stop"], variant="stop", scale=1, elem_id="task-stop")
    return _StudentPart(listing, pick, code_row, code, join, info, chatbot, message, send, stop)


def _teacher_part(t: dict[str, str]) -> _TeacherPart:
    with gr.Accordion(t["teaching"], open=True, visible=False, elem_id="task-teacher") as box:
        with gr.Accordion(t["new"], open=True):
            title = gr.Textbox(label=t["title"], elem_id="task-title", max_length=120)
            instructions = gr.Textbox(label=t["instructions"], lines=4, elem_id="task-instructions")
            with gr.Row():
                model = gr.Dropdown([], label=t["model"], elem_id="task-model", allow_custom_value=True)
                workspace = gr.Dropdown([], label=t["workspace"], elem_id="task-workspace", allow_custom_value=True)
            tabs = gr.CheckboxGroup(list(TABS), value=["chat"], label=t["tabs"], elem_id="task-tabs")
            # the teacher's own classes are filled in per user; any value may arrive through the API, the Gateway checks it
            classes = gr.Dropdown([], multiselect=True, label=t["classes"], elem_id="task-classes", allow_custom_value=True)
            with gr.Row():
                start = gr.Textbox(label=t["start"], elem_id="task-start")
                end = gr.Textbox(label=t["end"], elem_id="task-end")
                budget = gr.Number(label=t["budget"], precision=0, elem_id="task-budget")
            with_code = gr.Checkbox(label=t["with_code"], value=False, visible=False, elem_id="task-with-code")
            create = gr.Button(t["create"], variant="primary", elem_id="task-create")
        result = gr.Markdown(elem_id="task-result")
        with gr.Row():
            own = gr.Dropdown([], label=t["own"], elem_id="task-own", allow_custom_value=True, scale=4)
            show = gr.Button(t["show"], elem_id="task-show", scale=1)
        usage = gr.Markdown(elem_id="task-usage")
        students = gr.Dataframe(
            headers=[t["col_name"], t["col_messages"], t["col_requests"], t["col_tokens"]], label=t["students"], interactive=False
        )
        with gr.Row():
            student = gr.Dropdown([], label=t["student"], elem_id="task-student", allow_custom_value=True, scale=4)
            read = gr.Button(t["read"], elem_id="task-read", scale=1)
        read_chat = safe_chatbot(label=t["read"], height=300, feedback_options=None, elem_id="task-read-chat")
        with gr.Row():
            pause = gr.Button(t["pause"], variant="stop", elem_id="task-pause")
            resume = gr.Button(t["resume"], elem_id="task-resume")
        with gr.Row():
            pause_class_name = gr.Dropdown([], label=t["class"], elem_id="task-pause-class-name", allow_custom_value=True)
            pause_class = gr.Button(t["pause_class"], variant="stop", elem_id="task-pause-class")
            resume_class = gr.Button(t["resume_class"], elem_id="task-resume-class")
    return _TeacherPart(
        box, title, instructions, model, workspace, tabs, classes, start, end, budget, with_code, create, result, own, show, usage,
        students, student, read, read_chat, pause, resume, pause_class_name, pause_class, resume_class,
    )  # fmt: skip


def build_tasks_tab(gateway: Gateway, s: Strings, demo: gr.Blocks) -> None:
    t = texts(s)
    student = _student_part(t)
    teacher = _teacher_part(t)
    shown = handles_errors(s)
    events = TaskEvents(gateway, s, t)
    p, q = student, teacher
    demo.load(
        shown(events.load),
        None,
        [p.listing, p.pick, p.code_row, q.box, q.model, q.workspace, q.classes, q.budget, q.with_code, q.own, q.pause_class_name],
        api_name="tasks_load",
    )
    p.pick.change(shown(events.open_task), p.pick, [p.info, p.chatbot], api_name="tasks_open")
    p.join.click(shown(events.join), p.code, [p.listing, p.pick], api_name="tasks_join")
    submitted = p.message.submit(shown(events.send), [p.pick, p.message], [p.chatbot, p.message], api_name="tasks_send")
    clicked = p.send.click(shown(events.send), [p.pick, p.message], [p.chatbot, p.message], api_name="tasks_send_click")
    p.stop.click(None, cancels=[submitted, clicked], api_name="tasks_stop")
    form = [q.title, q.instructions, q.model, q.workspace, q.tabs, q.classes, q.start, q.end, q.budget, q.with_code]
    q.create.click(shown(events.create), form, [q.result, q.own], api_name="tasks_create")
    q.show.click(shown(events.overview), q.own, [q.usage, q.students, q.student], api_name="tasks_students")
    q.read.click(shown(events.read), [q.own, q.student], [q.read_chat, q.usage], api_name="tasks_read")
    q.pause.click(shown(events.pause_task(True)), q.own, q.result, api_name="tasks_pause")
    q.resume.click(shown(events.pause_task(False)), q.own, q.result, api_name="tasks_resume")
    q.pause_class.click(shown(events.pause_class(True)), q.pause_class_name, q.result, api_name="tasks_pause_class")
    q.resume_class.click(shown(events.pause_class(False)), q.pause_class_name, q.result, api_name="tasks_resume_class")
