"""Flag records: who was flagged, when, for which category and with which outcome; the text only where the school
turned that on (``moderation.store_text``).

A flag is for the people responsible for the child: the teachers of the user's classes and the admins. A teacher
sees the flags of the students of her own classes only; a student sees none (``TeachersOnly``). Flags are kept
``moderation.flag_retention_days`` days and go with the user's other data when the user is deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Integer, String, Text, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from schulki.gateway.accounts.database import Account, Accounts, create_tables

EXCERPT_CHARS = 500
"""Most characters of a flagged text kept, where the school keeps the text at all."""


class TeachersOnly(Exception):
    """The flag view asked for by a student (the error table: 403, "Nur für Lehrkräfte und Admins.")."""


class _Base(DeclarativeBase):
    pass


class _FlagRow(_Base):
    __tablename__ = "moderation_flags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    at: Mapped[int] = mapped_column(Integer, index=True)
    category: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(8))
    text: Mapped[str | None] = mapped_column(Text, nullable=True)


@dataclass(frozen=True)
class Flag:
    """One flag as the view shows it."""

    user: str
    classes: tuple[str, ...]
    at: int
    category: str
    outcome: str
    direction: str
    """"input" (what the user wrote) or "output" (what the model answered)."""
    text: str | None


class Flags:
    """The flag table in the accounts database; every call blocks (run it off the event loop where it matters)."""

    def __init__(self, engine: Engine) -> None:
        create_tables(engine, _Base.metadata)
        self._session = sessionmaker(engine, expire_on_commit=False)

    def add(self, user_id: int, category: str, outcome: str, direction: str, text: str | None) -> None:
        row = _FlagRow(
            user_id=user_id,
            at=int(time.time()),
            category=category,
            outcome=outcome,
            direction=direction,
            text=text[:EXCERPT_CHARS] if text is not None else None,
        )
        with self._session.begin() as db:
            db.add(row)

    def visible_to(self, viewer: Account, accounts: Accounts, limit: int = 500) -> list[Flag]:
        """The newest flags the viewer may see: an admin every user's, a teacher those of the students of her classes;
        TeachersOnly for anyone else."""
        if viewer.role not in ("teacher", "admin"):
            raise TeachersOnly()
        users = {account.id: account for account in accounts.list_users()}
        if viewer.role == "admin":
            allowed = set(users)
        else:
            mine = set(viewer.classes)
            allowed = {uid for uid, account in users.items() if account.role == "student" and mine & set(account.classes)}
        if not allowed:
            return []
        with self._session() as db:
            query = select(_FlagRow).where(_FlagRow.user_id.in_(allowed)).order_by(_FlagRow.at.desc(), _FlagRow.id.desc()).limit(limit)
            rows = list(db.scalars(query))
        return [
            Flag(users[row.user_id].name, users[row.user_id].classes, row.at, row.category, row.outcome, row.direction, row.text)
            for row in rows
        ]

    def of_user(self, user_id: int) -> list[dict[str, object]]:
        """The user's own flags, oldest first, for the export of their data (their right of access)."""
        with self._session() as db:
            rows = list(db.scalars(select(_FlagRow).where(_FlagRow.user_id == user_id).order_by(_FlagRow.at, _FlagRow.id)))
        return [
            {
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row.at)),
                "category": row.category,
                "outcome": row.outcome,
                "direction": row.direction,
                "text": row.text,
            }
            for row in rows
        ]

    def purge(self, days: int, now: float | None = None) -> int:
        """Delete the flags older than ``days``; how many."""
        cutoff = int((time.time() if now is None else now) - days * 86400)
        with self._session.begin() as db:
            return db.execute(delete(_FlagRow).where(_FlagRow.at < cutoff)).rowcount or 0  # type: ignore[attr-defined]

    def forget_user(self, user_id: int) -> int:
        with self._session.begin() as db:
            return db.execute(delete(_FlagRow).where(_FlagRow.user_id == user_id)).rowcount or 0  # type: ignore[attr-defined]
