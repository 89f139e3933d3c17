"""/v1/vector_stores in OpenAI's shape: a user's workspaces, the files in them, and search.

A vector store is a workspace: the id ``vs_<workspace>`` names the private
workspace (``vs_u-12``), a class's workspace (``vs_k-7a``) or one the user
created here (``vs_u-12-3fa9c2d1``). Who may see and change which is the rule
of ``gateway/documents/workspaces.py``, the same as in the Dokumente tab; a store the
user may not see answers 404, exactly like one that does not exist.

Adding a file starts its ingest in the background and answers at once with
status ``in_progress``; the client polls until ``completed`` or ``failed``
(with ``last_error``), as OpenAI's ``create_and_poll`` does. Documents that
came in through the Dokumente tab are files of their store too, with the id
``doc-<document id>``. A schulki extension ingests a web page: ``POST
/v1/vector_stores/{id}/files`` with ``{"url": "https://..."}`` instead of a file id.
"""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from schulki.gateway.accounts.database import Workspace
from schulki.gateway.api.deps import AccountDep, GatewayDep
from schulki.gateway.api.errors import ApiError
from schulki.gateway.api.responses import (
    Deleted,
    ListPage,
    SearchResult,
    SearchResultsPage,
    TextContent,
    VectorStore,
    VectorStoreFile,
    one_page,
)
from schulki.gateway.api.schemas import CreateStoreFileRequest, CreateVectorStoreRequest, SearchRequest
from schulki.gateway.api.vector_store_files import DOCUMENT_PREFIX, StoreFilesDep
from schulki.gateway.documents.stored_files import find_file
from schulki.gateway.documents.workspaces import visible_workspaces

POLL_AFTER_MS = "300"
"""Sent as openai-poll-after-ms: how often the openai client asks whether an ingest is done."""

router = APIRouter(prefix="/v1")


def _polled(body: VectorStore | VectorStoreFile) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json"), headers={"openai-poll-after-ms": POLL_AFTER_MS})


# -- stores ------------------------------------------------------------------------------------------------------------


@router.post("/vector_stores", response_model=VectorStore)
async def create_store(body: CreateVectorStoreRequest, gateway: GatewayDep, account: AccountDep, files: StoreFilesDep) -> JSONResponse:
    for file_id in body.file_ids:  # all or nothing: check every id before the store exists
        if await run_in_threadpool(find_file, gateway, account, file_id) is None:  # may copy it from the database
            raise ApiError(404, f"No file with id {file_id!r} found.", "not_found_error", param="file_ids", code="file_not_found")
    files.check_room(account, len(body.file_ids))
    limit = gateway.config.gateway.vector_stores_per_user
    if len(gateway.stores.owned(account.id)) >= limit:
        raise ApiError(
            400,
            f"Du hast schon {limit} eigene Arbeitsbereiche; lösche erst einen. (At most {limit} vector stores per user; delete one first.)",
            code="too_many_vector_stores",
        )
    record = gateway.stores.create(account.id, body.name.strip() or "Dokumente")
    try:
        ingest = await gateway.create_vector_store(account, record.workspace)
    except Exception:
        gateway.stores.remove(record.workspace)
        raise
    space = Workspace(record.workspace, record.name, True)
    for file_id in body.file_ids:
        await files.add(account, ingest, space, file_id, None)
    return _polled(await files.store_body(space))


@router.get("/vector_stores")
async def list_stores(gateway: GatewayDep, account: AccountDep, files: StoreFilesDep) -> ListPage[VectorStore]:
    data = [await files.store_body(space) for space in visible_workspaces(gateway, account)]
    return ListPage[VectorStore](**one_page(data))


@router.get("/vector_stores/{vector_store_id}", response_model=VectorStore)
async def get_store(vector_store_id: str, account: AccountDep, files: StoreFilesDep) -> JSONResponse:
    return _polled(await files.store_body(files.store_for(account, vector_store_id)))


@router.delete("/vector_stores/{vector_store_id}")
async def delete_store(vector_store_id: str, gateway: GatewayDep, account: AccountDep, files: StoreFilesDep) -> Deleted:
    space = files.store_for(account, vector_store_id, write=True)
    if gateway.stores.store(space.name) is None:
        raise ApiError(
            400,
            "Nur selbst angelegte Arbeitsbereiche lassen sich löschen; hier lassen sich nur Dateien löschen. "
            "(Only vector stores created through the API can be deleted; delete the files of this one instead.)",
            code="vector_store_not_deletable",
        )
    files.cancel(space.name)
    await gateway.delete_workspace(space.name)
    gateway.stores.remove(space.name)
    return Deleted(id=vector_store_id, object="vector_store.deleted")


# -- files of a store --------------------------------------------------------------------------------------------------


@router.post("/vector_stores/{vector_store_id}/files", response_model=VectorStoreFile)
async def create_store_file(
    vector_store_id: str, body: CreateStoreFileRequest, gateway: GatewayDep, account: AccountDep, files: StoreFilesDep
) -> JSONResponse:
    space = files.store_for(account, vector_store_id, write=True)
    if (body.file_id is None) == (body.url is None):
        raise ApiError(400, "Send either file_id (an upload from /v1/files) or url (a web page).", param="file_id")
    ingest = gateway.add_to_vector_store(account)
    return _polled(files.file_body(await files.add(account, ingest, space, body.file_id, body.url)))


@router.get("/vector_stores/{vector_store_id}/files")
async def list_store_files(
    vector_store_id: str, account: AccountDep, files: StoreFilesDep, status: str | None = Query(None, alias="filter")
) -> ListPage[VectorStoreFile]:
    data = await files.files_of(files.store_for(account, vector_store_id).name)
    if status:
        data = [f for f in data if f.status == status]
    return ListPage[VectorStoreFile](**one_page(data))


@router.get("/vector_stores/{vector_store_id}/files/{file_id}", response_model=VectorStoreFile)
async def get_store_file(vector_store_id: str, file_id: str, account: AccountDep, files: StoreFilesDep) -> JSONResponse:
    return _polled(await files.find(files.store_for(account, vector_store_id), file_id))


@router.delete("/vector_stores/{vector_store_id}/files/{file_id}")
async def delete_store_file(vector_store_id: str, file_id: str, gateway: GatewayDep, account: AccountDep, files: StoreFilesDep) -> Deleted:
    space = files.store_for(account, vector_store_id, write=True)
    await files.find(space, file_id)
    files.cancel(space.name, file_id)
    record = gateway.stores.file(space.name, file_id)
    document_id = record.document_id if record else file_id.removeprefix(DOCUMENT_PREFIX)
    if document_id:
        await gateway.delete_document(space.name, document_id)
    gateway.stores.remove_file(space.name, file_id)
    return Deleted(id=file_id, object="vector_store.file.deleted")


# -- search ------------------------------------------------------------------------------------------------------------


@router.post("/vector_stores/{vector_store_id}/search")
async def search(
    vector_store_id: str, body: SearchRequest, gateway: GatewayDep, account: AccountDep, files: StoreFilesDep
) -> SearchResultsPage:
    space = files.store_for(account, vector_store_id)
    hits = await gateway.search(account, space.name, body.query, top_k=body.max_num_results)
    file_ids = {r.document_id: r.file_id for r in gateway.stores.files(space.name) if r.document_id}
    data = []
    for hit in hits:
        attributes: dict[str, str | int] = {"document_id": hit.document_id, "chunk_index": hit.chunk_index}
        if hit.page:
            attributes["page"] = hit.page
        if hit.section:
            attributes["section"] = hit.section
        data.append(
            SearchResult(
                file_id=file_ids.get(hit.document_id, DOCUMENT_PREFIX + hit.document_id),
                filename=hit.source,
                score=hit.score,
                attributes=attributes,
                content=[TextContent(text=hit.text)],
            )
        )
    return SearchResultsPage(search_query=[body.query], data=data)
