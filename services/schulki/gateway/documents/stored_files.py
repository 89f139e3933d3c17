"""The uploads of /v1/files: a user's files, kept until they are added to a vector store (or expire).

OpenAI's flow to put a document into a vector store is two calls: upload it
(``POST /v1/files``, purpose ``assistants``), then add the file's id to the
store. Between the two the gateway keeps the upload in the accounts database
(``gateway/documents/file_records.py``: facts and bytes), so every gateway on it knows the
file, and a copy of the bytes on disk, in a folder of the user who sent it,
under ``<data>/gateway/uploads/api-files/<user id>/`` (written from the
database when the file is first used on a gateway that has none). Another
user's file id is unknown to everyone else (404, as for an id that never
existed). The retention purge deletes these files after
``gateway.upload_retention_hours`` like every other upload; the documents made
from them stay in their workspace. ``api/files.py`` reads the requests and
writes the answers; what is kept, and where, is decided here.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from schulki.config import Config
from schulki.gateway.accounts.database import Account
from schulki.gateway.documents.file_records import FileRecord, FileRecords
from schulki.gateway.privacy.folders import private_folder

FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
MIB = 1024 * 1024


class FileRefused(Exception):
    """A file the user cannot upload, find or add as asked: ``status`` is the HTTP status, the message says why
    (German first where the user can do something about it); ``retry_after_s`` for a refusal that passes by itself."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.retry_after_s = status, message, param, code, retry_after_s


class Uploads(Protocol):
    """What the uploads are kept with: the settings (data folder, limits) and the file records. The Gateway is one; named as
    a protocol so that the Gateway, which owns the vector stores' ingests of these files, and this module do not import each other."""

    @property
    def config(self) -> Config: ...

    @property
    def file_records(self) -> FileRecords: ...


def no_such_file(file_id: str | None) -> FileRefused:
    return FileRefused(404, f"No file with id {file_id!r} found.", param="file_id", code="file_not_found")


@dataclass(frozen=True)
class StoredFile:
    """An upload of one user, as /v1/files describes it."""

    id: str
    filename: str
    bytes: int
    created_at: int
    purpose: str
    path: Path


def files_folder(gateway: Uploads, account: Account) -> Path:
    """The user's uploads through the API; it lies in the upload cache, so the retention purge empties it."""
    return private_folder(Path(gateway.config.data_dir) / "gateway" / "uploads" / "api-files" / str(account.id))


def stored(gateway: Uploads, account: Account, record: FileRecord) -> StoredFile:
    return StoredFile(
        record.id, record.filename, record.size, record.created_at, record.purpose, files_folder(gateway, account) / record.id
    )


def find_file(gateway: Uploads, account: Account, file_id: str) -> StoredFile | None:
    """The user's upload with this id, its bytes on this gateway's disk; None also for another user's id, and for one the purge deleted.

    A file uploaded through another gateway is copied from the database first
    (a blocking read of its size; call it off the event loop for large files)."""
    if not FILE_ID.match(file_id):
        return None
    record = gateway.file_records.get(account.id, file_id)
    if record is None:
        return None
    found = stored(gateway, account, record)
    if not found.path.is_file() and not gateway.file_records.write_copy(file_id, found.path):
        return None
    return found


def owned_file(gateway: Uploads, account: Account, file_id: str) -> StoredFile:
    """The user's file as recorded (its bytes need not be on this gateway: describing or deleting it copies nothing)."""
    record = gateway.file_records.get(account.id, file_id) if FILE_ID.match(file_id) else None
    if record is None:
        raise no_such_file(file_id)
    return stored(gateway, account, record)


def over_quota(gateway: Uploads, used: int, more: int) -> FileRefused | None:
    """The refusal when ``more`` bytes would pass the user's upload limit (api_files_mb_per_user); None while they fit."""
    limit = gateway.config.gateway.api_files_mb_per_user * MIB
    if used + more <= limit:
        return None
    return FileRefused(
        413,
        f"Deine hochgeladenen Dateien belegen zu viel Platz: höchstens {limit // MIB} MiB; füge sie einem Vektorspeicher hinzu oder "
        f"lösche welche. (Your uploads would pass the limit of {limit // MIB} MiB; add them to a vector store or delete some.)",
        param="file",
        code="upload_quota_exceeded",
    )


def user_files(gateway: Uploads, account: Account) -> list[StoredFile]:
    return [stored(gateway, account, record) for record in gateway.file_records.owned(account.id)]


def delete_stored(gateway: Uploads, found: StoredFile) -> None:
    gateway.file_records.delete(found.id)
    found.path.unlink(missing_ok=True)  # other gateways' copies go with the retention purge; their record is gone now


def delete_user_files(gateway: Uploads, account: Account) -> None:
    """Every upload of the user through the API (when their data is deleted): the records, the bytes and this gateway's copies."""
    gateway.file_records.delete_user(account.id)
    shutil.rmtree(files_folder(gateway, account), ignore_errors=True)
