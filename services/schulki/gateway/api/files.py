"""/v1/files in OpenAI's shape: a user's uploads, kept until they are added to a vector store (or expire).

OpenAI's flow to put a document into a vector store is two calls: upload it
(``POST /v1/files``, purpose ``assistants``), then add the file's id to the
store. Between the two the gateway keeps the upload in the accounts database
(``gateway/file_records.py``: facts and bytes), so every gateway on it knows the
file, and a copy of the bytes on disk, in a folder of the user who sent it,
under ``<data>/gateway/uploads/api-files/<user id>/`` (written from the
database when the file is first used on a gateway that has none). Another
user's file id is unknown to everyone else (404, as for an id that never
existed). The retention purge deletes these files after
``gateway.upload_retention_hours`` like every other upload; the documents made
from them stay in their workspace.
The body limit is ``gateway.max_upload_bytes`` (``/v1/files`` is an upload path).
"""

from __future__ import annotations

import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from schulki.gateway.accounts import Account
from schulki.gateway.api.deps import AccountDep, GatewayDep
from schulki.gateway.api.errors import ApiError
from schulki.gateway.api.responses import Deleted, FileObject, ListPage, one_page
from schulki.gateway.clients import CHUNK_BYTES
from schulki.gateway.context import Gateway, private_folder
from schulki.gateway.file_records import FileRecord

PURPOSES = ("assistants", "user_data")
"""Purposes accepted: files for vector stores. Fine-tuning and batch files have no use here."""
FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
MIB = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    """An upload of one user, as /v1/files describes it."""

    id: str
    filename: str
    bytes: int
    created_at: int
    purpose: str
    path: Path

    def body(self) -> FileObject:
        return FileObject(id=self.id, bytes=self.bytes, created_at=self.created_at, filename=self.filename, purpose=self.purpose)


def files_folder(gateway: Gateway, account: Account) -> Path:
    """The user's uploads through the API; it lies in the upload cache, so the retention purge empties it."""
    return private_folder(Path(gateway.config.data_dir) / "gateway" / "uploads" / "api-files" / str(account.id))


def _stored(gateway: Gateway, account: Account, record: FileRecord) -> StoredFile:
    return StoredFile(
        record.id, record.filename, record.size, record.created_at, record.purpose, files_folder(gateway, account) / record.id
    )


def find_file(gateway: Gateway, account: Account, file_id: str) -> StoredFile | None:
    """The user's upload with this id, its bytes on this gateway's disk; None also for another user's id, and for one the purge deleted.

    A file uploaded through another gateway is copied from the database first
    (a blocking read of its size; call it off the event loop for large files)."""
    if not FILE_ID.match(file_id):
        return None
    record = gateway.file_records.get(account.id, file_id)
    if record is None:
        return None
    stored = _stored(gateway, account, record)
    if not stored.path.is_file() and not gateway.file_records.write_copy(file_id, stored.path):
        return None
    return stored


def _over_quota(gateway: Gateway, used: int, more: int) -> ApiError | None:
    limit = gateway.config.gateway.api_files_mb_per_user * MIB
    if used + more <= limit:
        return None
    return ApiError(
        413,
        f"Deine hochgeladenen Dateien belegen zu viel Platz: höchstens {limit // MIB} MiB; füge sie einem Vektorspeicher hinzu oder "
        f"lösche welche. (Your uploads would pass the limit of {limit // MIB} MiB; add them to a vector store or delete some.)",
        param="file",
        code="upload_quota_exceeded",
    )


def _user_files(gateway: Gateway, account: Account) -> list[StoredFile]:
    return [_stored(gateway, account, record) for record in gateway.file_records.owned(account.id)]


async def _spool(upload: UploadFile, target: Path) -> int:
    size = 0
    with open(target, "wb") as handle:
        while chunk := await upload.read(CHUNK_BYTES):
            size += len(chunk)
            await run_in_threadpool(handle.write, chunk)
    return size


def _delete(gateway: Gateway, stored: StoredFile) -> None:
    gateway.file_records.delete(stored.id)
    stored.path.unlink(missing_ok=True)  # other gateways' copies go with the retention purge; their record is gone now


async def _receive(gateway: Gateway, account: Account, request: Request) -> StoredFile:
    """Keep the upload of a request in the user's folder, within their upload quota."""
    folder = files_folder(gateway, account)
    used = await run_in_threadpool(gateway.file_records.used_bytes, account.id)
    declared = request.headers.get("content-length", "")
    refused = _over_quota(gateway, used, int(declared) if declared.isdigit() else 0)
    if refused is not None:  # before a byte of the body is read
        raise refused
    form = await request.form(max_files=1, max_fields=10)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "The field file is missing.", param="file")
        purpose = str(form.get("purpose") or "")
        if purpose not in PURPOSES:
            raise ApiError(
                400, f"purpose must be one of {', '.join(PURPOSES)}; schulki keeps files for vector stores only.", param="purpose"
            )
        filename = Path(upload.filename or "").name[:255]
        if not filename:
            raise ApiError(400, "The file needs a name; its extension says the format (.pdf, .docx, .txt, ...).", param="file")
        file_id = f"file-{secrets.token_hex(12)}"
        size = await _spool(upload, folder / file_id)
        refused = ApiError(400, "The file is empty.", param="file") if size == 0 else _over_quota(gateway, used, size)
        if refused is not None:  # a body without Content-Length is measured once it is here
            (folder / file_id).unlink(missing_ok=True)
            raise refused
        try:
            record = await run_in_threadpool(gateway.file_records.add, account.id, file_id, filename, purpose, folder / file_id)
        except BaseException:
            (folder / file_id).unlink(missing_ok=True)
            raise
    finally:
        await form.close()  # the multipart parser's temporary file goes at once
    return _stored(gateway, account, record)


router = APIRouter(prefix="/v1")


@router.post("/files")
async def upload_file(request: Request, gateway: GatewayDep, account: AccountDep) -> FileObject:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "Send the file as multipart/form-data with the fields file and purpose.", param="file")
    stored = await gateway.upload_file(account, lambda: _receive(gateway, account, request))
    return stored.body()


@router.get("/files")
async def list_files(gateway: GatewayDep, account: AccountDep) -> ListPage[FileObject]:
    found = await run_in_threadpool(_user_files, gateway, account)
    return ListPage[FileObject](**one_page([f.body() for f in found]))


def _owned(gateway: Gateway, account: Account, file_id: str) -> StoredFile:
    """The user's file as recorded (its bytes need not be on this gateway: describing or deleting it copies nothing)."""
    record = gateway.file_records.get(account.id, file_id) if FILE_ID.match(file_id) else None
    stored = _stored(gateway, account, record) if record is not None else None
    if stored is None:
        raise ApiError(404, f"No file with id {file_id!r} found.", "not_found_error", param="file_id", code="file_not_found")
    return stored


@router.get("/files/{file_id}")
async def get_file(file_id: str, gateway: GatewayDep, account: AccountDep) -> FileObject:
    return _owned(gateway, account, file_id).body()


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, gateway: GatewayDep, account: AccountDep) -> Deleted:
    await run_in_threadpool(_delete, gateway, _owned(gateway, account, file_id))
    return Deleted(id=file_id, object="file")


def delete_user_files(gateway: Gateway, account: Account) -> None:
    """Every upload of the user through the API (when their data is deleted): the records, the bytes and this gateway's copies."""
    gateway.file_records.delete_user(account.id)
    shutil.rmtree(files_folder(gateway, account), ignore_errors=True)
