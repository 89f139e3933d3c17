"""/v1/files in OpenAI's shape: the requests and answers over ``gateway/documents/stored_files.py``, which keeps the uploads.

The body limit is ``gateway.max_upload_bytes`` (``/v1/files`` is an upload path).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from schulki.gateway.accounts.database import Account
from schulki.gateway.api.deps import AccountDep, GatewayDep
from schulki.gateway.api.errors import ApiError
from schulki.gateway.api.responses import Deleted, FileObject, ListPage, one_page
from schulki.gateway.context import Gateway
from schulki.gateway.documents.stored_files import (
    FileRefused,
    StoredFile,
    delete_stored,
    files_folder,
    over_quota,
    owned_file,
    stored,
    user_files,
)
from schulki.gateway.nodes.clients import CHUNK_BYTES

PURPOSES = ("assistants", "user_data")
"""Purposes accepted: files for vector stores. Fine-tuning and batch files have no use here."""


def _body(found: StoredFile) -> FileObject:
    return FileObject(id=found.id, bytes=found.bytes, created_at=found.created_at, filename=found.filename, purpose=found.purpose)


async def _spool(upload: UploadFile, target: Path) -> int:
    size = 0
    with open(target, "wb") as handle:
        while chunk := await upload.read(CHUNK_BYTES):
            size += len(chunk)
            await run_in_threadpool(handle.write, chunk)
    return size


async def _receive(gateway: Gateway, account: Account, request: Request) -> StoredFile:
    """Keep the upload of a request in the user's folder, within their upload quota."""
    folder = files_folder(gateway, account)
    used = await run_in_threadpool(gateway.file_records.used_bytes, account.id)
    declared = request.headers.get("content-length", "")
    refused = over_quota(gateway, used, int(declared) if declared.isdigit() else 0)
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
        refused = FileRefused(400, "The file is empty.", param="file") if size == 0 else over_quota(gateway, used, size)
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
    return stored(gateway, account, record)


router = APIRouter(prefix="/v1")


@router.post("/files")
async def upload_file(request: Request, gateway: GatewayDep, account: AccountDep) -> FileObject:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "Send the file as multipart/form-data with the fields file and purpose.", param="file")
    stored = await gateway.upload_file(account, lambda: _receive(gateway, account, request))
    return _body(stored)


@router.get("/files")
async def list_files(gateway: GatewayDep, account: AccountDep) -> ListPage[FileObject]:
    found = await run_in_threadpool(user_files, gateway, account)
    return ListPage[FileObject](**one_page([_body(f) for f in found]))


@router.get("/files/{file_id}")
async def get_file(file_id: str, gateway: GatewayDep, account: AccountDep) -> FileObject:
    return _body(owned_file(gateway, account, file_id))


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, gateway: GatewayDep, account: AccountDep) -> Deleted:
    await run_in_threadpool(delete_stored, gateway, owned_file(gateway, account, file_id))
    return Deleted(id=file_id, object="file")
