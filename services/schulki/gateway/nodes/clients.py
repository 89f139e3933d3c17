"""gRPC clients to the services, with health-based availability and routing by model.

Every service may run on several nodes. A background task checks every node's
health every few seconds, and asks every inference node which model it serves
and how long its line is. A chat goes only to nodes that serve the model it
asks for; among them to the one with the shortest line (requests this gateway
has running there, or the queue and running sequences the node reported,
whichever is larger, per decoding slot), and on a tie to the one picked least
recently. A node that fails a call with UNAVAILABLE is left out at once and
comes back by itself when its health check passes again, so the tab that needs
a service says plainly that it is down, the other tabs keep working, and
nothing needs a restart when the service returns. Nodes join and leave as the
settings name them, without a restart (node_list.py). Every quant of one catalog
model is served under one name, so a class spreads over all of its nodes. A chat that fails on a node
before its first piece of text is tried on the next node that serves the model;
one that breaks off after text has arrived ends with an error, since the words
already shown cannot be taken back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from schulki.config import Config
from schulki.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from schulki.gateway.nodes.node_list import NodeList
from schulki.inference.v1 import inference_service_pb2 as inference_pb
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from schulki.runtime import logs, registry
from schulki.runtime.client import call_metadata, open_channel
from schulki.transcription.v1 import transcription_service_pb2 as transcription_pb

Response = TypeVar("Response")

log = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024
"""Upload chunk size; below the services' 1 MiB per message."""

TRY_NEXT_NODE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED)
"""A chat that fails with these before its first piece of text is tried on another node of its model."""


class ServiceDown(Exception):
    """No node of a service (or of the model asked for) is serving right now."""

    def __init__(self, service: str, model: str | None = None):
        super().__init__(f"{service} is unavailable" + (f" for model {model}" if model else ""))
        self.service = service
        self.model = model


class AnswerBrokeOff(ServiceDown):
    """The node writing an answer stopped after part of it was sent; the rest cannot come from another node."""


@dataclass(eq=False)
class Node:
    address: str
    channel: grpc.aio.Channel
    stub: Any
    """The service's generated stub (grpc's generated stubs carry no types)."""
    healthy: bool = False
    status: str = "unbekannt"
    model: str = ""
    """The model the node serves (inference only): from its GetModelInfo, or from the settings until it answers."""
    info: inference_pb.GetModelInfoResponse | None = None
    """Its last GetModelInfoResponse (inference only)."""
    in_flight: int = 0
    """Requests this gateway has running on the node right now."""
    served: int = 0
    """Requests the node answered to the end since the gateway started."""
    failed: int = 0
    """Requests that broke off on the node, or that it refused before starting (they went to another node where one was free)."""
    last_pick: int = 0

    @property
    def line(self) -> float:
        """How long the node's line is, per decoding slot."""
        reported = (self.info.queue_length + self.info.running_sequences) if self.info is not None else 0
        slots = self.info.parallel_sequences if self.info is not None and self.info.parallel_sequences > 0 else 1
        return max(self.in_flight, reported) / slots


@dataclass(frozen=True)
class NodeView:
    """A node's health and load as they are now, to read (the Admin tab, /healthz, the roll-out's drain): no channel, no stub."""

    address: str
    healthy: bool
    status: str
    model: str
    info: inference_pb.GetModelInfoResponse | None
    in_flight: int
    served: int
    failed: int

    @classmethod
    def of(cls, node: Node) -> NodeView:
        return cls(node.address, node.healthy, node.status, node.model, node.info, node.in_flight, node.served, node.failed)


@dataclass
class Pool:
    """The nodes of one service."""

    name: str
    health_name: str
    nodes: list[Node] = field(default_factory=list)
    _turn: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def available(self) -> bool:
        return any(node.healthy for node in self.nodes)

    def serving(self, model: str | None = None) -> list[Node]:
        return [node for node in self.nodes if node.healthy and (model is None or node.model == model)]

    def pick(self, model: str | None = None, exclude: Iterable[Node] = ()) -> Node:
        """The serving node (of the model, when one is named) with the shortest line; ServiceDown when there is none."""
        skip = set(map(id, exclude))
        candidates = [node for node in self.serving(model) if id(node) not in skip]
        if not candidates:
            raise ServiceDown(self.name, model)
        node = min(candidates, key=lambda n: (n.line, n.in_flight, n.last_pick))
        node.last_pick = next(self._turn)
        return node


class Services:
    """The gateway's view of every service."""

    def __init__(self, config: Config):
        self.config = config
        self.pools: dict[str, Pool] = {}
        self._monitor: asyncio.Task | None = None
        self._ensured: set[str] = set()
        self._channel_options: list = []
        self.node_list = NodeList(config)
        """The nodes the settings name, read again with every health check."""
        self._leaving: list[Node] = []
        self.default_model: Callable[[], str | None] = lambda: None
        """The model a chat that names none goes to (the gateway points it at the schulki-chat alias)."""

    def addresses(self, name: str) -> list[str]:
        return self.node_list.addresses(name)

    def _add_node(self, pool: Pool, address: str, model: str = "") -> Node:
        stub_class = registry.spec(pool.name).stub_class()
        channel = open_channel(address, self.node_list.config.runtime, aio=True, extra_options=self._channel_options)
        node = Node(address, channel, stub_class(channel), model=model)
        pool.nodes.append(node)
        return node

    async def _follow_node_list(self) -> None:
        """Add the nodes the settings or the nodes file name now, and leave out those they no longer name."""
        wanted = self.node_list.wanted(list(self.pools))
        for name, pool in self.pools.items():
            for node in [node for node in pool.nodes if node.address not in wanted[name]]:
                pool.nodes.remove(node)  # no new work from now on; its running answers finish on the open channel
                self._leaving.append(node)
                log.info("%s node %s left (no longer in the settings)", name, node.address)
            known = {node.address for node in pool.nodes}
            for address, model in wanted[name].items():
                if address not in known:
                    node = self._add_node(pool, address, model)
                    log.info("%s node %s (%s) joined", name, address, model or "model not yet known")
        for node in [node for node in self._leaving if node.in_flight == 0]:
            self._leaving.remove(node)
            await node.channel.close()

    async def start(self) -> None:
        """Open the channels (on the running loop) and start watching health."""
        # Reconnect within seconds once a node is back, instead of gRPC's default back-off of up to two minutes.
        options = [
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.min_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", int(self.config.gateway.health_interval_s * 1000)),
        ]
        self._channel_options = options
        for service in registry.SERVICES:
            self.pools[service.name] = Pool(service.name, service.proto_service)
        await self.check_health()
        self._monitor = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._monitor:
            self._monitor.cancel()
        for node in [node for pool in self.pools.values() for node in pool.nodes] + self._leaving:
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
            response = await health_pb2_grpc.HealthStub(node.channel).Check(
                health_pb2.HealthCheckRequest(service=pool.health_name), timeout=2.0
            )
            serving = response.status == health_pb2.HealthCheckResponse.SERVING
            node.status = "bereit" if serving else "startet oder hält an"
        except grpc.RpcError as error:
            serving = False
            node.status = (
                "nicht erreichbar"
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                else error.code().name
            )
        if serving and pool.name == "inference":
            serving = await self._refresh_model(node)
        if serving != node.healthy:
            log.info("%s at %s is %s", pool.name, node.address, "serving" if serving else "down")
        node.healthy = serving

    async def _refresh_model(self, node: Node) -> bool:
        """Ask an inference node which model it serves and how long its line is; False when it does not answer."""
        try:
            info = await node.stub.GetModelInfo(inference_pb.GetModelInfoRequest(), timeout=2.0, metadata=self.metadata())
        except grpc.RpcError as error:
            node.status = (
                "nicht erreichbar"
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                else error.code().name
            )
            return False
        served = info.served_model or info.model_name
        if node.model and node.model != served:
            log.warning(
                "inference node %s serves %s, not %s as the settings say; routing by what it serves", node.address, served, node.model
            )
        node.model, node.info = served, info
        return True

    async def check_health(self) -> None:
        await self._follow_node_list()
        await asyncio.gather(*(self._check_node(pool, node) for pool in self.pools.values() for node in pool.nodes))

    def chat_models(self) -> list[str]:
        """Every chat model a node serves or was set to serve, each once, in name order (down nodes' models stay listed)."""
        return sorted({node.model for node in self.pools["inference"].nodes if node.model}) if "inference" in self.pools else []

    def serving_models(self) -> list[str]:
        """The chat models at least one healthy node serves right now."""
        return sorted({node.model for node in self.pools["inference"].serving() if node.model}) if "inference" in self.pools else []

    def available(self, name: str) -> bool:
        return name in self.pools and self.pools[name].available

    def metadata(self, request_id: str | None = None) -> list[tuple[str, str]]:
        """Metadata of a call: the id of the request it serves (the API route or UI event set it), so one id
        follows a request through every service's log."""
        return call_metadata(self.config.runtime, request_id or logs.current_request_id())

    def _node(self, name: str) -> Node:
        if name not in self.pools:
            raise ServiceDown(name)
        return self.pools[name].pick()

    def _failed(self, name: str, node: Node, error: grpc.RpcError) -> None:
        if error.code() == grpc.StatusCode.UNAVAILABLE:
            node.healthy = False  # left out until its health check passes again
            node.status = "nicht erreichbar"
            raise ServiceDown(name) from error

    # The generated stubs (the *_pb2_grpc modules) carry no types: a unary call's response is the proto message its
    # method returns, named by the caller's request.
    async def _unary(self, name: str, method: str, request: object, timeout: float = 60.0) -> Any:
        node = self._node(name)
        node.in_flight += 1
        try:
            return await getattr(node.stub, method)(request, timeout=timeout, metadata=self.metadata())
        except grpc.RpcError as error:
            self._failed(name, node, error)
            raise
        finally:
            node.in_flight -= 1

    async def _stream(self, name: str, call_factory: Callable[[Any], AsyncIterable[Response]]) -> AsyncIterator[Response]:
        node = self._node(name)
        node.in_flight += 1
        try:
            async for response in call_factory(node.stub):
                yield response
        except grpc.RpcError as error:
            self._failed(name, node, error)
            raise
        finally:
            node.in_flight -= 1

    async def _chat_stream(
        self, request: inference_pb.ChatRequest | inference_pb.CompleteRequest, model: str | None, method: str = "Chat"
    ) -> AsyncIterator[inference_pb.ChatResponse]:
        """Stream one chat (or, with ``method`` "Complete", one completion) from the node of its model with the shortest
        line; move on to the next node while nothing was sent."""
        if "inference" not in self.pools:
            raise ServiceDown("inference", model)
        pool = self.pools["inference"]
        model = model or self.default_model()
        tried: list[Node] = []
        last_error: BaseException | None = None
        while True:
            try:
                node = pool.pick(model, exclude=tried)
            except ServiceDown:
                if last_error is not None:
                    raise last_error from None  # every node of the model refused: say why the last one did
                raise
            tried.append(node)
            started = False
            node.in_flight += 1
            try:
                async for response in getattr(node.stub, method)(request, metadata=self.metadata()):
                    started = True
                    yield response
                node.served += 1
                return
            except grpc.RpcError as error:
                if error.code() in TRY_NEXT_NODE:  # the node's doing, not a bad request
                    node.failed += 1
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    node.healthy = False  # left out until its health check passes again
                    node.status = "nicht erreichbar"
                if not started and error.code() in TRY_NEXT_NODE:
                    log.info(
                        "chat refused by %s (%s) before it started; trying the next node of %s", node.address, error.code().name, model
                    )
                    last_error = error if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else ServiceDown("inference", model)
                    continue
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    raise (AnswerBrokeOff if started else ServiceDown)("inference", model) from error
                raise
            finally:
                node.in_flight -= 1

    # -- inference -----------------------------------------------------------

    def chat(
        self,
        messages: list[dict],
        user: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: Iterable[str] = (),
        seed: int | None = None,
        model: str | None = None,
        options: inference_pb.ChatRequest | None = None,
        logprobs: int | None = None,
    ) -> AsyncIterator[inference_pb.ChatResponse]:
        """Stream an answer from ``model`` (None: the default model); messages are dicts with role (system, user, assistant) and content.
        ``options``: further fields of the ChatRequest (sampling, output format), merged in. ``logprobs``: None for none, else
        each token's log-probability with that many alternatives (token events)."""
        request = inference_pb.ChatRequest(messages=_proto_messages(messages), user=user, stop_sequences=list(stop))
        if options is not None:
            request.MergeFrom(options)
        if logprobs is not None:
            request.logprobs = True
            request.top_logprobs = logprobs
        if max_tokens is not None:
            request.max_tokens = max_tokens
        if temperature is not None:
            request.temperature = temperature
        if seed is not None:
            request.sampling.seed = seed
        return self._chat_stream(request, model)

    def complete(self, request: inference_pb.CompleteRequest, model: str | None = None) -> AsyncIterator[inference_pb.CompleteResponse]:
        """Stream the continuation of a raw prompt (or a filled gap) from ``model``, as ``chat`` streams an answer."""
        # Complete streams CompleteResponse, which has ChatResponse's fields: the node choice and retries are the same.
        return cast("AsyncIterator[inference_pb.CompleteResponse]", self._chat_stream(request, model, method="Complete"))

    async def count_tokens(self, messages: list[dict], model: str) -> inference_pb.CountTokensResponse:
        """Tokens of a conversation under ``model``'s chat template, and the context it has, from a node that serves it."""
        if "inference" not in self.pools:
            raise ServiceDown("inference", model)
        node = self.pools["inference"].pick(model)
        try:
            request = inference_pb.CountTokensRequest(messages=_proto_messages(messages))
            return await node.stub.CountTokens(request, timeout=30.0, metadata=self.metadata())
        except grpc.RpcError as error:
            self._failed("inference", node, error)
            raise

    async def _inference_unary(self, model: str, method: str, request: object) -> Any:
        """One unary inference call on the node of ``model`` with the shortest line."""
        if "inference" not in self.pools:
            raise ServiceDown("inference", model)
        node = self.pools["inference"].pick(model)
        node.in_flight += 1
        try:
            return await getattr(node.stub, method)(request, timeout=120.0, metadata=self.metadata())
        except grpc.RpcError as error:
            self._failed("inference", node, error)
            raise
        finally:
            node.in_flight -= 1

    async def score_text(self, text: str, user: str, model: str, top_logprobs: int = 0) -> inference_pb.ScoreTextResponse:
        """The log-probability of each token of a plain text under ``model`` (no chat template)."""
        request = inference_pb.ScoreTextRequest(text=text, user=user, top_logprobs=top_logprobs)
        response: inference_pb.ScoreTextResponse = await self._inference_unary(model, "ScoreText", request)
        return response

    async def next_tokens(self, text: str, user: str, model: str, count: int, temperature: float) -> inference_pb.NextTokensResponse:
        """The ``count`` most likely next tokens after a plain text under ``model``, at ``temperature``."""
        request = inference_pb.NextTokensRequest(text=text, user=user, count=count, temperature=temperature)
        response: inference_pb.NextTokensResponse = await self._inference_unary(model, "NextTokens", request)
        return response

    async def attention(self, text: str, user: str, model: str) -> inference_pb.AttentionResponse:
        """The attention weights of a short plain text under ``model``, per layer and head."""
        request = inference_pb.AttentionRequest(text=text, user=user)
        response: inference_pb.AttentionResponse = await self._inference_unary(model, "Attention", request)
        return response

    async def model_infos(self) -> list[tuple[str, object | None]]:
        """(address, GetModelInfoResponse or None) for every inference node, as of the last health check."""
        return [(node.address, node.info if node.healthy else None) for node in self.pools["inference"].nodes]

    def inference_nodes(self) -> list[Node]:
        return list(self.pools["inference"].nodes) if "inference" in self.pools else []

    # -- embeddings ----------------------------------------------------------

    def context_length(self, model: str) -> int:
        """Tokens per sequence of the smallest context among the healthy nodes of ``model``; ServiceDown without one."""
        lengths = [int(n.info.context_length) for n in self.inference_nodes() if n.healthy and n.model == model and n.info is not None]
        if not lengths:
            raise ServiceDown("inference", model)
        return min(lengths)

    async def embed(self, texts: list[str], user: str) -> embeddings_pb.EmbedResponse:
        return await self._unary("embeddings", "Embed", embeddings_pb.EmbedRequest(texts=texts, user=user))

    async def embeddings_model_name(self) -> str:
        info = await self._unary("embeddings", "GetModelInfo", embeddings_pb.GetModelInfoRequest(), timeout=5)
        return info.model_name

    # -- transcription -------------------------------------------------------

    def transcribe(
        self, chunks: AsyncIterator[bytes] | Iterable[bytes], file_name: str, user: str, language: str = "", translate: bool = False
    ) -> AsyncIterator[transcription_pb.TranscribeResponse]:
        options = transcription_pb.TranscribeOptions(
            file_name=file_name,
            language=language,
            user=user,
            task=transcription_pb.TASK_TRANSLATE if translate else transcription_pb.TASK_TRANSCRIBE,
        )

        async def requests() -> AsyncIterator[transcription_pb.TranscribeRequest]:
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

    def ingest(self, workspace: str, path: Path, file_name: str, user: str = "") -> AsyncIterator[retrieval_pb.IngestDocumentResponse]:
        """Store a file in a workspace: progress, then the document; ``user`` (a pseudonym) gets its fair share of the slots."""

        async def requests() -> AsyncIterator[retrieval_pb.IngestDocumentRequest]:
            yield retrieval_pb.IngestDocumentRequest(source=retrieval_pb.IngestSource(workspace=workspace, file_name=file_name, user=user))
            for chunk in file_chunks(path):
                yield retrieval_pb.IngestDocumentRequest(file_chunk=chunk)

        async def run() -> AsyncIterator[retrieval_pb.IngestDocumentResponse]:
            await self.ensure_workspace(workspace)
            async for response in self._stream("retrieval", lambda stub: stub.IngestDocument(requests(), metadata=self.metadata())):
                yield response

        return run()

    def ingest_url(self, workspace: str, url: str, user: str = "") -> AsyncIterator[retrieval_pb.IngestDocumentResponse]:
        """Store the web page (or document) at url in a workspace: progress, then the document.

        The retrieval service fetches it, and refuses addresses in the school's network or on the
        machine itself unless an admin allowed the host (``retrieval.allowed_url_hosts``)."""

        async def requests() -> AsyncIterator[retrieval_pb.IngestDocumentRequest]:
            yield retrieval_pb.IngestDocumentRequest(source=retrieval_pb.IngestSource(workspace=workspace, url=url, user=user))

        async def run() -> AsyncIterator[retrieval_pb.IngestDocumentResponse]:
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
        return await self._unary(
            "retrieval", "ExportDocument", retrieval_pb.ExportDocumentRequest(workspace=workspace, document_id=document_id), timeout=120.0
        )

    async def delete_document(self, workspace: str, document_id: str) -> int:
        response = await self._unary(
            "retrieval", "DeleteDocument", retrieval_pb.DeleteDocumentRequest(workspace=workspace, document_id=document_id)
        )
        return response.deleted_chunks

    async def search(self, workspace: str, query: str, top_k: int = 4) -> list:
        await self.ensure_workspace(workspace)
        response = await self._unary("retrieval", "Search", retrieval_pb.SearchRequest(workspace=workspace, query=query, top_k=top_k))
        return list(response.hits)

    async def fetch_page(self, url: str, user: str, max_chars: int) -> retrieval_pb.FetchPageResponse:
        """A web page's text, fetched with the retrieval service's address checks (as ``ingest_url``) and stored nowhere."""
        return await self._unary("retrieval", "FetchPage", retrieval_pb.FetchPageRequest(url=url, user=user, max_chars=max_chars))

    async def delete_workspace(self, workspace: str) -> None:
        try:
            await self._unary("retrieval", "DeleteWorkspace", retrieval_pb.DeleteWorkspaceRequest(workspace=workspace))
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        self._ensured.discard(workspace)


def _proto_messages(messages: list[dict]) -> list[inference_pb.Message]:
    """Messages as dicts (role system, user, assistant or tool; content; an assistant's ``tool_calls`` as JSON text of
    [{id, name, arguments}], a tool message's ``tool_call_id`` and ``name``) in the inference service's form."""
    roles = {
        "system": inference_pb.ROLE_SYSTEM,
        "user": inference_pb.ROLE_USER,
        "assistant": inference_pb.ROLE_ASSISTANT,
        "tool": inference_pb.ROLE_TOOL,
    }
    return [
        inference_pb.Message(
            role=roles.get(m["role"], inference_pb.ROLE_UNSPECIFIED),
            content=m["content"],
            tool_calls=[inference_pb.ToolCall(**call) for call in json.loads(m.get("tool_calls") or "[]")],
            tool_call_id=m.get("tool_call_id", ""),
            name=m.get("name", ""),
        )
        for m in messages
    ]


def file_chunks(path: Path, size: int = CHUNK_BYTES) -> Iterable[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(size):
            yield chunk
