"""Oversight with notice: a task's teacher reads the students' chats in it, every read is logged, the admin sees the log.

Only the task's owner reads its chats, and only chats in that task: nothing
a student writes elsewhere is reachable from here. Each opened chat is one
row in ``task_reads`` (teacher, student, task, time) before the chat is
handed out. Task chats and the log have retention periods
(``lessons.task_retention_days`` after the task's end,
``lessons.read_log_retention_days``); a student's copy of their data holds
their task chats and who read them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import delete, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import sessionmaker

from schulki.gateway.accounts.database import Account, User
from schulki.gateway.lessons.tables import Task, TaskChat, TaskRead
from schulki.gateway.lessons.tasks import Lessons, TaskRefused


@dataclass(frozen=True)
class StudentUsage:
    """One student's conversation in a task, as the teacher's overview lists it (no content)."""

    name: str
    messages: int
    requests: int
    tokens: int


@dataclass(frozen=True)
class ReadEntry:
    read_at: int
    teacher: str
    student: str
    task_id: int
    task_title: str


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class Oversight:
    """The teacher's reads and their log, on the lessons' tables."""

    def __init__(self, lessons: Lessons) -> None:
        self.lessons = lessons
        self._session: sessionmaker = lessons._session

    def students(self, teacher: Account, task_id: Any) -> list[StudentUsage]:
        """Who wrote in a task of the teacher's own, with their use; content only through ``read``."""
        view = self.lessons.own(teacher, task_id)
        with self._session() as db:
            rows = db.execute(
                select(User.name, TaskChat.messages_json, TaskChat.requests, TaskChat.tokens)
                .join(User, User.id == TaskChat.user_id)
                .where(TaskChat.task_id == view.id)
                .order_by(User.name)
            )
            return [StudentUsage(r[0], len(json.loads(r[1])), r[2], r[3]) for r in rows]

    def read(self, teacher: Account, task_id: Any, student_name: Any) -> tuple[list[dict], StudentUsage]:
        """A student's chat in a task of the teacher's own, read only; the read is logged before it is handed out."""
        view = self.lessons.own(teacher, task_id)
        name = student_name if isinstance(student_name, str) else ""
        with self._session.begin() as db:
            found = db.execute(
                select(TaskChat, User).join(User, User.id == TaskChat.user_id).where(TaskChat.task_id == view.id, User.name == name)
            ).first()
            if found is None:
                raise TaskRefused(
                    404, "In dieser Aufgabe gibt es keinen Chat von diesem Namen. (No such chat in this task.)", "chat_not_found"
                )
            chat, student = found
            db.add(
                TaskRead(
                    teacher_id=teacher.id,
                    teacher_name=teacher.name,
                    student_id=student.id,
                    student_name=student.name,
                    task_id=view.id,
                    task_title=view.title,
                )
            )
            messages = json.loads(chat.messages_json)
            return messages, StudentUsage(student.name, len(messages), chat.requests, chat.tokens)

    def log(self, limit: int = 500) -> list[ReadEntry]:
        """The newest reads first (the caller checked the admin role)."""
        with self._session() as db:
            rows = db.scalars(select(TaskRead).order_by(TaskRead.read_at.desc(), TaskRead.id.desc()).limit(limit))
            return [ReadEntry(r.read_at, r.teacher_name, r.student_name, r.task_id, r.task_title) for r in rows]

    def export(self, user_id: int) -> dict:
        """A student's task chats and the reads of them, for their copy of their data."""
        with self._session() as db:
            chats = db.execute(
                select(Task.title, Task.ends_at, TaskChat.messages_json, TaskChat.tokens, TaskChat.updated_at)
                .join(Task, Task.id == TaskChat.task_id)
                .where(TaskChat.user_id == user_id)
                .order_by(TaskChat.updated_at)
            )
            reads = db.scalars(select(TaskRead).where(TaskRead.student_id == user_id).order_by(TaskRead.read_at))
            return {
                "task_chats": [
                    {"task": r[0], "task_ends_at": _iso(r[1]), "tokens": r[3], "updated_at": _iso(r[4]), "messages": json.loads(r[2])}
                    for r in chats
                ],
                "read_by_teachers": [{"teacher": r.teacher_name, "task": r.task_title, "read_at": _iso(r.read_at)} for r in reads],
            }

    def purge(self, now: float | None = None) -> tuple[int, int]:
        """Tasks (with their chats) ended more than task_retention_days ago, and reads older than read_log_retention_days."""
        now = time.time() if now is None else now
        config = self.lessons.config
        with self._session.begin() as db:
            ended = now - config.task_retention_days * 86400
            old = list(db.scalars(select(Task.id).where(Task.ends_at <= ended)))
            chats = cast("CursorResult[Any]", db.execute(delete(TaskChat).where(TaskChat.task_id.in_(old)))).rowcount if old else 0
            if old:
                db.execute(delete(Task).where(Task.id.in_(old)))  # its classes and joins go with it (ON DELETE CASCADE)
            reads = cast(
                "CursorResult[Any]", db.execute(delete(TaskRead).where(TaskRead.read_at <= now - config.read_log_retention_days * 86400))
            )
            return chats, reads.rowcount
