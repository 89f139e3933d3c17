"""Sliding windows of events (login failures, logins, requests) kept in the accounts database.

Two gateways behind one name must agree on them: a name throttled on one is
throttled on the other, and a student's requests per minute are counted once
however the load balancer spreads them. So every event is a row of
``rate_events`` in the accounts database (PostgreSQL when several gateways
share it), stamped with the wall clock (``time.time()``): the gateways' clocks
must agree to a second or so (NTP), as they must for session expiry anyway.

Keys are stored as SHA-256 hashes: whatever a login form sends as a name
takes 64 characters, and the table holds no names or addresses in plain text.
A window that reaches its limit is checked and added to in one transaction
under a lock for its key (``pg_advisory_xact_lock`` on PostgreSQL; SQLite has
one writer, and within one process a lock serialises the threads), so two
gateways cannot both take the last place.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import BigInteger, Float, Index, Integer, String, delete, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from schulki.gateway.accounts.database import create_tables

T = TypeVar("T")

PURGE_EVERY_S = 60.0
"""How often one window deletes the events that have left it (queries ignore them meanwhile)."""


class _Base(DeclarativeBase):
    pass


class _Event(_Base):
    __tablename__ = "rate_events"
    __table_args__ = (Index("rate_events_by_key", "scope", "key", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)


def _hashed(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class SharedWindow:
    """Counts events per key within the last ``window_s`` seconds, for every gateway on the database.

    ``scope`` keeps the windows apart (login failures, logins, requests). A
    key without events in the window has no rows: looking one up stores
    nothing, so a stream of made-up names costs nothing to count.
    """

    def __init__(self, engine: Engine, scope: str, window_s: float):
        create_tables(engine, _Base.metadata)
        self.scope = scope
        self.window_s = window_s
        self._session = sessionmaker(engine)
        self._postgres = engine.dialect.name == "postgresql"
        self._lock = threading.Lock()
        self._purged = 0.0

    def _where(self, key: str, since: float | None = None) -> tuple[ColumnElement[bool], ...]:
        found = (_Event.scope == self.scope, _Event.key == key)
        return (*found, _Event.at > since) if since is not None else found

    def _locked(self, db: Session, key: str) -> None:
        """Hold the key until the transaction ends, against every other gateway (PostgreSQL)."""
        if self._postgres:
            number = int.from_bytes(bytes.fromhex(key[:16]), "big", signed=True)
            db.execute(text("SELECT pg_advisory_xact_lock(:number)"), {"number": number})

    def _span(self, db: Session, key: str, now: float) -> tuple[int, float | None, float | None]:
        """Events of the key in the window: how many, the oldest and the newest."""
        row = db.execute(select(func.count(), func.min(_Event.at), func.max(_Event.at)).where(*self._where(key, now - self.window_s))).one()
        return int(row[0]), row[1], row[2]

    def _wait(self, found: tuple[int, float | None, float | None], limit: int, now: float) -> float:
        count, oldest, _ = found
        if count < limit or oldest is None:
            return 0.0
        return max(1.0, oldest + self.window_s - now)

    def _note(self, db: Session, key: str, now: float) -> None:
        if now - self._purged > PURGE_EVERY_S:  # events that left the window, of every key (one round trip a minute, not one per event)
            self._purged = now
            db.execute(delete(_Event).where(_Event.scope == self.scope, _Event.at <= now - self.window_s))
        db.add(_Event(scope=self.scope, key=key, at=now))

    def count(self, key: str) -> int:
        with self._session() as db:
            return self._span(db, _hashed(key), time.time())[0]

    def last(self, key: str) -> float | None:
        """When the newest event of the key within the window happened (``time.time()``), or None."""
        with self._session() as db:
            return self._span(db, _hashed(key), time.time())[2]

    def wait(self, key: str, limit: int) -> float:
        """0 while the key has fewer than ``limit`` events, else the seconds until the oldest one leaves the window."""
        now = time.time()
        with self._session() as db:
            return self._wait(self._span(db, _hashed(key), now), limit, now)

    def add(self, *keys: str) -> None:
        """One event for each key, in one transaction."""
        hashed = sorted(_hashed(key) for key in keys)  # locks always taken in one order: no two gateways wait for each other
        with self._lock, self._session.begin() as db:
            now = time.time()
            for key in hashed:
                self._locked(db, key)
                self._note(db, key, now)

    def try_add(self, key: str, limit: int) -> float:
        """Add an event unless the key reached its limit; returns 0, or the seconds until the oldest event expires."""
        return self.try_add_with(key, limit, lambda _db, wait: wait)

    def try_add_with(self, key: str, limit: int, work: Callable[[Session, float], T]) -> T:
        """``try_add`` and ``work`` in one transaction, so one commit for both: ``work`` gets the session and the wait
        (0: the event will be added) before the event is added; what it returns is returned, and what it raises rolls
        both back (no event is added)."""
        hashed = _hashed(key)
        with self._lock, self._session.begin() as db:
            self._locked(db, hashed)
            now = time.time()
            wait = self._wait(self._span(db, hashed, now), limit, now)
            result = work(db, wait)
            if not wait:
                self._note(db, hashed, now)
            return result

    def clear(self, key: str) -> None:
        hashed = _hashed(key)
        with self._lock, self._session.begin() as db:
            self._locked(db, hashed)
            db.execute(delete(_Event).where(*self._where(hashed)))

    def clear_all(self) -> None:
        with self._lock, self._session.begin() as db:
            db.execute(delete(_Event).where(_Event.scope == self.scope))
