"""The RetrievalService: workspaces, document ingest and hybrid search over gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from schulki.config import Config
from schulki.retrieval.class_yield import ClassYield
from schulki.retrieval.embedder import EmbeddingsClient
from schulki.retrieval.ingest import Ingestor, Progress, Upload, workspace_quota_bytes
from schulki.retrieval.store import DocumentRecord, Store
from schulki.retrieval.v1 import retrieval_service_pb2 as pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from schulki.runtime.errors import InvalidInput, NotFound, NotReady
from schulki.runtime.logs import content

log = logging.getLogger("schulki.retrieval")

DEFAULT_TOP_K = 5
MAX_TOP_K = 100
MAX_QUERY_CHARS = 4000
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
"""Most bytes of a refused upload read and dropped so that its sender hears the real reason (``_drain``): an upload
refused at its first message (its type, a full workspace) is seldom larger, and a 2 GB one is not read to its end."""


def store_folder(config: Config) -> Path:
    """The embedded store's folder (also where uploads wait while they are parsed)."""
    return config.retrieval.store_path or config.data_dir / "retrieval"


def open_store(config: Config) -> Store:
    """The store the settings name."""
    if config.retrieval.store == "weaviate":
        from schulki.retrieval.weaviate_store import WeaviateStore

        return WeaviateStore(config.retrieval)
    from schulki.retrieval.embedded_store import EmbeddedStore

    return EmbeddedStore(store_folder(config), config.retrieval)


def document_proto(record: DocumentRecord) -> pb.Document:
    return pb.Document(
        document_id=record.document_id,
        source=record.source,
        chunk_count=record.chunk_count,
        page_count=record.page_count,
        size_bytes=record.size_bytes,
        created_at=record.created_at,
        format=record.format,
        text_bytes=record.text_bytes,
    )


class RetrievalService(pb_grpc.RetrievalServiceServicer):
    """Keeps documents in workspaces and finds the passages that answer a question."""

    service_name = pb.DESCRIPTOR.services_by_name["RetrievalService"].full_name

    def __init__(self, config: Config):
        self.config = config
        self.settings = config.retrieval
        self.store: Store | None = None
        address = self.settings.embeddings_address or f"127.0.0.1:{config.embeddings.port}"
        self.embedder = EmbeddingsClient(address, config.runtime, self.settings.embeddings_timeout_s)
        self.class_yield = ClassYield(config)
        self.ingestor: Ingestor | None = None

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_RetrievalServiceServicer_to_server(self, server)

    async def start(self) -> None:
        self.store = await asyncio.to_thread(open_store, self.config)
        removed = await asyncio.to_thread(self.store.recover)
        if removed:
            log.warning("removed %d documents whose ingest had not finished", removed)
        self.ingestor = Ingestor(self.store, self.embedder, self.settings, store_folder(self.config) / "incoming", self.class_yield)
        await asyncio.to_thread(self.ingestor.clear_incoming)
        self.embedder.open()

    async def close(self) -> None:
        await self.embedder.close()
        await self.class_yield.close()
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    def _ready(self) -> Store:
        if self.store is None or self.ingestor is None:
            raise NotReady("Der Dienst startet noch. (the retrieval service is starting)")
        return self.store

    def _ready_ingestor(self) -> Ingestor:
        self._ready()
        if self.ingestor is None:  # set together with the store; here for the type checker's sake
            raise NotReady("Der Dienst startet noch. (the retrieval service is starting)")
        return self.ingestor

    async def CreateWorkspace(self, request: pb.CreateWorkspaceRequest, context: grpc.aio.ServicerContext) -> pb.CreateWorkspaceResponse:
        await asyncio.to_thread(self._ready().create_workspace, request.workspace)
        log.info("created workspace %s", request.workspace)
        return pb.CreateWorkspaceResponse(workspace=request.workspace)

    async def ListWorkspaces(self, request: pb.ListWorkspacesRequest, context: grpc.aio.ServicerContext) -> pb.ListWorkspacesResponse:
        return pb.ListWorkspacesResponse(workspaces=await asyncio.to_thread(self._ready().list_workspaces))

    async def DeleteWorkspace(self, request: pb.DeleteWorkspaceRequest, context: grpc.aio.ServicerContext) -> pb.DeleteWorkspaceResponse:
        count = await asyncio.to_thread(self._ready().delete_workspace, request.workspace)
        log.info("deleted workspace %s with %d documents", request.workspace, count)
        return pb.DeleteWorkspaceResponse(deleted_documents=count)

    async def IngestDocument(
        self, request_iterator: AsyncIterator[pb.IngestDocumentRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.IngestDocumentResponse]:
        ingestor = self._ready_ingestor()
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("source"):
            raise InvalidInput("Die erste Nachricht muss Arbeitsbereich und Dateiname nennen. (the first message must carry the source)")
        source = first.source
        if source.url and source.file_name:
            raise InvalidInput("Entweder eine Datei oder eine Adresse, nicht beides. (file_name and url are exclusive)")

        async def file_bytes() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                if message.HasField("source"):
                    raise InvalidInput("Nur die erste Nachricht darf die Quelle nennen. (source sent twice)")
                yield message.file_chunk

        upload = Upload(workspace=source.workspace, file_name=source.file_name, url=source.url, user=source.user or context.peer())
        try:
            async for item in ingestor.ingest(upload, file_bytes()):
                if isinstance(item, Progress):
                    yield pb.IngestDocumentResponse(
                        progress=pb.IngestProgress(stage=item.stage, done=item.done, total=item.total, unit=item.unit)
                    )
                else:
                    yield pb.IngestDocumentResponse(document=document_proto(item))
        except Exception:
            await self._drain(request_iterator)
            raise

    async def _drain(self, request_iterator: AsyncIterator[pb.IngestDocumentRequest]) -> None:
        """Read and drop what the client still sends of a refused upload, before the refusal ends the call.

        A refusal that ends the call while the client is still writing (a file type refused before its first
        byte, a full workspace) reaches a Python client as INTERNAL "Internal error from Core": grpc.aio
        replaces the call's status with its failed write. Drained, the client's writes all succeed and it
        reads the real reason. Nothing is kept, and no more than DRAIN_LIMIT_BYTES is read: past that the
        sender of a larger refused file may hear INTERNAL, and the bytes it sends are not received for nothing."""
        left = min(self.settings.max_upload_bytes + 1024 * 1024, DRAIN_LIMIT_BYTES)
        with contextlib.suppress(Exception):
            async for message in request_iterator:
                left -= len(message.file_chunk)
                if left < 0:
                    return

    async def ListDocuments(self, request: pb.ListDocumentsRequest, context: grpc.aio.ServicerContext) -> pb.ListDocumentsResponse:
        records = await asyncio.to_thread(self._ready().list_documents, request.workspace)
        return pb.ListDocumentsResponse(
            documents=[document_proto(r) for r in records],
            used_bytes=sum(r.counted_bytes for r in records),
            quota_bytes=workspace_quota_bytes(self.settings, request.workspace),
        )

    async def ExportDocument(self, request: pb.ExportDocumentRequest, context: grpc.aio.ServicerContext) -> pb.ExportDocumentResponse:
        store = self._ready()
        chunks = await asyncio.to_thread(store.document_chunks, request.workspace, request.document_id)
        records = {r.document_id: r for r in await asyncio.to_thread(store.list_documents, request.workspace)}
        record = records.get(request.document_id)
        if record is None:  # deleted in the meantime
            raise NotFound(f"Das Dokument {request.document_id} gibt es in {request.workspace} nicht. (unknown document)")
        log.info("exported document %s from %s (%d chunks)", request.document_id, request.workspace, len(chunks))
        return pb.ExportDocumentResponse(
            document=document_proto(record),
            chunks=[pb.DocumentChunk(chunk_index=c.index, text=c.text, page=c.page, section=c.section) for c in chunks],
        )

    async def DeleteDocument(self, request: pb.DeleteDocumentRequest, context: grpc.aio.ServicerContext) -> pb.DeleteDocumentResponse:
        deleted = await asyncio.to_thread(self._ready().delete_document, request.workspace, request.document_id)
        log.info("deleted document %s from %s (%d chunks)", request.document_id, request.workspace, deleted)
        return pb.DeleteDocumentResponse(deleted_chunks=deleted)

    async def FetchPage(self, request: pb.FetchPageRequest, context: grpc.aio.ServicerContext) -> pb.FetchPageResponse:
        if request.max_chars < 0:
            raise InvalidInput(f"max_chars darf nicht negativ sein, nicht {request.max_chars}. (max_chars is negative)")
        text, format_name, truncated = await self._ready_ingestor().fetch_page(
            request.url, request.user or context.peer(), request.max_chars
        )
        log.info("fetched a page for reading: %s, %d characters", format_name, len(text))
        return pb.FetchPageResponse(text=text, format=format_name, truncated=truncated)

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        store = self._ready()
        query = request.query.strip()
        if not query:
            raise InvalidInput("Die Suchanfrage ist leer. (the query is empty)")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidInput(f"Die Suchanfrage ist zu lang: höchstens {MAX_QUERY_CHARS} Zeichen. (query too long)")
        top_k = request.top_k or DEFAULT_TOP_K
        if not 0 < top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k muss zwischen 1 und {MAX_TOP_K} liegen, nicht {request.top_k}. (top_k out of range)")
        weight = request.vector_weight if request.HasField("vector_weight") else self.settings.vector_weight
        if not 0.0 <= weight <= 1.0:
            raise InvalidInput(f"vector_weight muss zwischen 0 und 1 liegen, nicht {weight:g}. (vector_weight out of range)")
        await asyncio.to_thread(store.require_workspace, request.workspace)
        # BM25 alone needs no vector, so it works even while the embeddings service is down.
        vector = (await self.embedder.embed([query], query=True))[0] if weight > 0 else []
        hits = await asyncio.to_thread(store.search, request.workspace, query, vector, top_k, weight)
        log.info("search in %s: %s, %d hits", request.workspace, content(query), len(hits))
        return pb.SearchResponse(
            hits=[
                pb.Hit(
                    text=h.text,
                    score=h.score,
                    source=h.source,
                    page=h.page,
                    section=h.section,
                    document_id=h.document_id,
                    chunk_index=h.chunk_index,
                )
                for h in hits
            ]
        )
