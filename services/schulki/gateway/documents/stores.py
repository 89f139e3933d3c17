"""Records of the API's vector stores: the named workspaces users create, and the files added to workspaces.

A vector store of the API is a workspace (see ``gateway/documents/workspaces.py``).
Every user has the private workspace ``u-<id>`` and the workspaces of their
classes; through ``POST /v1/vector_stores`` they may create more, named
``u-<id>-<random>``, which this module records with the name the user gave.
It also records each file added through ``/v1/vector_stores/{id}/files``:
the file id the client knows, the document id the retrieval service gave it,
and whether its ingest is running, done or failed (with the reason). The
tables live in the accounts database, so they move to PostgreSQL with it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Integer, String, Text, delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from schulki.gateway.accounts.database import create_tables

STATUSES = ("in_progress", "completed", "failed")


class _Base(DeclarativeBase):
    pass


class _StoreRow(_Base):
    __tablename__ = "vector_stores"

    workspace: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[int] = mapped_column(Integer)


class _FileRow(_Base):
    __tablename__ = "vector_store_files"

    workspace: Mapped[str] = mapped_column(String(64), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))
    document_id: Mapped[str] = mapped_column(String(64), default="")
    usage_bytes: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str] = mapped_column(String(32), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[int] = mapped_column(Integer)
    runner: Mapped[str] = mapped_column(String(32), default="")
    """The gateway process that runs the ingest (several gateways may share the database)."""


@dataclass(frozen=True)
class StoreRecord:
    """A workspace a user created through the API."""

    workspace: str
    user_id: int
    name: str
    created_at: int


@dataclass(frozen=True)
class FileRecord:
    """A file added to a workspace through the API, and how its ingest went."""

    workspace: str
    file_id: str
    filename: str
    status: str
    document_id: str
    usage_bytes: int
    error_code: str
    error_message: str
    created_at: int
    runner: str


def _store(row: _StoreRow) -> StoreRecord:
    return StoreRecord(row.workspace, row.user_id, row.name, row.created_at)


def _file(row: _FileRow) -> FileRecord:
    return FileRecord(
        row.workspace,
        row.file_id,
        row.filename,
        row.status,
        row.document_id,
        row.usage_bytes,
        row.error_code,
        row.error_message,
        row.created_at,
        row.runner,
    )


class Stores:
    """Every read and write of the two tables goes through here."""

    def __init__(self, engine: Engine):
        create_tables(engine, _Base.metadata)
        self._session = sessionmaker(engine, expire_on_commit=False)

    # -- stores --------------------------------------------------------------

    def create(self, user_id: int, name: str) -> StoreRecord:
        row = _StoreRow(workspace=f"u-{user_id}-{secrets.token_hex(4)}", user_id=user_id, name=name, created_at=int(time.time()))
        with self._session.begin() as db:
            db.add(row)
        return _store(row)

    def owned(self, user_id: int) -> list[StoreRecord]:
        """The user's stores, oldest first."""
        with self._session() as db:
            rows = db.scalars(select(_StoreRow).where(_StoreRow.user_id == user_id).order_by(_StoreRow.created_at, _StoreRow.workspace))
            return [_store(row) for row in rows]

    def store(self, workspace: str) -> StoreRecord | None:
        with self._session() as db:
            row = db.get(_StoreRow, workspace)
            return _store(row) if row else None

    def remove(self, workspace: str) -> None:
        """The store's record and the records of its files."""
        with self._session.begin() as db:
            db.execute(delete(_FileRow).where(_FileRow.workspace == workspace))
            db.execute(delete(_StoreRow).where(_StoreRow.workspace == workspace))

    # -- files ---------------------------------------------------------------

    def add_file(self, workspace: str, file_id: str, filename: str, runner: str) -> FileRecord:
        row = _FileRow(
            workspace=workspace,
            file_id=file_id,
            filename=filename,
            status="in_progress",
            document_id="",
            usage_bytes=0,
            error_code="",
            error_message="",
            created_at=int(time.time()),
            runner=runner,
        )
        with self._session.begin() as db:
            db.add(row)
        return _file(row)

    def file(self, workspace: str, file_id: str) -> FileRecord | None:
        with self._session() as db:
            row = db.get(_FileRow, (workspace, file_id))
            return _file(row) if row else None

    def files(self, workspace: str) -> list[FileRecord]:
        with self._session() as db:
            rows = db.scalars(select(_FileRow).where(_FileRow.workspace == workspace).order_by(_FileRow.created_at))
            return [_file(row) for row in rows]

    def finish(self, workspace: str, file_id: str, document_id: str, usage_bytes: int) -> None:
        self._update(workspace, file_id, status="completed", document_id=document_id, usage_bytes=usage_bytes)

    def fail(self, workspace: str, file_id: str, code: str, message: str) -> None:
        self._update(workspace, file_id, status="failed", error_code=code, error_message=message)

    def _update(self, workspace: str, file_id: str, **values: object) -> None:
        with self._session.begin() as db:
            db.execute(update(_FileRow).where(_FileRow.workspace == workspace, _FileRow.file_id == file_id).values(**values))

    def remove_file(self, workspace: str, file_id: str) -> None:
        with self._session.begin() as db:
            db.execute(delete(_FileRow).where(_FileRow.workspace == workspace, _FileRow.file_id == file_id))
