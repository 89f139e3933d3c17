"""Accounts, classes, sessions, stored chats and usage counts, through SQLAlchemy 2.

One machine keeps them in a SQLite file in WAL mode; a school that runs
several gateways points ``gateway.database_url`` at PostgreSQL and the same
code runs there. Passwords are stored as argon2id hashes (memory-hard); API
keys and session tokens are long random strings, so a SHA-256 of them is
enough and keeps the per-request lookup cheap. Only hashes are stored.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ForeignKey, Integer, MetaData, String, Text, create_engine, delete, event, func, select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

ROLES = ("student", "teacher", "admin")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
CLASS_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
API_KEY_PREFIX = "sk-schulki-"
CSV_COLUMNS = ("name", "role", "class", "password")
"""Columns of a class list for ``schulki user import``; only ``name`` is required."""

_hasher = PasswordHasher()


class AccountError(ValueError):
    """A request about accounts that cannot be done; the message is German and safe to show."""


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids are never reused: workspaces are named after them

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(48), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[int] = mapped_column(Integer, default=lambda: int(time.time()))


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    class_name: Mapped[str] = mapped_column(String(48), primary_key=True)


class LoginSession(Base):
    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[int] = mapped_column(Integer)


class StoredChat(Base):
    __tablename__ = "chats"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(80))
    messages_json: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[int] = mapped_column(Integer, index=True)


class DailyUsage(Base):
    """Counts only: requests and tokens per user and day, never any content."""

    __tablename__ = "usage"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class Account:
    """A user as the rest of the gateway sees it (no hashes)."""

    id: int
    name: str
    role: str
    classes: tuple[str, ...]

    @property
    def own_workspace(self) -> str:
        return f"u-{self.id}"


@dataclass(frozen=True)
class Workspace:
    """A workspace a user may use, with a German label and whether they may change it."""

    name: str
    label: str
    writable: bool


@dataclass(frozen=True)
class NewAccount:
    """What ``add_user`` hands back once: the only time password and key are visible."""

    account: Account
    password: str
    api_key: str


def class_workspace(class_name: str) -> str:
    return f"k-{class_name}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def new_password() -> str:
    """A random password that is easy to type: four groups of lowercase letters and digits."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i look-alikes
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(24)


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def database_url(configured: str | None, data_dir: Path) -> str:
    if configured:
        return configured
    folder = data_dir / "gateway"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    return f"sqlite:///{folder / 'accounts.sqlite3'}"


SETTINGS_MAX_AGE_S = 2.0
"""How long ``recent_setting`` answers from the settings it last read: another gateway's change shows after this at most."""
SCHEMA_LOCK = 0x5C4A1E5
"""The PostgreSQL advisory lock every schulki gateway takes while it creates its tables."""


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """Create the tables of ``metadata`` that are missing, safe when several gateways start on one database at once.

    create_all looks first and creates after: two gateways starting at the same moment on one PostgreSQL both find
    a table missing, and the second CREATE TABLE fails (a duplicate key in pg_type) and stops that gateway. On
    PostgreSQL the look and the create run under one advisory lock, held until the transaction ends. SQLite
    serialises the writers itself (busy_timeout).
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        metadata.create_all(connection)


def make_engine(url: str) -> Engine:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(
            connection: DBAPIConnection, _record: ConnectionPoolEntry
        ) -> None:  # WAL lets readers and one writer work at once
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    create_tables(engine, Base.metadata)
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        # chats and usage are students' data: only the gateway's user may read the file (and its WAL and shared memory)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(engine.url.database + suffix, 0o600)
    return engine


def locked_usage(db: Session, user_id: int) -> DailyUsage:
    """Today's usage row of a user in ``db``'s transaction, made if missing and locked until the transaction ends
    (``FOR UPDATE`` on PostgreSQL; SQLite has one writer). Made with ``ON CONFLICT DO NOTHING``: two gateways counting a
    user's first request of the day at once both find the one row, neither fails on the other's insert."""
    insert = postgresql_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    day = today()
    db.execute(insert(DailyUsage).values(user_id=user_id, day=day, requests=0, tokens=0).on_conflict_do_nothing())
    row = db.get(DailyUsage, (user_id, day), with_for_update=True, populate_existing=True)
    assert row is not None  # made above, and usage rows are deleted only with their user
    return row


def reserve_on(row: DailyUsage, prompt_tokens: int, max_tokens: int, limit: int) -> int | None:
    """Add prompt and answer tokens to the locked ``row`` if the prompt and one token fit under ``limit``: the answer
    tokens granted (``max_tokens`` or what is left), or None."""
    granted = min(max_tokens, limit - row.tokens - prompt_tokens)
    if granted < 1:
        return None
    row.tokens += prompt_tokens + granted
    return granted


class Accounts:
    """Every read and write of account data goes through here."""

    def __init__(self, url: str):
        self.engine = make_engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._settings_read: tuple[float, dict[str, str]] | None = None
        """When the settings were last read in full (``time.monotonic()``) and what they were, for ``recent_setting``."""
        self._settings_changes = 0

    # -- users -------------------------------------------------------------

    def _account(self, db: Session, user: User) -> Account:
        classes = db.scalars(select(Membership.class_name).where(Membership.user_id == user.id).order_by(Membership.class_name))
        return Account(user.id, user.name, user.role, tuple(classes))

    def add_user(self, name: str, role: str, classes: list[str] | tuple[str, ...] = (), password: str | None = None) -> NewAccount:
        if not NAME_PATTERN.match(name or ""):
            raise AccountError(f"Ungültiger Benutzername {name!r}: Buchstaben, Ziffern, Punkt, - und _, höchstens 48 Zeichen.")
        if role not in ROLES:
            raise AccountError(f"Unbekannte Rolle {role!r}; erlaubt: {', '.join(ROLES)}.")
        for class_name in classes:
            if not CLASS_PATTERN.match(class_name):
                raise AccountError(f"Ungültiger Klassenname {class_name!r}: Buchstaben, Ziffern, - und _.")
        password = password or new_password()
        if len(password) < 8:
            raise AccountError("Das Passwort muss mindestens 8 Zeichen lang sein.")
        api_key = new_api_key()
        with self._session.begin() as db:
            if db.scalar(select(User.id).where(User.name == name)) is not None:
                raise AccountError(f"Den Benutzer {name!r} gibt es schon.")
            user = User(name=name, role=role, password_hash=_hasher.hash(password), api_key_hash=_sha256(api_key))
            db.add(user)
            db.flush()
            for class_name in dict.fromkeys(classes):
                db.add(Membership(user_id=user.id, class_name=class_name))
            db.flush()
            account = self._account(db, user)
        return NewAccount(account, password, api_key)

    def import_csv(self, text: str) -> list[NewAccount]:
        """Create every account of a class list (columns CSV_COLUMNS, header required); all or nothing."""
        rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
        if not rows:
            raise AccountError("Die CSV-Datei enthält keine Zeilen (erste Zeile: name,role,class,password).")
        unknown = set(rows[0]) - set(CSV_COLUMNS)
        if "name" not in rows[0] or unknown:
            raise AccountError(
                f"Spalten der CSV-Datei: {', '.join(CSV_COLUMNS)} (nur name ist Pflicht); unbekannt: {', '.join(sorted(k or '' for k in unknown)) or '-'}"
            )
        planned = []
        for number, row in enumerate(rows, start=2):
            name = (row.get("name") or "").strip()
            role = (row.get("role") or "").strip() or "student"
            classes = [c.strip() for c in (row.get("class") or "").replace(";", " ").split() if c.strip()]
            password = (row.get("password") or "").strip() or None
            if not NAME_PATTERN.match(name) or role not in ROLES or any(not CLASS_PATTERN.match(c) for c in classes):
                raise AccountError(f"Zeile {number} der CSV-Datei ist ungültig (Name, Rolle oder Klasse).")
            planned.append((name, role, classes, password))
        names = [p[0] for p in planned]
        with self._session() as db:
            taken = set(db.scalars(select(User.name).where(User.name.in_(names))))
        if taken or len(set(names)) != len(names):
            raise AccountError(
                f"Diese Namen gibt es schon oder doppelt: {', '.join(sorted(taken) or [n for n in names if names.count(n) > 1])}"
            )
        created = []
        try:
            for name, role, classes, password in planned:
                created.append(self.add_user(name, role, classes, password))
        except Exception:
            for new in created:  # all or nothing
                self.delete_user(new.account.id)
            raise
        return created

    def get(self, user_id: int) -> Account | None:
        with self._session() as db:
            user = db.get(User, user_id)
            return self._account(db, user) if user else None

    def by_name(self, name: str) -> Account | None:
        with self._session() as db:
            user = db.scalar(select(User).where(User.name == name))
            return self._account(db, user) if user else None

    def list_users(self) -> list[Account]:
        with self._session() as db:
            return [self._account(db, u) for u in db.scalars(select(User).order_by(User.name))]

    def check_password(self, name: str, password: str) -> Account | None:
        with self._session() as db:
            user = db.scalar(select(User).where(User.name == name))
            if user is None:
                _hasher.hash(password)  # same cost as a real check: no timing hint that the name is unknown
                return None
            try:
                _hasher.verify(user.password_hash, password)
            except (VerificationError, InvalidHashError):
                return None
            return self._account(db, user)

    def by_api_key(self, api_key: str) -> Account | None:
        if not api_key.startswith(API_KEY_PREFIX):
            return None
        with self._session() as db:
            user = db.scalar(select(User).where(User.api_key_hash == _sha256(api_key)))
            return self._account(db, user) if user else None

    def reset_password(self, name: str) -> NewAccount:
        """A new password and a new API key (the old key may have leaked with the password); for an account the school's
        directory signs in (directory_accounts.py) only a new key, and the password is empty."""
        password, api_key = new_password(), new_api_key()
        with self._session.begin() as db:
            user = db.scalar(select(User).where(User.name == name))
            if user is None:
                raise AccountError(f"Den Benutzer {name!r} gibt es nicht.")
            if user.password_hash.startswith("directory:"):  # the school's directory keeps this person's password
                password = ""
            else:
                user.password_hash = _hasher.hash(password)
            user.api_key_hash = _sha256(api_key)
            db.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
            account = self._account(db, user)
        return NewAccount(account, password, api_key)

    def delete_user(self, user_id: int) -> None:
        """The account with its sessions, chats, usage counts and memberships (the caller removes the workspace)."""
        with self._session.begin() as db:
            for table in (LoginSession, StoredChat, DailyUsage, Membership):
                db.execute(delete(table).where(table.user_id == user_id))
            db.execute(delete(User).where(User.id == user_id))

    def user_ids(self) -> set[int]:
        """The ids of every account (to find data whose account is gone)."""
        with self._session() as db:
            return set(db.scalars(select(User.id)))

    def export_data(self, user_id: int) -> dict:
        """What the database holds about one user, for their copy of their data: account facts, chats, usage counts."""
        with self._session() as db:
            user = db.get(User, user_id)
            if user is None:
                raise AccountError("Den Benutzer gibt es nicht.")
            account = self._account(db, user)
            chats = db.scalars(select(StoredChat).where(StoredChat.user_id == user_id).order_by(StoredChat.updated_at))
            usage = db.scalars(select(DailyUsage).where(DailyUsage.user_id == user_id).order_by(DailyUsage.day))
            sessions = db.scalar(select(func.count()).select_from(LoginSession).where(LoginSession.user_id == user_id))
            return {
                "account": {
                    "name": account.name,
                    "role": account.role,
                    "classes": list(account.classes),
                    "created_at": _iso(user.created_at),
                    "open_sessions": sessions,
                    "stored_secrets": "Passwort und API-Key nur als Hash (password and API key only as hashes)",
                },
                "chats": [{"title": c.title, "updated_at": _iso(c.updated_at), "messages": json.loads(c.messages_json)} for c in chats],
                "usage": [{"day": u.day, "requests": u.requests, "tokens": u.tokens} for u in usage],
            }

    # -- workspaces --------------------------------------------------------

    def workspaces(self, account: Account) -> list[Workspace]:
        """The user's own workspace, then their classes'; teachers and admins may change class workspaces."""
        found = [Workspace(account.own_workspace, "Meine Dokumente", True)]
        for class_name in account.classes:
            found.append(Workspace(class_workspace(class_name), f"Klasse {class_name}", account.role in ("teacher", "admin")))
        return found

    def workspace_for(self, account: Account, name: str, write: bool = False) -> Workspace | None:
        for workspace in self.workspaces(account):
            if workspace.name == name and (workspace.writable or not write):
                return workspace
        return None

    # -- sessions ----------------------------------------------------------

    def open_session(self, user_id: int, hours: float, keep: int | None = None) -> str:
        """A new session; with ``keep``, the user's oldest sessions (by expiry) are closed so that at most ``keep`` stay open."""
        token = secrets.token_urlsafe(32)
        with self._session.begin() as db:
            db.execute(delete(LoginSession).where(LoginSession.expires_at < int(time.time())))
            if keep is not None:
                newest_first = select(LoginSession.token_hash).where(LoginSession.user_id == user_id)
                older = list(db.scalars(newest_first.order_by(LoginSession.expires_at.desc()).offset(max(0, keep - 1))))
                if older:
                    db.execute(delete(LoginSession).where(LoginSession.token_hash.in_(older)))
            db.add(LoginSession(token_hash=_sha256(token), user_id=user_id, expires_at=int(time.time() + hours * 3600)))
        return token

    def session_user(self, token: str) -> Account | None:
        with self._session() as db:
            row = db.get(LoginSession, _sha256(token))
            if row is None or row.expires_at < time.time():
                return None
            user = db.get(User, row.user_id)
            return self._account(db, user) if user else None

    def close_session(self, token: str) -> None:
        with self._session.begin() as db:
            db.execute(delete(LoginSession).where(LoginSession.token_hash == _sha256(token)))

    # -- chats -------------------------------------------------------------

    def save_chat(self, user_id: int, chat_id: int | None, messages: list[dict]) -> int:
        title = next((m["content"] for m in messages if m.get("role") == "user"), "Chat")[:80]
        with self._session.begin() as db:
            chat = db.get(StoredChat, chat_id) if chat_id else None
            if chat is None or chat.user_id != user_id:
                chat = StoredChat(user_id=user_id, title=title, messages_json="[]", updated_at=0)
                db.add(chat)
            chat.messages_json = json.dumps(messages, ensure_ascii=False)
            chat.updated_at = int(time.time())
            db.flush()
            return chat.id

    def list_chats(self, user_id: int) -> list[tuple[int, str]]:
        with self._session() as db:
            rows = db.execute(
                select(StoredChat.id, StoredChat.title).where(StoredChat.user_id == user_id).order_by(StoredChat.updated_at.desc())
            )
            return [(r.id, r.title) for r in rows]

    def load_chat(self, user_id: int, chat_id: int) -> list[dict] | None:
        with self._session() as db:
            chat = db.get(StoredChat, chat_id)
            if chat is None or chat.user_id != user_id:
                return None
            return json.loads(chat.messages_json)

    def purge_chats(self, retention_days: int) -> int:
        """Delete chats not touched within the retention period; returns how many."""
        cutoff = int(time.time() - retention_days * 86400)
        with self._session.begin() as db:
            # A DELETE gives a CursorResult, which has rowcount; execute() is typed for any statement.
            result = cast("CursorResult[Any]", db.execute(delete(StoredChat).where(StoredChat.updated_at <= cutoff)))
            return result.rowcount

    # -- usage -------------------------------------------------------------

    def count_usage(self, user_id: int, requests: int = 0, tokens: int = 0) -> None:
        with self._session.begin() as db:
            row = locked_usage(db, user_id)
            row.requests += requests
            row.tokens += tokens

    def reserve_tokens(self, user_id: int, prompt_tokens: int, max_tokens: int, limit: int) -> int | None:
        """Add prompt and answer tokens to today's count in one transaction, if the prompt and one token fit under ``limit``.

        Returns the answer tokens granted (``max_tokens`` or what is left), or
        None. The row is locked (``FOR UPDATE`` on PostgreSQL; SQLite has one
        writer), so gateways sharing the database cannot both take the rest.
        """
        with self._session.begin() as db:
            return reserve_on(locked_usage(db, user_id), prompt_tokens, max_tokens, limit)

    def tokens_today(self, user_id: int) -> int:
        with self._session() as db:
            row = db.get(DailyUsage, (user_id, today()))
            return row.tokens if row else 0

    def usage_by_class(self, day: str | None = None) -> list[tuple[str, int, int, int]]:
        """(class, users, requests, tokens) for one day; counts only."""
        day = day or today()
        with self._session() as db:
            rows = db.execute(
                select(Membership.class_name, func.count(DailyUsage.user_id), func.sum(DailyUsage.requests), func.sum(DailyUsage.tokens))
                .join(DailyUsage, DailyUsage.user_id == Membership.user_id)
                .where(DailyUsage.day == day)
                .group_by(Membership.class_name)
                .order_by(Membership.class_name)
            )
            return [(r[0], r[1], r[2] or 0, r[3] or 0) for r in rows]

    # -- settings ----------------------------------------------------------

    def get_setting(self, key: str, default: str) -> str:
        with self._session() as db:
            row = db.get(Setting, key)
            return row.value if row else default

    def recent_setting(self, key: str, default: str) -> str:
        """``get_setting`` from a copy of every setting at most ``SETTINGS_MAX_AGE_S`` old: for what each request reads
        (the chat model choices), one query every two seconds instead of several per chat. This gateway's own changes
        show at once; another gateway's within the age."""
        read = self._settings_read
        if read is None or time.monotonic() - read[0] > SETTINGS_MAX_AGE_S:
            changes = self._settings_changes
            with self._session() as db:
                read = (time.monotonic(), {row.key: row.value for row in db.execute(select(Setting.key, Setting.value))})
            if changes == self._settings_changes:  # else a change of this gateway's committed meanwhile: read again next time
                self._settings_read = read
        return read[1].get(key, default)

    def set_setting(self, key: str, value: str) -> None:
        with self._session.begin() as db:
            row = db.get(Setting, key)
            if row is None:
                db.add(Setting(key=key, value=value))
            else:
                row.value = value
        self._settings_changes += 1
        self._settings_read = None
