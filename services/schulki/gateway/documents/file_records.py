"""The uploads of /v1/files in the accounts database: their facts and their bytes.

A file uploaded through one gateway must be known to every other gateway on
the same database, and addable to a vector store there. So the record (id,
owner, name, size, time, purpose) and the bytes both live in the database,
the bytes in parts of ``PART_BYTES`` so that neither writing nor reading a
file holds more than one part in memory. Each gateway keeps a copy of the
bytes in its own upload cache (``stored_files.py``) for the ingest to read; a
gateway that has none writes one from the database when the file is first
used there. The database holds at most what the quotas allow:
``gateway.api_files_mb_per_user`` per user, for ``gateway.upload_retention_hours``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import BigInteger, Integer, LargeBinary, String, delete, func, select
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from schulki.gateway.accounts.database import create_tables

PART_BYTES = 1024 * 1024


class _Base(DeclarativeBase):
    pass


class _FileRow(_Base):
    __tablename__ = "api_files"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(Integer, index=True)
    purpose: Mapped[str] = mapped_column(String(16))


class _PartRow(_Base):
    __tablename__ = "api_file_parts"

    file_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


@dataclass(frozen=True)
class FileRecord:
    """One upload through /v1/files, as the database knows it."""

    id: str
    user_id: int
    filename: str
    size: int
    created_at: int
    purpose: str


def _record(row: _FileRow) -> FileRecord:
    return FileRecord(row.id, row.user_id, row.filename, row.size, row.created_at, row.purpose)


class FileRecords:
    """Every read and write of the two tables goes through here; all calls block (run them off the event loop)."""

    def __init__(self, engine: Engine):
        create_tables(engine, _Base.metadata)
        self._session = sessionmaker(engine, expire_on_commit=False)

    def add(self, user_id: int, file_id: str, filename: str, purpose: str, source: Path) -> FileRecord:
        """Store the file at ``source`` (its facts and its bytes) in one transaction: other gateways see all of it or nothing."""
        row = _FileRow(
            id=file_id, user_id=user_id, filename=filename, size=source.stat().st_size, created_at=int(time.time()), purpose=purpose
        )
        with self._session.begin() as db, open(source, "rb") as handle:
            db.add(row)
            number = 0
            while part := handle.read(PART_BYTES):
                db.add(_PartRow(file_id=file_id, number=number, data=part))
                db.flush()  # one part in memory at a time
                db.expunge_all()
                number += 1
        return _record(row)

    def get(self, user_id: int, file_id: str) -> FileRecord | None:
        """The user's file with this id; None for another user's id too."""
        with self._session() as db:
            row = db.get(_FileRow, file_id)
            return _record(row) if row is not None and row.user_id == user_id else None

    def owned(self, user_id: int) -> list[FileRecord]:
        """The user's files, newest first."""
        with self._session() as db:
            rows = db.scalars(select(_FileRow).where(_FileRow.user_id == user_id).order_by(_FileRow.created_at.desc(), _FileRow.id.desc()))
            return [_record(row) for row in rows]

    def used_bytes(self, user_id: int) -> int:
        with self._session() as db:
            return int(db.scalar(select(func.coalesce(func.sum(_FileRow.size), 0)).where(_FileRow.user_id == user_id)) or 0)

    def write_copy(self, file_id: str, target: Path) -> bool:
        """Write the file's bytes to ``target`` (through a temporary file, so a reader never sees half); False when they are gone."""
        partial = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")  # two requests may copy the same file at once
        written = False
        with self._session() as db, open(partial, "wb") as handle:
            numbers = list(db.scalars(select(_PartRow.number).where(_PartRow.file_id == file_id).order_by(_PartRow.number)))
            for number in numbers:
                part = db.get(_PartRow, (file_id, number))
                if part is None:  # deleted meanwhile
                    break
                handle.write(part.data)
                db.expunge(part)
            else:
                written = bool(numbers)
        if written:
            partial.replace(target)
        else:
            partial.unlink(missing_ok=True)
        return written

    def delete(self, file_id: str) -> None:
        with self._session.begin() as db:
            db.execute(delete(_PartRow).where(_PartRow.file_id == file_id))
            db.execute(delete(_FileRow).where(_FileRow.id == file_id))

    def delete_user(self, user_id: int) -> None:
        for record in self.owned(user_id):
            self.delete(record.id)

    def purge(self, created_before: float) -> int:
        """Delete every file uploaded before the time (the retention purge); returns how many."""
        with self._session.begin() as db:
            old = list(db.scalars(select(_FileRow.id).where(_FileRow.created_at < created_before)))
            if not old:
                return 0
            db.execute(delete(_PartRow).where(_PartRow.file_id.in_(old)))
            result = cast("CursorResult[Any]", db.execute(delete(_FileRow).where(_FileRow.id.in_(old))))
            return result.rowcount
