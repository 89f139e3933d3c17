"""The lessons' tables, on the accounts database (SQLite or PostgreSQL, created with the accounts' tables).

A task belongs to the teacher who made it (``owner_id``); it is shared with
classes (``task_classes``) and, where the admin allows codes, with the
students who entered its code (``task_joins``). Each student has one
conversation per task (``task_chats``) with its token count; every time a
teacher opens one, a row in ``task_reads`` says who read whose chat in
which task, and when. Rows that name a user go with that user's account
(``ON DELETE CASCADE``); a read log row keeps the teacher's name as text, so
the log still says who read after the teacher's account is gone.
"""

from __future__ import annotations

import time

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from schulki.gateway.accounts.database import Base


def _now() -> int:
    return int(time.time())


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(120))
    instructions: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200))
    workspace: Mapped[str] = mapped_column(String(64), default="")
    """The class workspace whose documents are the task's knowledge; empty for none."""
    tabs_json: Mapped[str] = mapped_column(Text, default="[]")
    starts_at: Mapped[int] = mapped_column(Integer)
    ends_at: Mapped[int] = mapped_column(Integer, index=True)
    token_budget: Mapped[int] = mapped_column(Integer)
    tokens_used: Mapped[int] = mapped_column(Integer, default=0)
    code_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    paused: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(Integer, default=_now)


class TaskClass(Base):
    __tablename__ = "task_classes"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    class_name: Mapped[str] = mapped_column(String(48), primary_key=True, index=True)


class TaskJoin(Base):
    """A student who opened a task with its code (students of its classes need none)."""

    __tablename__ = "task_joins"

    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)


class TaskChat(Base):
    __tablename__ = "task_chats"
    __table_args__ = (Index("task_chats_by_task_user", "task_id", "user_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    messages_json: Mapped[str] = mapped_column(Text, default="[]")
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[int] = mapped_column(Integer, default=_now, index=True)


class TaskRead(Base):
    """One teacher's read of one student's chat in one task: the log the admin sees."""

    __tablename__ = "task_reads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    teacher_id: Mapped[int] = mapped_column(Integer)
    teacher_name: Mapped[str] = mapped_column(String(48))
    student_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    student_name: Mapped[str] = mapped_column(String(48))
    task_id: Mapped[int] = mapped_column(Integer)
    task_title: Mapped[str] = mapped_column(String(120))
    read_at: Mapped[int] = mapped_column(Integer, default=_now, index=True)


class ClassPause(Base):
    """A class a teacher stopped at once: none of its students' answers run until it is resumed."""

    __tablename__ = "class_pauses"

    class_name: Mapped[str] = mapped_column(String(48), primary_key=True)
    teacher_id: Mapped[int] = mapped_column(Integer)
    paused_at: Mapped[int] = mapped_column(Integer, default=_now)
