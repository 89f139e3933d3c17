"""The files of the /v1 vector stores as OpenAI describes them, over the ingests of ``gateway/documents/store_ingests.py``.

One ``VectorStoreFiles`` per app (``app.state.vector_store_files``, made on
first use) holds the app's one ``StoreIngests`` (the ingests that run now);
the routes in ``vector_stores.py`` get it through the ``StoreFilesDep``
dependency. Here a vector store id is read and the bodies are written.
"""

from __future__ import annotations

import re
from typing import Annotated, cast

from fastapi import Depends, Request

from schulki.gateway.accounts.database import Account, Workspace
from schulki.gateway.api.deps import GatewayDep
from schulki.gateway.api.errors import ApiError
from schulki.gateway.api.responses import FileCounts, FileStatus, LastError, VectorStore, VectorStoreFile
from schulki.gateway.context import Gateway, StoreIngest
from schulki.gateway.documents.store_ingests import StoreIngests
from schulki.gateway.documents.stores import FileRecord
from schulki.gateway.documents.workspaces import workspace_access
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

STORE_ID = re.compile(r"^vs_([A-Za-z0-9_-]{1,64})$")
DOCUMENT_PREFIX = "doc-"


def store_id(workspace: str) -> str:
    return f"vs_{workspace}"


def _document_body(workspace: str, document: retrieval_pb.Document) -> VectorStoreFile:
    return VectorStoreFile(
        id=DOCUMENT_PREFIX + document.document_id,
        created_at=document.created_at,
        vector_store_id=store_id(workspace),
        status="completed",
        usage_bytes=max(document.size_bytes, document.text_bytes),
        attributes={"filename": document.source},
    )


class VectorStoreFiles:
    """The vector stores' files of one app in OpenAI's shape, and the ingests it runs for them."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.ingests = StoreIngests(gateway)

    def store_for(self, account: Account, vector_store_id: str, write: bool = False) -> Workspace:
        """The user's store; WorkspaceRefused (by the error table: 404 for one they may not see, exactly as for one that
        does not exist; 403 for a read-only one)."""
        match = STORE_ID.match(vector_store_id)
        if match is None:
            raise ApiError(404, f"No vector store with id {vector_store_id!r} found.", "not_found_error", code="vector_store_not_found")
        return workspace_access(self.gateway, account, match.group(1), write)

    def file_body(self, record: FileRecord) -> VectorStoreFile:
        record = self.ingests.current(record)
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

    async def files_of(self, workspace: str) -> list[VectorStoreFile]:
        """The store's files: those added here (with their status), then the documents that came in another way."""
        records, documents = await self.ingests.listed(workspace)
        return [self.file_body(record) for record in records] + [_document_body(workspace, d) for d in documents]

    async def find(self, space: Workspace, file_id: str) -> VectorStoreFile:
        for found in await self.files_of(space.name):
            if found.id == file_id:
                return found
        raise ApiError(404, f"No file with id {file_id!r} in this vector store.", "not_found_error", param="file_id", code="file_not_found")

    async def store_body(self, space: Workspace) -> VectorStore:
        files = await self.files_of(space.name)
        used, _quota = await self.gateway.storage(space.name)
        counts = {status: sum(f.status == status for f in files) for status in ("in_progress", "completed", "failed", "cancelled")}
        record = self.gateway.stores.store(space.name)
        kind = "class" if space.name.startswith("k-") else ("store" if record else "private")
        return VectorStore(
            id=store_id(space.name),
            created_at=record.created_at if record else min((f.created_at for f in files), default=0),
            name=record.name if record else space.label,
            usage_bytes=used,
            file_counts=FileCounts(**counts, total=len(files)),
            status="in_progress" if counts["in_progress"] else "completed",
            metadata={"kind": kind, "writable": "true" if space.writable else "false"},
        )

    def check_room(self, account: Account, more: int) -> None:
        self.ingests.check_room(account, more)

    async def add(self, account: Account, ingest: StoreIngest, space: Workspace, file_id: str | None, url: str | None) -> FileRecord:
        return await self.ingests.add(account, ingest, space.name, file_id, url)

    def cancel(self, workspace: str, file_id: str | None = None) -> None:
        self.ingests.cancel(workspace, file_id)


def vector_store_files(request: Request, gateway: GatewayDep) -> VectorStoreFiles:
    """The app's one VectorStoreFiles (its running ingests must be seen by every request)."""
    state = request.app.state
    files: VectorStoreFiles | None = getattr(state, "vector_store_files", None)
    if files is None:
        files = state.vector_store_files = VectorStoreFiles(gateway)
    return files


StoreFilesDep = Annotated[VectorStoreFiles, Depends(vector_store_files)]
