"""The Admin tab's part on tasks: the log of teachers' reads of students' task chats, and whether tasks may be shared by code."""

from __future__ import annotations

import gradio as gr

from schulki.gateway.context import Gateway
from schulki.gateway.ui.common import as_admin, handles_errors
from schulki.gateway.web.i18n import Strings

TEXTS = {
    "de": {
        "title": "Aufgaben: Leseprotokoll der Lehrkräfte",
        "show": "Leseprotokoll zeigen",
        "when": "Zeit",
        "teacher": "Lehrkraft",
        "student": "Schülerin / Schüler",
        "task": "Aufgabe",
        "codes": "Lehrkräfte dürfen Aufgaben auch per Code teilen",
        "save": "Speichern",
        "saved": "Gespeichert: Aufgaben per Code sind {state}.",
        "on": "erlaubt",
        "off": "nicht erlaubt",
    },
    "en": {
        "title": "Tasks: teachers' read log",
        "show": "Show read log",
        "when": "Time",
        "teacher": "Teacher",
        "student": "Student",
        "task": "Task",
        "codes": "Teachers may share tasks by code too",
        "save": "Save",
        "saved": "Saved: task codes are {state}.",
        "on": "allowed",
        "off": "not allowed",
    },
}


def build_task_reads_section(gateway: Gateway, s: Strings) -> None:
    t = TEXTS.get(s.lang, TEXTS["de"])
    shown = handles_errors(s)
    with gr.Accordion(t["title"], open=False):
        show = gr.Button(t["show"], elem_id="admin-task-reads-show")
        log = gr.Dataframe(headers=[t["when"], t["teacher"], t["student"], t["task"]], interactive=False, elem_id="admin-task-reads")
        with gr.Row():
            codes = gr.Checkbox(label=t["codes"], value=False, elem_id="admin-task-codes")
            save = gr.Button(t["save"], elem_id="admin-task-codes-save")
        result = gr.Markdown(elem_id="admin-task-codes-result")

    def read_log(request: gr.Request) -> tuple[list[list], bool]:
        def work() -> tuple[list[list], bool]:
            rows = [
                [gateway.lessons.show_time(e.read_at), e.teacher, e.student, f"{e.task_title} (#{e.task_id})"]
                for e in gateway.oversight.log()
            ]
            return rows, gateway.lessons.codes_allowed()

        return as_admin(gateway, s, request, work)

    def set_codes(allowed: bool, request: gr.Request) -> str:
        def work() -> str:
            gateway.lessons.set_codes_allowed(bool(allowed))
            return t["saved"].format(state=t["on"] if gateway.lessons.codes_allowed() else t["off"])

        return as_admin(gateway, s, request, work)

    show.click(shown(read_log), None, [log, codes], api_name="admin_task_reads")
    save.click(shown(set_codes), codes, result, api_name="admin_task_codes")
