"""/v1/vector_stores in OpenAI's shape: a user's workspaces, the files in them, and search.

A vector store is a workspace: the id ``vs_<workspace>`` names the private
workspace (``vs_u-12``), a class's workspace (``vs_k-7a``) or one the user
created here (``vs_u-12-3fa9c2d1``). Who may see and change which is the rule
of ``gateway/workspaces.py``, the same as in the Dokumente tab; a store the
user may not see answers 404, exactly like one that does not exist.

Adding a file starts its ingest in the background and answers at once with
status ``in_progress``; the client polls until ``completed`` or ``failed``
(with ``last_error``), as OpenAI's ``create_and_poll`` does. Documents that
came in through the Dokumente tab are files of their store too, with the id
``doc-<document id>``. A schulki extension ingests a web page: ``POST
/v1/vector_stores/{id}/files`` with ``{"url": "https://..."}`` instead of a file id.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any

import grpc
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from schulki.gateway.accounts import Account, Workspace
from schulki.gateway.api.chat import api_account
from schulki.gateway.api.errors import ApiError
from schulki.gateway.api.files import find_file
from schulki.gateway.api.schemas import json_body, one_page
from schulki.gateway.clients import ServiceDown
from schulki.gateway.context import Gateway, StoreIngest
from schulki.gateway.stores import FileRecord
from schulki.gateway.workspaces import WorkspaceRefused, visible_workspaces, workspace_access

log = logging.getLogger(__name__)

STORE_ID = re.compile(r"^vs_([A-Za-z0-9_-]{1,64})$")
DOCUMENT_PREFIX = "doc-"
POLL_AFTER_MS = "300"
"""Sent as openai-poll-after-ms: how often the openai client asks whether an ingest is done."""
MAX_RESULTS = 50
THIS_PROCESS = secrets.token_hex(8)
"""Marks the ingests this gateway process runs; another gateway's ingest counts as cut off only after STALE_AFTER_S."""
STALE_AFTER_S = 6 * 3600
MAX_NAME = 80
LAST_ERROR_CODES = {
    grpc.StatusCode.UNIMPLEMENTED: "unsupported_file",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_file",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "invalid_file",
    grpc.StatusCode.PERMISSION_DENIED: "invalid_file",
    grpc.StatusCode.NOT_FOUND: "invalid_file",
}
"""last_error.code (OpenAI knows three) for the retrieval service's refusals; anything else is a server_error."""


def store_id(workspace: str) -> str:
    return f"vs_{workspace}"


def _last_error(error: BaseException) -> tuple[str, str]:
    if isinstance(error, grpc.RpcError):
        return LAST_ERROR_CODES.get(error.code(), "server_error"), error.details() or error.code().name
    if isinstance(error, ServiceDown):
        return "server_error", "Die Dokumentsuche ist gerade nicht erreichbar. (The retrieval service is not available right now.)"
    return "server_error", "Die Datei konnte nicht verarbeitet werden. (The file could not be processed.)"


def _refuse_unsupported(body: dict, fields: tuple[str, ...]) -> None:
    """OpenAI features schulki does not have are refused plainly instead of being ignored without a word."""
    for name in fields:
        value = body.get(name)
        if value is None or (name == "chunking_strategy" and isinstance(value, dict) and value.get("type") == "auto"):
            continue
        raise ApiError(400, f"schulki does not support {name}; leave it out.", param=name, code="unsupported_parameter")


def router(gateway: Gateway) -> APIRouter:
    routes = APIRouter(prefix="/v1")
    account_of = api_account(gateway)
    stores = gateway.stores
    jobs: dict[tuple[str, str], asyncio.Task] = {}
    """Ingests running in this process; a record still in_progress without one was cut off by a restart."""
    starters: dict[tuple[str, str], int] = {}
    """The account that started each running ingest: one user may have only so many running at once."""

    def store_for(account: Account, vector_store_id: str, write: bool = False) -> Workspace:
        match = STORE_ID.match(vector_store_id)
        try:
            if match is None:
                raise WorkspaceRefused(vector_store_id, read_only=False)
            return workspace_access(gateway, account, match.group(1), write)
        except WorkspaceRefused as refused:
            if refused.read_only:
                raise ApiError(
                    403,
                    "Du darfst diesen Arbeitsbereich nur lesen. (You may read this vector store but not change it.)",
                    "permission_error",
                    code="read_only",
                ) from None
            raise ApiError(
                404, f"No vector store with id {vector_store_id!r} found.", "not_found_error", code="vector_store_not_found"
            ) from None

    def cut_off(record: FileRecord) -> bool:
        """An ingest recorded as running that no process runs any more (the gateway restarted meanwhile)."""
        if record.status != "in_progress":
            return False
        if record.runner == THIS_PROCESS:
            return (record.workspace, record.file_id) not in jobs
        return time.time() - record.created_at > STALE_AFTER_S

    def file_body(record: FileRecord) -> dict[str, Any]:
        if cut_off(record):
            # read before an await while the ingest ended meanwhile (a fast refusal): its outcome is stored by now
            record = stores.file(record.workspace, record.file_id) or record
        status = record.status
        error = {"code": record.error_code, "message": record.error_message} if status == "failed" else None
        if cut_off(record):
            status = "failed"
            error = {
                "code": "server_error",
                "message": "Die Verarbeitung wurde unterbrochen; bitte erneut hinzufügen. (Ingest was interrupted; add the file again.)",
            }
        return {
            "id": record.file_id,
            "object": "vector_store.file",
            "created_at": record.created_at,
            "vector_store_id": store_id(record.workspace),
            "status": status,
            "last_error": error,
            "usage_bytes": record.usage_bytes,
            "attributes": {"filename": record.filename},
            "chunking_strategy": None,
        }

    def document_body(workspace: str, document: Any) -> dict[str, Any]:
        return {
            "id": DOCUMENT_PREFIX + document.document_id,
            "object": "vector_store.file",
            "created_at": document.created_at,
            "vector_store_id": store_id(workspace),
            "status": "completed",
            "last_error": None,
            "usage_bytes": max(document.size_bytes, document.text_bytes),
            "attributes": {"filename": document.source},
            "chunking_strategy": None,
        }

    async def files_of(workspace: str) -> list[dict[str, Any]]:
        """The store's files: those added here (with their status), then the documents that came in another way."""
        records = stores.files(workspace)  # read before the documents: a record completed now has its document listed
        documents = await gateway.list_documents(workspace)
        present = {d.document_id for d in documents}
        found: list[dict[str, Any]] = []
        for record in records:
            if record.status == "completed" and record.document_id not in present:
                stores.remove_file(workspace, record.file_id)  # deleted in the Dokumente tab or by the retention purge
                continue
            found.append(file_body(record))
        known = {r.document_id for r in stores.files(workspace) if r.document_id}
        found += [document_body(workspace, d) for d in documents if d.document_id not in known]
        return found

    async def store_body(space: Workspace) -> dict[str, Any]:
        files = await files_of(space.name)
        used, _quota = await gateway.storage(space.name)
        counts = {status: sum(f["status"] == status for f in files) for status in ("in_progress", "completed", "failed", "cancelled")}
        record = stores.store(space.name)
        kind = "class" if space.name.startswith("k-") else ("store" if record else "private")
        return {
            "id": store_id(space.name),
            "object": "vector_store",
            "created_at": record.created_at if record else min((f["created_at"] for f in files), default=0),
            "name": record.name if record else space.label,
            "usage_bytes": used,
            "file_counts": {**counts, "total": len(files)},
            "status": "in_progress" if counts["in_progress"] else "completed",
            "last_active_at": None,
            "metadata": {"kind": kind, "writable": "true" if space.writable else "false"},
            "expires_after": None,
            "expires_at": None,
        }

    async def run_ingest(ingest: StoreIngest, workspace: str, file_id: str, path: Path | None, url: str, filename: str) -> None:
        try:
            events = ingest(workspace, path, url, filename)
            document = None
            async for event in events:
                if event.HasField("document"):
                    document = event.document
            if document is None:
                stores.fail(workspace, file_id, "server_error", "Die Verarbeitung endete ohne Dokument. (Ingest ended without a document.)")
            else:
                stores.finish(workspace, file_id, document.document_id, max(document.size_bytes, document.text_bytes))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            code, message = _last_error(error)
            log.info("ingest of a file for %s failed: %s", workspace, code)
            stores.fail(workspace, file_id, code, message)
        finally:
            jobs.pop((workspace, file_id), None)
            starters.pop((workspace, file_id), None)

    def check_room(account: Account, more: int) -> None:
        """429 when the user would have more than api_ingests_per_user ingests running: the retrieval service takes
        ingests in turn, and one user's pile must not hold up the class's."""
        running = sum(starter == account.id for starter in starters.values())
        limit = gateway.config.gateway.api_ingests_per_user
        if running + more > limit:
            raise ApiError(
                429,
                f"Es werden schon {running} Dateien von dir verarbeitet; höchstens {limit} auf einmal. "
                f"(At most {limit} files of one user are processed at once; wait until one is done.)",
                "rate_limit_error",
                code="too_many_ingests",
                headers={"Retry-After": "5"},
            )

    async def add_file(account: Account, ingest: StoreIngest, space: Workspace, file_id: str | None, url: str | None) -> FileRecord:
        """Start ingesting one of the user's uploads, or a web page, into the workspace."""
        path: Path | None = None
        if url is not None:
            if not isinstance(url, str) or not re.match(r"^https?://[^\s]+$", url) or len(url) > 2048:
                raise ApiError(400, "url must be an http:// or https:// address of at most 2048 characters.", param="url")
            check_room(account, 1)
            new_id, filename = f"file-{secrets.token_hex(12)}", url
        else:
            stored = find_file(gateway, account, file_id) if isinstance(file_id, str) else None
            if stored is None:
                raise ApiError(404, f"No file with id {file_id!r} found.", "not_found_error", param="file_id", code="file_not_found")
            existing = stores.file(space.name, stored.id)
            if existing is not None and existing.status != "failed" and not cut_off(existing):
                return existing  # added already, as OpenAI answers; a failed or cut-off ingest is tried again
            check_room(account, 1)
            used, quota = await gateway.storage(space.name)
            if quota and used + stored.bytes > quota:
                raise ApiError(
                    400,
                    f"Der Speicherplatz dieses Arbeitsbereichs reicht nicht: {used / 2**20:.1f} von {quota / 2**20:.1f} MiB belegt. "
                    f"(The vector store's storage quota of {quota / 2**20:.1f} MiB would be exceeded.)",
                    param="file_id",
                    code="storage_quota_exceeded",
                )
            path, filename, new_id = stored.path, stored.filename, stored.id
            stores.remove_file(space.name, new_id)
        record = stores.add_file(space.name, new_id, filename, THIS_PROCESS)
        jobs[(space.name, new_id)] = asyncio.create_task(run_ingest(ingest, space.name, new_id, path, url or "", filename))
        starters[(space.name, new_id)] = account.id
        return record

    def polled(body: dict[str, Any]) -> JSONResponse:
        return JSONResponse(body, headers={"openai-poll-after-ms": POLL_AFTER_MS})

    # -- stores --------------------------------------------------------------

    @routes.post("/vector_stores")
    async def create_store(request: Request, account: Account = Depends(account_of)) -> JSONResponse:
        body = await json_body(request)
        _refuse_unsupported(body, ("expires_after", "chunking_strategy"))
        name = body.get("name") or "Dokumente"
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise ApiError(400, f"name must be a text of at most {MAX_NAME} characters.", param="name")
        file_ids = body.get("file_ids") or []
        if not isinstance(file_ids, list) or not all(isinstance(f, str) for f in file_ids):
            raise ApiError(400, "file_ids must be a list of file ids.", param="file_ids")
        for file_id in file_ids:  # all or nothing: check every id before the store exists
            if find_file(gateway, account, file_id) is None:
                raise ApiError(404, f"No file with id {file_id!r} found.", "not_found_error", param="file_ids", code="file_not_found")
        check_room(account, len(file_ids))
        limit = gateway.config.gateway.vector_stores_per_user
        if len(stores.owned(account.id)) >= limit:
            raise ApiError(
                400,
                f"Du hast schon {limit} eigene Arbeitsbereiche; lösche erst einen. (At most {limit} vector stores per user; delete one first.)",
                code="too_many_vector_stores",
            )
        record = stores.create(account.id, name.strip() or "Dokumente")
        try:
            ingest = await gateway.create_vector_store(account, record.workspace)
        except Exception:
            stores.remove(record.workspace)
            raise
        space = Workspace(record.workspace, record.name, True)
        for file_id in file_ids:
            await add_file(account, ingest, space, file_id, None)
        return polled(await store_body(space))

    @routes.get("/vector_stores")
    async def list_stores(account: Account = Depends(account_of)) -> dict:
        data = [await store_body(space) for space in visible_workspaces(gateway, account)]
        return one_page(data)

    @routes.get("/vector_stores/{vector_store_id}")
    async def get_store(vector_store_id: str, account: Account = Depends(account_of)) -> JSONResponse:
        return polled(await store_body(store_for(account, vector_store_id)))

    @routes.delete("/vector_stores/{vector_store_id}")
    async def delete_store(vector_store_id: str, account: Account = Depends(account_of)) -> dict:
        space = store_for(account, vector_store_id, write=True)
        if stores.store(space.name) is None:
            raise ApiError(
                400,
                "Nur selbst angelegte Arbeitsbereiche lassen sich löschen; hier lassen sich nur Dateien löschen. "
                "(Only vector stores created through the API can be deleted; delete the files of this one instead.)",
                code="vector_store_not_deletable",
            )
        for key in [key for key in jobs if key[0] == space.name]:
            jobs[key].cancel()  # its finally forgets the job
        await gateway.delete_workspace(space.name)
        stores.remove(space.name)
        return {"id": vector_store_id, "object": "vector_store.deleted", "deleted": True}

    # -- files of a store ----------------------------------------------------

    @routes.post("/vector_stores/{vector_store_id}/files")
    async def create_store_file(vector_store_id: str, request: Request, account: Account = Depends(account_of)) -> JSONResponse:
        body = await json_body(request)
        space = store_for(account, vector_store_id, write=True)
        _refuse_unsupported(body, ("attributes", "chunking_strategy"))
        file_id, url = body.get("file_id"), body.get("url")
        if (file_id is None) == (url is None):
            raise ApiError(400, "Send either file_id (an upload from /v1/files) or url (a web page).", param="file_id")
        ingest = gateway.add_to_vector_store(account)
        return polled(file_body(await add_file(account, ingest, space, file_id, url)))

    @routes.get("/vector_stores/{vector_store_id}/files")
    async def list_store_files(
        vector_store_id: str, account: Account = Depends(account_of), status: str | None = Query(None, alias="filter")
    ) -> dict:
        space = store_for(account, vector_store_id)
        data = await files_of(space.name)
        if status:
            data = [f for f in data if f["status"] == status]
        return one_page(data)

    async def find_store_file(space: Workspace, file_id: str) -> dict[str, Any]:
        for found in await files_of(space.name):
            if found["id"] == file_id:
                return found
        raise ApiError(404, f"No file with id {file_id!r} in this vector store.", "not_found_error", param="file_id", code="file_not_found")

    @routes.get("/vector_stores/{vector_store_id}/files/{file_id}")
    async def get_store_file(vector_store_id: str, file_id: str, account: Account = Depends(account_of)) -> JSONResponse:
        return polled(await find_store_file(store_for(account, vector_store_id), file_id))

    @routes.delete("/vector_stores/{vector_store_id}/files/{file_id}")
    async def delete_store_file(vector_store_id: str, file_id: str, account: Account = Depends(account_of)) -> dict:
        space = store_for(account, vector_store_id, write=True)
        await find_store_file(space, file_id)
        task = jobs.pop((space.name, file_id), None)
        starters.pop((space.name, file_id), None)
        if task is not None:
            task.cancel()  # ingest is atomic: a cancelled one leaves no document behind
        record = stores.file(space.name, file_id)
        document_id = record.document_id if record else file_id.removeprefix(DOCUMENT_PREFIX)
        if document_id:
            await gateway.delete_document(space.name, document_id)
        stores.remove_file(space.name, file_id)
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    # -- search --------------------------------------------------------------

    @routes.post("/vector_stores/{vector_store_id}/search")
    async def search(vector_store_id: str, request: Request, account: Account = Depends(account_of)) -> dict:
        body = await json_body(request)
        space = store_for(account, vector_store_id)
        _refuse_unsupported(body, ("filters",))
        query = body.get("query")
        if isinstance(query, list) and query and all(isinstance(q, str) for q in query):
            query = " ".join(query)
        if not isinstance(query, str) or not query.strip():
            raise ApiError(400, "query must be a non-empty text.", param="query")
        count = body.get("max_num_results", 10)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_RESULTS:
            raise ApiError(400, f"max_num_results must be a whole number from 1 to {MAX_RESULTS}.", param="max_num_results")
        hits = await gateway.search(account, space.name, query, top_k=count)
        file_ids = {r.document_id: r.file_id for r in stores.files(space.name) if r.document_id}
        data = []
        for hit in hits:
            attributes: dict[str, str | int] = {"document_id": hit.document_id, "chunk_index": hit.chunk_index}
            if hit.page:
                attributes["page"] = hit.page
            if hit.section:
                attributes["section"] = hit.section
            data.append(
                {
                    "file_id": file_ids.get(hit.document_id, DOCUMENT_PREFIX + hit.document_id),
                    "filename": hit.source,
                    "score": hit.score,
                    "attributes": attributes,
                    "content": [{"type": "text", "text": hit.text}],
                }
            )
        return {"object": "vector_store.search_results.page", "search_query": [query], "data": data, "has_more": False, "next_page": None}

    return routes
