"""The Aufgaben tab's event handlers: each asks the Gateway's lessons with the event's account, which check it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import gradio as gr

from schulki.gateway.accounts.database import Account
from schulki.gateway.context import Gateway
from schulki.gateway.lessons.tasks import TaskForm, TaskView
from schulki.gateway.ui.common import account_of
from schulki.gateway.web.i18n import Strings


class TaskEvents:
    """The tab's handlers for one page language; ``t`` is the tab's texts."""

    def __init__(self, gateway: Gateway, s: Strings, t: dict[str, str]) -> None:
        self.gateway, self.s, self.t = gateway, s, t
        self.lessons, self.oversight = gateway.lessons, gateway.oversight

    def state(self, view: TaskView) -> str:
        reason = self.lessons.closed_reason(view.id, frozenset())
        return self.t[f"state_{reason or 'open'}"]

    def label(self, view: TaskView) -> str:
        return f"{view.title} ({self.state(view)}, {self.t['window'].format(start=self.lessons.show_time(view.starts_at), end=self.lessons.show_time(view.ends_at))})"

    def _choices(self, account: Account) -> tuple[str, list[tuple[str, int]]]:
        views = self.lessons.for_student(account)
        text = "\n".join(f"- **{self.label(v)}**" for v in views) or self.t["none"]
        return f"### {self.t['mine']}\n\n{text}", [(self.label(v), v.id) for v in views]

    def listing(self, request: gr.Request) -> tuple[str, gr.Dropdown]:
        text, choices = self._choices(account_of(self.gateway, request, self.s))
        return text, gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

    def load(self, request: gr.Request) -> tuple:
        account = account_of(self.gateway, request, self.s)
        teaching = account.role in ("teacher", "admin")
        own = self.lessons.owned(account) if teaching else []
        classes = list(account.classes)
        spaces = [(w.label, w.name) for w in self.gateway.workspaces(account) if w.writable and w.name.startswith("k-")] if teaching else []
        codes = self.lessons.codes_allowed()
        return (
            *self.listing(request),
            gr.Row(visible=codes),
            gr.Accordion(visible=teaching),
            gr.Dropdown(
                choices=self.gateway.models.allowed(account) if teaching else [],
                value=self.gateway.models.preselected(account) if teaching else None,
            ),
            gr.Dropdown(choices=[(self.t["no_documents"], ""), *spaces], value=""),
            gr.Dropdown(choices=classes, value=[]),
            gr.Number(value=self.lessons.config.default_budget),
            gr.Checkbox(visible=codes and teaching),
            gr.Dropdown(choices=[(f"{v.title} (#{v.id})", v.id) for v in own], value=own[0].id if own else None),
            gr.Dropdown(choices=classes, value=classes[0] if classes else None),
        )

    def open_task(self, task_id: int | None, request: gr.Request) -> tuple[str, list[dict]]:
        account = account_of(self.gateway, request, self.s)
        if task_id is None:
            return "", []
        view = self.lessons.taking_part(account, task_id)
        return f"## {view.title}\n\n{self.label(view)}", self.lessons.conversation(account, view.id)

    def join(self, code: str, request: gr.Request) -> tuple[str, gr.Dropdown]:
        account = account_of(self.gateway, request, self.s)
        view = self.lessons.join(account, code)
        text, choices = self._choices(account)
        return text, gr.Dropdown(choices=choices, value=view.id)

    async def send(self, task_id: int | None, message: str, request: gr.Request) -> AsyncIterator[tuple[list[dict], str]]:
        account = account_of(self.gateway, request, self.s)
        async for turn in self.gateway.task_chat(account, task_id, message):
            yield turn.messages, ""

    def create(
        self,
        title: str,
        instructions: str,
        model: str,
        workspace: str,
        tabs: list[str],
        classes: list[str],
        start: str,
        end: str,
        budget: float | None,
        with_code: bool,
        request: gr.Request,
    ) -> tuple[str, gr.Dropdown]:
        account = account_of(self.gateway, request, self.s)
        now = int(time.time())
        form = TaskForm(
            title=title if isinstance(title, str) else "",
            instructions=instructions if isinstance(instructions, str) else "",
            model=model if isinstance(model, str) else "",
            workspace=workspace if isinstance(workspace, str) else "",
            tabs=tuple(x for x in tabs or () if isinstance(x, str)),
            classes=tuple(x for x in classes or () if isinstance(x, str)),
            starts_at=self.lessons.parse_time(start, now),
            ends_at=self.lessons.parse_time(end, 0),
            token_budget=int(budget) if isinstance(budget, (int, float)) else self.lessons.config.default_budget,
            with_code=bool(with_code),
        )
        task_id, code = self.gateway.create_task(account, form)
        own = self.lessons.owned(account)
        text = self.t["created"].format(title=form.title.strip(), id=task_id) + (self.t["created_code"].format(code=code) if code else "")
        return text, gr.Dropdown(choices=[(f"{v.title} (#{v.id})", v.id) for v in own], value=task_id)

    def overview(self, task_id: int | None, request: gr.Request) -> tuple[str, list[list], gr.Dropdown]:
        account = account_of(self.gateway, request, self.s)
        view = self.lessons.own(account, task_id)
        rows = self.oversight.students(account, view.id)
        usage = f"**{view.title}** · {self.label(view)} · {self.t['usage'].format(used=view.tokens_used, budget=view.token_budget)}"
        names = [row.name for row in rows]
        table = [[row.name, row.messages, row.requests, row.tokens] for row in rows]
        return usage, table, gr.Dropdown(choices=names, value=names[0] if names else None)

    def read(self, task_id: int | None, name: str | None, request: gr.Request) -> tuple[list[dict], str]:
        messages, usage = self.oversight.read(account_of(self.gateway, request, self.s), task_id, name)
        return messages, f"**{usage.name}**: {usage.messages} {self.t['col_messages']}, {usage.tokens} {self.t['col_tokens']}"

    def pause_task(self, paused: bool) -> Callable[[int | None, gr.Request], str]:
        """The handler of the task's stop (or resume) button."""

        def handler(task_id: int | None, request: gr.Request) -> str:
            account = account_of(self.gateway, request, self.s)
            count = self.lessons.pause_task(account, task_id, paused)
            what = self.lessons.own(account, task_id).title
            return self.t["paused"].format(what=what, count=count) if paused else self.t["resumed"].format(what=what)

        return handler

    def pause_class(self, paused: bool) -> Callable[[str | None, gr.Request], str]:
        """The handler of the class's stop (or resume) button."""

        def handler(class_name: str | None, request: gr.Request) -> str:
            count = self.lessons.pause_class(account_of(self.gateway, request, self.s), class_name, paused)
            what = f"{self.t['class']} {class_name}"
            return self.t["paused"].format(what=what, count=count) if paused else self.t["resumed"].format(what=what)

        return handler
