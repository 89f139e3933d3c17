"""/v1/vector_stores in OpenAI's shape: a user's workspaces, the files in them, and search.

A vector store is a workspace: the id ``vs_<workspace>`` names the private
workspace (``vs_u-12``), a class's workspace (``vs_k-7a``) or one the user
created here (``vs_u-12-3fa9c2d1``). Who may see and change which is the rule
of ``gateway/documents/workspaces.py``, the same as in the Dokumente tab, kept
inside each of the Gateway's vector store use cases; a store the user may not
see answers 404, exactly like one that does not exist.

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

from schulki.gateway.api.deps import AccountDep, GatewayDep
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
from schulki.gateway.api.vector_store_files import DOCUMENT_PREFIX, file_body, files_of, find, store_body, workspace_of

POLL_AFTER_MS = "300"
"""Sent as openai-poll-after-ms: how often the openai client asks whether an ingest is done."""

router = APIRouter(prefix="/v1")


def _polled(body: VectorStore | VectorStoreFile) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json"), headers={"openai-poll-after-ms": POLL_AFTER_MS})


# -- stores ------------------------------------------------------------------------------------------------------------


@router.post("/vector_stores", response_model=VectorStore)
async def create_store(body: CreateVectorStoreRequest, gateway: GatewayDep, account: AccountDep) -> JSONResponse:
    return _polled(store_body(await gateway.create_vector_store(account, body.name, body.file_ids)))


@router.get("/vector_stores")
async def list_stores(gateway: GatewayDep, account: AccountDep) -> ListPage[VectorStore]:
    data = [store_body(contents) for contents in await gateway.vector_stores(account)]
    return ListPage[VectorStore](**one_page(data))


@router.get("/vector_stores/{vector_store_id}", response_model=VectorStore)
async def get_store(vector_store_id: str, gateway: GatewayDep, account: AccountDep) -> JSONResponse:
    return _polled(store_body(await gateway.vector_store(account, workspace_of(vector_store_id))))


@router.delete("/vector_stores/{vector_store_id}")
async def delete_store(vector_store_id: str, gateway: GatewayDep, account: AccountDep) -> Deleted:
    await gateway.delete_vector_store(account, workspace_of(vector_store_id))
    return Deleted(id=vector_store_id, object="vector_store.deleted")


# -- files of a store --------------------------------------------------------------------------------------------------


@router.post("/vector_stores/{vector_store_id}/files", response_model=VectorStoreFile)
async def create_store_file(vector_store_id: str, body: CreateStoreFileRequest, gateway: GatewayDep, account: AccountDep) -> JSONResponse:
    record = await gateway.add_to_vector_store(account, workspace_of(vector_store_id), body.file_id, body.url)
    return _polled(file_body(record))


@router.get("/vector_stores/{vector_store_id}/files")
async def list_store_files(
    vector_store_id: str, gateway: GatewayDep, account: AccountDep, status: str | None = Query(None, alias="filter")
) -> ListPage[VectorStoreFile]:
    data = files_of(await gateway.vector_store(account, workspace_of(vector_store_id)))
    if status:
        data = [f for f in data if f.status == status]
    return ListPage[VectorStoreFile](**one_page(data))


@router.get("/vector_stores/{vector_store_id}/files/{file_id}", response_model=VectorStoreFile)
async def get_store_file(vector_store_id: str, file_id: str, gateway: GatewayDep, account: AccountDep) -> JSONResponse:
    return _polled(find(await gateway.vector_store(account, workspace_of(vector_store_id)), file_id))


@router.delete("/vector_stores/{vector_store_id}/files/{file_id}")
async def delete_store_file(vector_store_id: str, file_id: str, gateway: GatewayDep, account: AccountDep) -> Deleted:
    await gateway.delete_vector_store_file(account, workspace_of(vector_store_id), file_id)
    return Deleted(id=file_id, object="vector_store.file.deleted")


# -- search ------------------------------------------------------------------------------------------------------------


@router.post("/vector_stores/{vector_store_id}/search")
async def search(vector_store_id: str, body: SearchRequest, gateway: GatewayDep, account: AccountDep) -> SearchResultsPage:
    workspace = workspace_of(vector_store_id)
    hits = await gateway.search(account, workspace, body.query, top_k=body.max_num_results)
    file_ids = {r.document_id: r.file_id for r in gateway.stores.files(workspace) if r.document_id}
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
