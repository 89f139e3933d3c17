"""gRPC clients to the services, with health-based availability.

Every service may run on several nodes. A background task checks every node's
health every few seconds; calls go round-robin to the nodes that serve. A node
that fails a call with UNAVAILABLE is left out at once and comes back by
itself when its health check passes again, so the tab that needs a service
says plainly that it is down, the other tabs keep working, and nothing needs
a restart when the service returns.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schulki.config import Config
from schulki.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from schulki.embeddings.v1 import embeddings_service_pb2_grpc as embeddings_grpc
from schulki.inference.v1 import inference_service_pb2 as inference_pb
from schulki.inference.v1 import inference_service_pb2_grpc as inference_grpc
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as retrieval_grpc
from schulki.runtime.client import call_metadata, open_channel
from schulki.transcription.v1 import transcription_service_pb2 as transcription_pb
from schulki.transcription.v1 import transcription_service_pb2_grpc as transcription_grpc

log = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024
"""Upload chunk size; below the services' 1 MiB per message."""

SERVICE_NAMES = {
    "inference": ("schulki.inference.v1.InferenceService", inference_grpc.InferenceServiceStub),
    "embeddings": ("schulki.embeddings.v1.EmbeddingsService", embeddings_grpc.EmbeddingsServiceStub),
    "transcription": ("schulki.transcription.v1.TranscriptionService", transcription_grpc.TranscriptionServiceStub),
    "retrieval": ("schulki.retrieval.v1.RetrievalService", retrieval_grpc.RetrievalServiceStub),
}


class ServiceDown(Exception):
    """No node of a service is serving right now."""

    def __init__(self, service: str):
        super().__init__(f"{service} is unavailable")
        self.service = service


@dataclass
class Node:
    address: str
    channel: grpc.aio.Channel
    stub: object
    healthy: bool = False
    status: str = "unbekannt"


@dataclass
class Pool:
    """The nodes of one service."""

    name: str
    health_name: str
    nodes: list[Node] = field(default_factory=list)
    _turn: itertools.count = field(default_factory=itertools.count)

    @property
    def available(self) -> bool:
        return any(node.healthy for node in self.nodes)

    def pick(self) -> Node:
        healthy = [node for node in self.nodes if node.healthy]
        if not healthy:
            raise ServiceDown(self.name)
        return healthy[next(self._turn) % len(healthy)]


class Services:
    """The gateway's view of every service."""

    def __init__(self, config: Config):
        self.config = config
        self.pools: dict[str, Pool] = {}
        self._monitor: asyncio.Task | None = None
        self._ensured: set[str] = set()

    def addresses(self, name: str) -> list[str]:
        configured = getattr(self.config.gateway, f"{name}_addresses")
        return list(configured) if configured else [f"127.0.0.1:{getattr(self.config, name).port}"]

    async def start(self) -> None:
        """Open the channels (on the running loop) and start watching health."""
        # Reconnect within seconds once a node is back, instead of gRPC's default back-off of up to two minutes.
        options = [
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.min_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", int(self.config.gateway.health_interval_s * 1000)),
        ]
        for name, (health_name, stub_class) in SERVICE_NAMES.items():
            pool = Pool(name, health_name)
            for address in self.addresses(name):
                channel = open_channel(address, self.config.runtime, aio=True, extra_options=options)
                pool.nodes.append(Node(address, channel, stub_class(channel)))
            self.pools[name] = pool
        await self.check_health()
        self._monitor = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._monitor:
            self._monitor.cancel()
        for pool in self.pools.values():
            for node in pool.nodes:
                await node.channel.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.gateway.health_interval_s)
            try:
                await self.check_health()
            except Exception:  # the watcher must never die
                log.exception("health check failed")

    async def _check_node(self, pool: Pool, node: Node) -> None:
        try:
            response = await health_pb2_grpc.HealthStub(node.channel).Check(health_pb2.HealthCheckRequest(service=pool.health_name), timeout=2.0)
            serving = response.status == health_pb2.HealthCheckResponse.SERVING
            node.status = "bereit" if serving else "startet oder hält an"
        except grpc.RpcError as error:
            serving = False
            node.status = "nicht erreichbar" if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) else error.code().name
        if serving != node.healthy:
            log.info("%s at %s is %s", pool.name, node.address, "serving" if serving else "down")
        node.healthy = serving

    async def check_health(self) -> None:
        await asyncio.gather(*(self._check_node(pool, node) for pool in self.pools.values() for node in pool.nodes))

    def available(self, name: str) -> bool:
        return name in self.pools and self.pools[name].available

    def metadata(self, request_id: str | None = None):
        return call_metadata(self.config.runtime, request_id)

    def _node(self, name: str) -> Node:
        if name not in self.pools:
            raise ServiceDown(name)
        return self.pools[name].pick()

    def _failed(self, name: str, node: Node, error: grpc.RpcError) -> None:
        if error.code() == grpc.StatusCode.UNAVAILABLE:
            node.healthy = False  # left out until its health check passes again
            node.status = "nicht erreichbar"
            raise ServiceDown(name) from error

    async def _unary(self, name: str, method: str, request, timeout: float = 60.0):
        node = self._node(name)
        try:
            return await getattr(node.stub, method)(request, timeout=timeout, metadata=self.metadata())
        except grpc.RpcError as error:
            self._failed(name, node, error)
            raise

    async def _stream(self, name: str, call_factory) -> AsyncIterator:
        node = self._node(name)
        try:
            async for response in call_factory(node.stub):
                yield response
        except grpc.RpcError as error:
            self._failed(name, node, error)
            raise

    # -- inference -----------------------------------------------------------

    def chat(self, messages: list[dict], user: str, max_tokens: int | None = None, temperature: float | None = None,
             stop: Iterable[str] = (), seed: int | None = None) -> AsyncIterator[inference_pb.ChatResponse]:
        """Stream an answer; messages are dicts with role (system, user, assistant) and content."""
        roles = {"system": inference_pb.ROLE_SYSTEM, "user": inference_pb.ROLE_USER, "assistant": inference_pb.ROLE_ASSISTANT}
        request = inference_pb.ChatRequest(
            messages=[inference_pb.Message(role=roles.get(m["role"], inference_pb.ROLE_UNSPECIFIED), content=m["content"]) for m in messages],
            user=user, stop_sequences=list(stop),
        )
        if max_tokens is not None:
            request.max_tokens = max_tokens
        if temperature is not None:
            request.temperature = temperature
        if seed is not None:
            request.sampling.seed = seed
        return self._stream("inference", lambda stub: stub.Chat(request, metadata=self.metadata()))

    async def model_infos(self) -> list[tuple[str, object | None]]:
        """(address, GetModelInfoResponse or None) for every inference node."""
        results = []
        for node in self.pools["inference"].nodes:
            info = None
            if node.healthy:
                try:
                    info = await node.stub.GetModelInfo(inference_pb.GetModelInfoRequest(), timeout=5, metadata=self.metadata())
                except grpc.RpcError:
                    info = None
            results.append((node.address, info))
        return results

    async def chat_model_name(self) -> str:
        info = await self._unary("inference", "GetModelInfo", inference_pb.GetModelInfoRequest(), timeout=5)
        return info.model_name

    # -- embeddings ----------------------------------------------------------

    async def embed(self, texts: list[str], user: str) -> embeddings_pb.EmbedResponse:
        return await self._unary("embeddings", "Embed", embeddings_pb.EmbedRequest(texts=texts, user=user))

    async def embeddings_model_name(self) -> str:
        info = await self._unary("embeddings", "GetModelInfo", embeddings_pb.GetModelInfoRequest(), timeout=5)
        return info.model_name

    # -- transcription -------------------------------------------------------

    def transcribe(self, chunks: AsyncIterator[bytes] | Iterable[bytes], file_name: str, user: str, language: str = "",
                   translate: bool = False) -> AsyncIterator[transcription_pb.TranscribeResponse]:
        options = transcription_pb.TranscribeOptions(
            file_name=file_name, language=language, user=user,
            task=transcription_pb.TASK_TRANSLATE if translate else transcription_pb.TASK_TRANSCRIBE,
        )

        async def requests():
            yield transcription_pb.TranscribeRequest(options=options)
            if hasattr(chunks, "__aiter__"):
                async for chunk in chunks:
                    yield transcription_pb.TranscribeRequest(audio_chunk=chunk)
            else:
                for chunk in chunks:
                    yield transcription_pb.TranscribeRequest(audio_chunk=chunk)

        return self._stream("transcription", lambda stub: stub.Transcribe(requests(), metadata=self.metadata()))

    # -- retrieval -----------------------------------------------------------

    async def ensure_workspace(self, workspace: str) -> None:
        if workspace in self._ensured:
            return
        try:
            await self._unary("retrieval", "CreateWorkspace", retrieval_pb.CreateWorkspaceRequest(workspace=workspace))
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        self._ensured.add(workspace)

    async def list_documents(self, workspace: str) -> list:
        await self.ensure_workspace(workspace)
        response = await self._unary("retrieval", "ListDocuments", retrieval_pb.ListDocumentsRequest(workspace=workspace))
        return list(response.documents)

    def ingest(self, workspace: str, path: Path, file_name: str) -> AsyncIterator[retrieval_pb.IngestDocumentResponse]:
        async def requests():
            yield retrieval_pb.IngestDocumentRequest(source=retrieval_pb.IngestSource(workspace=workspace, file_name=file_name))
            for chunk in file_chunks(path):
                yield retrieval_pb.IngestDocumentRequest(file_chunk=chunk)

        async def run():
            await self.ensure_workspace(workspace)
            async for response in self._stream("retrieval", lambda stub: stub.IngestDocument(requests(), metadata=self.metadata())):
                yield response

        return run()

    async def storage(self, workspace: str) -> tuple[int, int]:
        """(bytes used, quota in bytes; 0 for none) of a workspace."""
        await self.ensure_workspace(workspace)
        response = await self._unary("retrieval", "ListDocuments", retrieval_pb.ListDocumentsRequest(workspace=workspace))
        return response.used_bytes, response.quota_bytes

    async def list_workspaces(self) -> list[str]:
        response = await self._unary("retrieval", "ListWorkspaces", retrieval_pb.ListWorkspacesRequest())
        return list(response.workspaces)

    async def export_document(self, workspace: str, document_id: str) -> retrieval_pb.ExportDocumentResponse:
        return await self._unary("retrieval", "ExportDocument",
                                 retrieval_pb.ExportDocumentRequest(workspace=workspace, document_id=document_id), timeout=120.0)

    async def delete_document(self, workspace: str, document_id: str) -> int:
        response = await self._unary("retrieval", "DeleteDocument", retrieval_pb.DeleteDocumentRequest(workspace=workspace, document_id=document_id))
        return response.deleted_chunks

    async def search(self, workspace: str, query: str, top_k: int = 4) -> list:
        await self.ensure_workspace(workspace)
        response = await self._unary("retrieval", "Search", retrieval_pb.SearchRequest(workspace=workspace, query=query, top_k=top_k))
        return list(response.hits)

    async def delete_workspace(self, workspace: str) -> None:
        try:
            await self._unary("retrieval", "DeleteWorkspace", retrieval_pb.DeleteWorkspaceRequest(workspace=workspace))
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        self._ensured.discard(workspace)


def file_chunks(path: Path, size: int = CHUNK_BYTES) -> Iterable[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(size):
            yield chunk
