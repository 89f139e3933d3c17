"""The files added to a workspace through /v1/vector_stores, and the ingests this process runs for them in the background.

The Gateway owns the one ``StoreIngests`` of its app (the ingests that run
now) and calls it from its vector store use cases, after its own access and
quota checks; ``api/vector_store_files.py`` writes the answers. A file's
record lives in the accounts database (``gateway.stores``); a record still
``in_progress`` that no process runs any more was cut off by a restart and is
answered as failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from starlette.concurrency import run_in_threadpool

from schulki.gateway.accounts.database import Account, Workspace
from schulki.gateway.documents.stored_files import FileRefused, Uploads, find_file, no_such_file
from schulki.gateway.documents.stores import FileRecord, StoreRecord, Stores
from schulki.gateway.nodes.clients import ServiceDown
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

log = logging.getLogger(__name__)

THIS_PROCESS = secrets.token_hex(8)
"""Marks the ingests this gateway process runs; another gateway's ingest counts as cut off only after STALE_AFTER_S."""
STALE_AFTER_S = 6 * 3600
LAST_ERROR_CODES = {
    grpc.StatusCode.UNIMPLEMENTED: "unsupported_file",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_file",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "invalid_file",
    grpc.StatusCode.PERMISSION_DENIED: "invalid_file",
    grpc.StatusCode.NOT_FOUND: "invalid_file",
}
"""last_error.code (OpenAI knows three) for the retrieval service's refusals; anything else is a server_error."""
INTERRUPTED = (
    "server_error",
    "Die Verarbeitung wurde unterbrochen; bitte erneut hinzufügen. (Ingest was interrupted; add the file again.)",
)
"""last_error of an ingest cut off by a restart: (code, message)."""
Key = tuple[str, str]
"""(workspace, file id) of an ingest."""
DOCUMENT_PREFIX = "doc-"
"""A document that came into a store another way (the Dokumente tab) is its file ``doc-<document id>``."""
StoreIngest = Callable[[str, Path | None, str, str], AsyncIterator[retrieval_pb.IngestDocumentResponse]]
"""Ingest into a vector store's workspace (workspace, an upload's path or None, else a web page's url, the file name),
for a user whose request was counted already; only the Gateway's vector store use cases make one."""


class IngestSources(Uploads, Protocol):
    """What the ingests read: the settings, the uploads and the vector stores' records (the Gateway)."""

    @property
    def stores(self) -> Stores: ...


@dataclass(frozen=True)
class StoreContents:
    """A vector store as its user may see it now: the workspace, its record when it was created through the API, the files
    added through the API (as they are now), the documents that came in another way, and the bytes it uses."""

    workspace: Workspace
    record: StoreRecord | None
    files: list[FileRecord]
    documents: list[retrieval_pb.Document]
    used_bytes: int

    def file_ids(self) -> set[str]:
        return {record.file_id for record in self.files} | {DOCUMENT_PREFIX + d.document_id for d in self.documents}


def _last_error(error: BaseException) -> tuple[str, str]:
    if isinstance(error, grpc.RpcError):
        return LAST_ERROR_CODES.get(error.code(), "server_error"), error.details() or error.code().name
    if isinstance(error, ServiceDown):
        return "server_error", "Die Dokumentsuche ist gerade nicht erreichbar. (The retrieval service is not available right now.)"
    return "server_error", "Die Datei konnte nicht verarbeitet werden. (The file could not be processed.)"


class StoreIngests:
    """The vector stores' files of one app, and the ingests it runs for them."""

    def __init__(
        self,
        sources: IngestSources,
        list_documents: Callable[[str], Awaitable[list[retrieval_pb.Document]]],
        storage: Callable[[str], Awaitable[tuple[int, int]]],
    ) -> None:
        self.sources = sources
        self.stores = sources.stores
        self._list_documents, self._storage = list_documents, storage
        self.jobs: dict[Key, asyncio.Task[None]] = {}
        """Ingests running in this process; a record still in_progress without one was cut off by a restart."""
        self.starters: dict[Key, int] = {}
        """The account that started each running ingest: one user may have only so many running at once."""

    def cut_off(self, record: FileRecord) -> bool:
        """An ingest recorded as running that no process runs any more (the gateway restarted meanwhile)."""
        if record.status != "in_progress":
            return False
        if record.runner == THIS_PROCESS:
            return (record.workspace, record.file_id) not in self.jobs
        return time.time() - record.created_at > STALE_AFTER_S

    def current(self, record: FileRecord) -> FileRecord:
        """The record as the user sees it now: an ingest cut off by a restart as failed (INTERRUPTED)."""
        if self.cut_off(record):
            # read before an await while the ingest ended meanwhile (a fast refusal): its outcome is stored by now
            record = self.stores.file(record.workspace, record.file_id) or record
        if self.cut_off(record):
            code, message = INTERRUPTED
            return dataclasses.replace(record, status="failed", error_code=code, error_message=message)
        return record

    async def listed(self, workspace: str) -> tuple[list[FileRecord], list[retrieval_pb.Document]]:
        """The store's files: those added here (as they are now), and the documents that came in another way."""
        records = self.stores.files(workspace)  # read before the documents: a record completed now has its document listed
        documents = await self._list_documents(workspace)
        present = {d.document_id for d in documents}
        found: list[FileRecord] = []
        for record in records:
            if record.status == "completed" and record.document_id not in present:
                self.stores.remove_file(workspace, record.file_id)  # deleted in the Dokumente tab or by the retention purge
                continue
            found.append(self.current(record))
        known = {r.document_id for r in self.stores.files(workspace) if r.document_id}
        return found, [d for d in documents if d.document_id not in known]

    async def contents(self, space: Workspace) -> StoreContents:
        """The store's files and documents, and the bytes it uses (the caller checked that the user may read it)."""
        records, documents = await self.listed(space.name)
        used, _quota = await self._storage(space.name)
        return StoreContents(space, self.stores.store(space.name), records, documents, used)

    async def _run(self, ingest: StoreIngest, workspace: str, file_id: str, path: Path | None, url: str, filename: str) -> None:
        try:
            document = None
            async for event in ingest(workspace, path, url, filename):
                if event.HasField("document"):
                    document = event.document
            if document is None:
                self.stores.fail(
                    workspace, file_id, "server_error", "Die Verarbeitung endete ohne Dokument. (Ingest ended without a document.)"
                )
            else:
                self.stores.finish(workspace, file_id, document.document_id, max(document.size_bytes, document.text_bytes))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            code, message = _last_error(error)
            log.info("ingest of a file for %s failed: %s", workspace, code)
            self.stores.fail(workspace, file_id, code, message)
        finally:
            self.jobs.pop((workspace, file_id), None)
            self.starters.pop((workspace, file_id), None)

    def check_room(self, account: Account, more: int) -> None:
        """FileRefused (429) when the user would have more than api_ingests_per_user ingests running: the retrieval service
        takes ingests in turn, and one user's pile must not hold up the class's."""
        running = sum(starter == account.id for starter in self.starters.values())
        limit = self.sources.config.gateway.api_ingests_per_user
        if running + more > limit:
            raise FileRefused(
                429,
                f"Es werden schon {running} Dateien von dir verarbeitet; höchstens {limit} auf einmal. "
                f"(At most {limit} files of one user are processed at once; wait until one is done.)",
                code="too_many_ingests",
                retry_after_s=5,
            )

    async def add(self, account: Account, ingest: StoreIngest, workspace: str, file_id: str | None, url: str | None) -> FileRecord:
        """Start ingesting one of the user's uploads, or a web page, into the workspace."""
        path: Path | None = None
        if url is not None:
            if not re.match(r"^https?://[^\s]+$", url) or len(url) > 2048:
                raise FileRefused(400, "url must be an http:// or https:// address of at most 2048 characters.", param="url")
            self.check_room(account, 1)
            new_id, filename = f"file-{secrets.token_hex(12)}", url
        else:
            # off the loop: a file uploaded through another gateway is first copied from the database
            stored = await run_in_threadpool(find_file, self.sources, account, file_id) if file_id is not None else None
            if stored is None:
                raise no_such_file(file_id)
            existing = self.stores.file(workspace, stored.id)
            if existing is not None and existing.status != "failed" and not self.cut_off(existing):
                return existing  # added already, as OpenAI answers; a failed or cut-off ingest is tried again
            self.check_room(account, 1)
            used, quota = await self._storage(workspace)
            if quota and used + stored.bytes > quota:
                raise FileRefused(
                    400,
                    f"Der Speicherplatz dieses Arbeitsbereichs reicht nicht: {used / 2**20:.1f} von {quota / 2**20:.1f} MiB belegt. "
                    f"(The vector store's storage quota of {quota / 2**20:.1f} MiB would be exceeded.)",
                    param="file_id",
                    code="storage_quota_exceeded",
                )
            path, filename, new_id = stored.path, stored.filename, stored.id
            self.stores.remove_file(workspace, new_id)
        record = self.stores.add_file(workspace, new_id, filename, THIS_PROCESS)
        self.jobs[(workspace, new_id)] = asyncio.create_task(self._run(ingest, workspace, new_id, path, url or "", filename))
        self.starters[(workspace, new_id)] = account.id
        return record

    def cancel(self, workspace: str, file_id: str | None = None) -> None:
        """Stop the ingests into a workspace (one file's, or all); ingest is atomic: a cancelled one leaves no document behind."""
        for key in [key for key in self.jobs if key[0] == workspace and file_id in (None, key[1])]:
            self.starters.pop(key, None)
            self.jobs.pop(key).cancel()
