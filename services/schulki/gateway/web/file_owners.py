"""Who owns which file in Gradio's cache: the only files a user may send to an event or download.

Gradio keeps every upload and every file an event hands out in one cache
folder shared by all users, and serves any of them to anyone who knows the
path. The gateway therefore notes, per file, the account it belongs to: an
upload belongs to the account that uploaded it, a transcript to the account
that made it.

The notes live in the accounts database, so every gateway on it knows them.
Gradio's cache itself is each gateway's own folder (as are Gradio's sessions,
which is why the web page needs sticky sessions behind a load balancer, see
the README), so a note helps another gateway only where it reads the same
folder: two gateway processes on one machine, as during an upgrade without
downtime. Elsewhere it is harmless: a cached path names the content's hash
(and an upload's path the uploader's own folder), so a note lets an account
read on another machine only a file with the same content it was handed.
Notes are forgotten after ``MAX_AGE_S``; Gradio deletes the files sooner.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from sqlalchemy import Float, Integer, String, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from schulki.gateway.accounts.database import create_tables

MAX_AGE_S = 24 * 3600.0
"""How long an ownership note is kept; Gradio deletes cached files after an hour (``delete_cache``)."""


def real_path(path: str | os.PathLike) -> str | None:
    """The absolute path of a plain file that no symbolic link leads to, or None.

    Devices (``/dev/zero``), folders, sockets and links are never user files.
    """
    try:
        absolute = os.path.abspath(path)
        resolved = os.path.realpath(absolute)
        if resolved != absolute or not Path(resolved).is_file() or Path(resolved).is_symlink():
            return None
        return resolved
    except (OSError, ValueError):
        return None


PURGE_EVERY_S = 600.0
"""How often a gateway deletes the notes older than MAX_AGE_S."""


class _Base(DeclarativeBase):
    pass


class _Note(_Base):
    __tablename__ = "file_owners"

    path_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 of the real path: a path may be longer than an index allows."""
    account_id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    noted_at: Mapped[float] = mapped_column(Float, index=True)


def _hashed(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()


class FileOwners:
    """Maps a cached file's real path to the accounts it belongs to.

    Gradio names a cached copy by a hash of its content, so two users who get
    the same transcript share one cached file. (Uploads no longer do: each
    user's go to a folder of their own, gradio_uploads.)
    """

    def __init__(self, engine: Engine) -> None:
        create_tables(engine, _Base.metadata)
        self._session = sessionmaker(engine)
        self._purged = 0.0

    def add(self, path: str | os.PathLike, account_id: int) -> None:
        resolved = real_path(path)
        if resolved is None:
            return
        now, key = time.time(), _hashed(resolved)
        try:
            with self._session.begin() as db:
                if now - self._purged > PURGE_EVERY_S:  # forget what Gradio has long deleted
                    self._purged = now
                    db.execute(delete(_Note).where(_Note.noted_at < now - MAX_AGE_S))
                note = db.get(_Note, (key, account_id))
                if note is None:
                    db.add(_Note(path_hash=key, account_id=account_id, noted_at=now))
                else:
                    note.noted_at = now
        except IntegrityError:  # another gateway (or thread) noted the same file for the same account at the same moment
            pass

    def owns(self, path: str | os.PathLike, account_id: int) -> bool:
        resolved = real_path(path)
        if resolved is None:
            return False
        with self._session() as db:
            noted = db.scalar(select(_Note.noted_at).where(_Note.path_hash == _hashed(resolved), _Note.account_id == account_id))
        return noted is not None and noted >= time.time() - MAX_AGE_S

    def forget_account(self, account_id: int) -> None:
        with self._session.begin() as db:
            db.execute(delete(_Note).where(_Note.account_id == account_id))
