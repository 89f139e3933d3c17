"""The vector stores and their files as OpenAI describes them, written from ``Gateway``'s ``StoreContents``.

The routes in ``vector_stores.py`` read a vector store id here and write the
bodies here; what the user may see, the running ingests and the records are
the Gateway's (``gateway/documents/store_ingests.py``).
"""

from __future__ import annotations

import re
from typing import cast

from schulki.gateway.api.errors import ApiError
from schulki.gateway.api.responses import FileCounts, FileStatus, LastError, VectorStore, VectorStoreFile
from schulki.gateway.documents.store_ingests import DOCUMENT_PREFIX, StoreContents
from schulki.gateway.documents.stores import FileRecord
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

STORE_ID = re.compile(r"^vs_([A-Za-z0-9_-]{1,64})$")
__all__ = ["DOCUMENT_PREFIX", "STORE_ID", "file_body", "files_of", "find", "store_body", "store_id", "workspace_of"]


def store_id(workspace: str) -> str:
    return f"vs_{workspace}"


def workspace_of(vector_store_id: str) -> str:
    """The workspace a vector store id names; 404 for an id that cannot name one (as for a store that does not exist)."""
    match = STORE_ID.match(vector_store_id)
    if match is None:
        raise ApiError(404, f"No vector store with id {vector_store_id!r} found.", "not_found_error", code="vector_store_not_found")
    return match.group(1)


def _document_body(workspace: str, document: retrieval_pb.Document) -> VectorStoreFile:
    return VectorStoreFile(
        id=DOCUMENT_PREFIX + document.document_id,
        created_at=document.created_at,
        vector_store_id=store_id(workspace),
        status="completed",
        usage_bytes=max(document.size_bytes, document.text_bytes),
        attributes={"filename": document.source},
    )


def file_body(record: FileRecord) -> VectorStoreFile:
    error = LastError(code=record.error_code, message=record.error_message) if record.status == "failed" else None
    return VectorStoreFile(
        id=record.file_id,
        created_at=record.created_at,
        vector_store_id=store_id(record.workspace),
        status=cast(FileStatus, record.status),
        last_error=error,
        usage_bytes=record.usage_bytes,
        attributes={"filename": record.filename},
    )


def files_of(contents: StoreContents) -> list[VectorStoreFile]:
    """The store's files: those added through the API (with their status), then the documents that came in another way."""
    workspace = contents.workspace.name
    return [file_body(record) for record in contents.files] + [_document_body(workspace, d) for d in contents.documents]


def find(contents: StoreContents, file_id: str) -> VectorStoreFile:
    for found in files_of(contents):
        if found.id == file_id:
            return found
    raise ApiError(404, f"No file with id {file_id!r} in this vector store.", "not_found_error", param="file_id", code="file_not_found")


def store_body(contents: StoreContents) -> VectorStore:
    space, record, files = contents.workspace, contents.record, files_of(contents)
    counts = {status: sum(f.status == status for f in files) for status in ("in_progress", "completed", "failed", "cancelled")}
    kind = "class" if space.name.startswith("k-") else ("store" if record else "private")
    return VectorStore(
        id=store_id(space.name),
        created_at=record.created_at if record else min((f.created_at for f in files), default=0),
        name=record.name if record else space.label,
        usage_bytes=contents.used_bytes,
        file_counts=FileCounts(**counts, total=len(files)),
        status="in_progress" if counts["in_progress"] else "completed",
        metadata={"kind": kind, "writable": "true" if space.writable else "false"},
    )
