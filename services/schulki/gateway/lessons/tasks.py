"""Tasks (Aufgaben): who may make, see, open and pause one, and the task's token budget.

The rules, each asked inside the method that needs it, with the caller's account:

- A teacher (or an admin) makes a task for classes of their own (an admin for
  any class); the task belongs to them alone.
- A student sees a task shared with one of their classes, or one whose code
  they entered; every other task does not exist for them (the same answer
  for a task id that exists elsewhere and one that does not).
- A task is open from its start to its end, unless its teacher paused it or
  one of its classes (or one of the student's classes) is paused.
- A task's answers draw from its budget (reserved before, settled after, as
  the chat quota is); the budget came out of the teacher's daily quota.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from schulki.config import LessonsConfig
from schulki.gateway.accounts.database import CLASS_PATTERN, Account, Base, Setting, User, create_tables
from schulki.gateway.accounts.rate_windows import SharedWindow
from schulki.gateway.lessons.running import RunningAnswers
from schulki.gateway.lessons.tables import ClassPause, Task, TaskChat, TaskClass, TaskJoin

TABS = ("chat", "documents", "transcription", "translate", "thinking")
"""The tabs a teacher may allow beside a task."""
CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
"""Letters and digits of a task's code: no 0/o, 1/l/i look-alikes."""
CODES_SETTING = "task_codes_allowed"
"""The settings-table key of the admin's choice whether tasks may be shared by code."""
MAX_INSTRUCTIONS = 8000
NOT_FOUND = "Diese Aufgabe gibt es nicht, oder sie ist nicht für dich freigegeben. (No such task for you.)"


class TaskRefused(Exception):
    """A task operation that cannot be done; ``message`` is German first and safe to show, ``status`` the HTTP status."""

    def __init__(self, status: int, message: str, code: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.retry_after_s = status, message, code, retry_after_s


def _not_found() -> TaskRefused:
    return TaskRefused(404, NOT_FOUND, "task_not_found")


@dataclass(frozen=True)
class TaskForm:
    """What a teacher fills in; times as the seconds since 1970."""

    title: str
    instructions: str
    model: str
    workspace: str
    tabs: tuple[str, ...]
    classes: tuple[str, ...]
    starts_at: int
    ends_at: int
    token_budget: int
    with_code: bool


@dataclass(frozen=True)
class TaskView:
    """A task as its teacher and its students see it."""

    id: int
    title: str
    instructions: str
    model: str
    workspace: str
    tabs: tuple[str, ...]
    classes: tuple[str, ...]
    starts_at: int
    ends_at: int
    token_budget: int
    tokens_used: int
    paused: bool
    owner_id: int


def code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().lower().encode()).hexdigest()


def task_id_of(value: Any) -> int:
    """A task id as an API caller may send it (anything); TaskRefused 404 for what cannot be one."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise _not_found() from None
    if not 0 < number < 2**63:
        raise _not_found()
    return number


class Lessons:
    """Every read and write of tasks; the Gateway calls it with the account of whoever asks."""

    def __init__(self, engine: Engine, config: LessonsConfig) -> None:
        create_tables(engine, Base.metadata)
        self.config = config
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._codes = SharedWindow(engine, "task_codes", 3600.0)
        self.running = RunningAnswers()

    # -- times ---------------------------------------------------------------------------------------------------

    def parse_time(self, text: str | None, default: int) -> int:
        """A teacher's time, ``2026-12-07 08:00`` (seconds optional) or ``07.12.2026 08:00``, in the school's zone."""
        text = (text or "").strip() if isinstance(text, str) else ""
        if not text:
            return default
        for pattern in (
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M",
            "%d.%m.%Y %H:%M:%S",
            "%d.%m.%Y %H:%M",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M",
        ):
            try:
                found = datetime.strptime(text, pattern)
            except ValueError:
                continue
            return int(found.replace(tzinfo=ZoneInfo(self.config.timezone)).timestamp())
        raise TaskRefused(400, f"Unbekannte Zeitangabe „{text[:40]}“: bitte wie 07.12.2026 08:00. (Time as 07.12.2026 08:00.)", "bad_time")

    def show_time(self, seconds: int) -> str:
        return datetime.fromtimestamp(seconds, ZoneInfo(self.config.timezone)).strftime("%d.%m.%Y %H:%M:%S")

    # -- making and listing ------------------------------------------------------------------------------------------

    def codes_allowed(self) -> bool:
        with self._session() as db:
            row = db.get(Setting, CODES_SETTING)
        return self.config.codes_allowed if row is None else row.value == "1"

    def set_codes_allowed(self, allowed: bool) -> None:
        """The admin's choice (the caller checked the admin role)."""
        with self._session.begin() as db:
            row = db.get(Setting, CODES_SETTING)
            if row is None:
                db.add(Setting(key=CODES_SETTING, value="1" if allowed else "0"))
            else:
                row.value = "1" if allowed else "0"

    def check_form(self, teacher: Account, form: TaskForm) -> None:
        """Everything of a new task but its model, documents and budget (the Gateway checks those with the services)."""
        if teacher.role not in ("teacher", "admin"):
            raise TaskRefused(403, "Nur Lehrkräfte können Aufgaben anlegen. (Only teachers make tasks.)", "teachers_only")
        if not form.title.strip() or len(form.title) > 120:
            raise TaskRefused(
                400, "Die Aufgabe braucht einen Titel (höchstens 120 Zeichen). (A title of at most 120 characters.)", "bad_title"
            )
        if len(form.instructions) > MAX_INSTRUCTIONS:
            raise TaskRefused(400, f"Die Anweisungen sind zu lang: höchstens {MAX_INSTRUCTIONS} Zeichen.", "bad_instructions")
        if not form.classes:
            raise TaskRefused(400, "Wähle mindestens eine Klasse. (Choose at least one class.)", "no_class")
        for class_name in form.classes:
            if not CLASS_PATTERN.match(class_name) or (teacher.role == "teacher" and class_name not in teacher.classes):
                raise TaskRefused(403, "Aufgaben nur für deine eigenen Klassen. (Only for your own classes.)", "not_your_class")
        unknown = set(form.tabs) - set(TABS)
        if unknown:
            raise TaskRefused(400, f"Unbekannte Bereiche: {', '.join(sorted(unknown))[:80]}.", "bad_tabs")
        if form.ends_at <= form.starts_at or form.ends_at <= time.time():
            raise TaskRefused(
                400, "Das Ende muss nach dem Beginn und in der Zukunft liegen. (The end must follow the start.)", "bad_window"
            )
        if form.ends_at - form.starts_at > self.config.max_days * 86400:
            raise TaskRefused(400, f"Eine Aufgabe dauert höchstens {self.config.max_days} Tage.", "bad_window")
        if form.token_budget < 1:
            raise TaskRefused(400, "Das Token-Budget muss mindestens 1 sein.", "bad_budget")
        if form.with_code and not self.codes_allowed():
            raise TaskRefused(403, "Aufgaben per Code zu teilen hat die Schule nicht erlaubt. (Sharing by code is off.)", "codes_off")

    def create(self, teacher: Account, form: TaskForm) -> tuple[int, str | None]:
        """Store a checked task; returns its id and its code (shown once: only its hash is kept)."""
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(self.config.code_length)) if form.with_code else None
        with self._session.begin() as db:
            task = Task(
                owner_id=teacher.id,
                title=form.title.strip(),
                instructions=form.instructions.strip(),
                model=form.model,
                workspace=form.workspace,
                tabs_json=json.dumps(list(form.tabs)),
                starts_at=form.starts_at,
                ends_at=form.ends_at,
                token_budget=form.token_budget,
                tokens_used=0,
                code_hash=code_hash(code) if code else None,
                paused=0,
            )
            db.add(task)
            db.flush()
            for class_name in dict.fromkeys(form.classes):
                db.add(TaskClass(task_id=task.id, class_name=class_name))
            return task.id, code

    def _view(self, db: Session, task: Task) -> TaskView:
        classes = tuple(db.scalars(select(TaskClass.class_name).where(TaskClass.task_id == task.id).order_by(TaskClass.class_name)))
        return TaskView(
            task.id,
            task.title,
            task.instructions,
            task.model,
            task.workspace,
            tuple(json.loads(task.tabs_json)),
            classes,
            task.starts_at,
            task.ends_at,
            task.token_budget,
            task.tokens_used,
            bool(task.paused),
            task.owner_id,
        )

    def _shared_with(self, account: Account) -> Any:
        """The condition for the tasks a user takes part in: one of their classes, or a code they entered."""
        joined = select(TaskJoin.task_id).where(TaskJoin.user_id == account.id)
        in_class = select(TaskClass.task_id).where(TaskClass.class_name.in_(account.classes))
        return or_(Task.id.in_(joined), Task.id.in_(in_class))

    def for_student(self, account: Account) -> list[TaskView]:
        """The tasks the user takes part in that have not ended more than a day ago, the soonest end first."""
        with self._session() as db:
            rows = db.scalars(
                select(Task).where(self._shared_with(account), Task.ends_at > time.time() - 86400).order_by(Task.ends_at, Task.id)
            )
            return [self._view(db, task) for task in rows]

    def owned(self, teacher: Account) -> list[TaskView]:
        with self._session() as db:
            return [self._view(db, task) for task in db.scalars(select(Task).where(Task.owner_id == teacher.id).order_by(Task.id.desc()))]

    def taking_part(self, account: Account, task_id: Any) -> TaskView:
        """A task the user takes part in (a class of theirs, or its code); TaskRefused 404 for any other."""
        number = task_id_of(task_id)
        with self._session() as db:
            task = db.scalar(select(Task).where(Task.id == number, self._shared_with(account)))
            if task is None:
                raise _not_found()
            return self._view(db, task)

    def own(self, teacher: Account, task_id: Any) -> TaskView:
        """A task of the teacher's own; TaskRefused 404 for any other (another teacher's too)."""
        number = task_id_of(task_id)
        with self._session() as db:
            task = db.get(Task, number)
            if task is None or task.owner_id != teacher.id or teacher.role not in ("teacher", "admin"):
                raise _not_found()
            return self._view(db, task)

    def join(self, account: Account, code: Any) -> TaskView:
        """Take part in a task by its code, if the school allows codes; each try counts (code_attempts_per_hour)."""
        if not self.codes_allowed():
            raise TaskRefused(403, "Aufgaben per Code sind an dieser Schule ausgeschaltet. (Task codes are off.)", "codes_off")
        wait = self._codes.try_add(str(account.id), self.config.code_attempts_per_hour)
        if wait:
            minutes = int(wait // 60) + 1
            raise TaskRefused(
                429, f"Zu viele Codes versucht. Bitte warte {minutes} Minuten. (Too many codes tried.)", "too_many_codes", int(wait) + 1
            )
        text = code.strip().lower() if isinstance(code, str) else ""
        with self._session.begin() as db:
            task = db.scalar(select(Task).where(Task.code_hash == code_hash(text))) if 0 < len(text) <= 64 else None
            if task is None or task.ends_at <= time.time():
                raise TaskRefused(404, "Diesen Code gibt es nicht (oder die Aufgabe ist vorbei). (Unknown code.)", "unknown_code")
            if db.get(TaskJoin, (task.id, account.id)) is None:
                db.add(TaskJoin(task_id=task.id, user_id=account.id))
            db.flush()
            return self._view(db, task)

    # -- open, closed, paused ----------------------------------------------------------------------------------------

    def closed_reason(self, task_id: int, classes: frozenset[str]) -> str | None:
        """Why a task's answer may not run now: "paused", "not_yet", "closed", or None while it is open."""
        with self._session() as db:
            task = db.get(Task, task_id)
            if task is None:
                return "closed"
            task_classes = set(db.scalars(select(TaskClass.class_name).where(TaskClass.task_id == task_id)))
            paused_classes = set(db.scalars(select(ClassPause.class_name).where(ClassPause.class_name.in_(task_classes | set(classes)))))
            now = time.time()
            if task.paused or paused_classes:
                return "paused"
            if now < task.starts_at:
                return "not_yet"
            if now >= task.ends_at:
                return "closed"
            return None

    def class_paused(self, classes: frozenset[str] | tuple[str, ...]) -> bool:
        with self._session() as db:
            return db.scalar(select(ClassPause.class_name).where(ClassPause.class_name.in_(list(classes)))) is not None

    def paused_classes(self) -> list[str]:
        with self._session() as db:
            return list(db.scalars(select(ClassPause.class_name).order_by(ClassPause.class_name)))

    def pause_task(self, teacher: Account, task_id: Any, paused: bool) -> int:
        """Pause (or resume) a task of the teacher's own; its running answers end at once. Returns how many ended."""
        view = self.own(teacher, task_id)
        with self._session.begin() as db:
            task = db.get(Task, view.id)
            if task is not None:
                task.paused = int(paused)
        return self.running.stop_task(view.id) if paused else 0

    def pause_class(self, teacher: Account, class_name: Any, paused: bool) -> int:
        """Pause (or resume) a whole class of the teacher's own (an admin: any class); its running answers end at once."""
        name = class_name if isinstance(class_name, str) else ""
        if (
            teacher.role not in ("teacher", "admin")
            or not CLASS_PATTERN.match(name)
            or (teacher.role == "teacher" and name not in teacher.classes)
        ):
            raise TaskRefused(403, "Nur deine eigenen Klassen kannst du anhalten. (Only your own classes.)", "not_your_class")
        with self._session.begin() as db:
            db.execute(delete(ClassPause).where(ClassPause.class_name == name))
            if paused:
                db.add(ClassPause(class_name=name, teacher_id=teacher.id))
        return self.running.stop_class(name) if paused else 0

    # -- the budget and the student's conversation -------------------------------------------------------------------

    def reserve(self, task_id: int, prompt_tokens: int, max_tokens: int) -> int | None:
        """Set aside the prompt and the longest answer against the task's budget (the row locked, as the chat quota
        does); the answer tokens granted, or None when not even the prompt and one token are left."""
        with self._session.begin() as db:
            task = db.get(Task, task_id, with_for_update=True)
            if task is None:
                return None
            granted = min(max_tokens, task.token_budget - task.tokens_used - prompt_tokens)
            if granted < 1:
                return None
            task.tokens_used += prompt_tokens + granted
            return granted

    def settle(self, task_id: int, user_id: int, reserved: int, used: int, messages: list[dict] | None) -> None:
        """Replace a reservation by what the answer used, count it on the student's conversation, and store it."""
        with self._session.begin() as db:
            task = db.get(Task, task_id, with_for_update=True)
            if task is None:
                return
            task.tokens_used += used - reserved
            chat = db.scalar(select(TaskChat).where(TaskChat.task_id == task_id, TaskChat.user_id == user_id))
            if chat is None:
                chat = TaskChat(task_id=task_id, user_id=user_id, messages_json="[]", tokens=0, requests=0)
                db.add(chat)
            chat.tokens += used
            chat.requests += 1
            if messages is not None:
                chat.messages_json = json.dumps(messages, ensure_ascii=False)
            chat.updated_at = int(time.time())

    def conversation(self, account: Account, task_id: Any) -> list[dict]:
        """The user's own conversation in a task they take part in."""
        view = self.taking_part(account, task_id)
        with self._session() as db:
            chat = db.scalar(select(TaskChat).where(TaskChat.task_id == view.id, TaskChat.user_id == account.id))
            return json.loads(chat.messages_json) if chat else []

    def owner_name(self, view: TaskView) -> str:
        with self._session() as db:
            user = db.get(User, view.owner_id)
            return user.name if user else "?"
