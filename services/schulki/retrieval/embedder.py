"""The retrieval service's client of the embeddings service.

Chunks and queries become vectors in the embeddings service, over gRPC with
the service token. When that service cannot be reached, the caller gets
UNAVAILABLE with a message that says so; the retrieval service itself keeps
serving (listing, deleting, and searching by BM25 alone still work).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from schulki.config import RuntimeConfig
from schulki.embeddings.v1 import embeddings_service_pb2 as pb
from schulki.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc
from schulki.runtime import logs
from schulki.runtime.client import call_metadata, open_channel
from schulki.runtime.errors import Busy, InvalidInput, NotReady

log = logging.getLogger("schulki.retrieval")

UNREACHABLE = (
    "Der Embeddings-Dienst ist gerade nicht erreichbar; versuche es gleich noch einmal. "
    "(the embeddings service at {address} is unavailable: {reason})"
)


class EmbeddingsClient:
    """Embeds texts through the embeddings service; open() must run on the service's event loop."""

    def __init__(self, address: str, runtime: RuntimeConfig, timeout_s: float):
        self.address = address
        self.runtime = runtime
        self.timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.EmbeddingsServiceStub | None = None

    def open(self) -> pb_grpc.EmbeddingsServiceStub:
        self._channel = open_channel(self.address, self.runtime, aio=True)  # TLS when the runtime has a CA file
        self._stub = pb_grpc.EmbeddingsServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def embed(self, texts: Sequence[str], user: str = "", *, query: bool = False) -> list[list[float]]:
        """One normalised vector per text, in order; NotReady when the service is down.

        Texts are passages to be found, or with ``query`` search queries: the embeddings
        service puts the model's own prefix in front of each (multilingual-e5 needs them).
        """
        stub = self._stub if self._stub is not None else self.open()
        metadata = call_metadata(self.runtime, logs.request_id.get())
        try:
            response = await stub.Embed(
                pb.EmbedRequest(texts=list(texts), user=user, purpose=pb.TEXT_PURPOSE_QUERY if query else pb.TEXT_PURPOSE_DOCUMENT),
                timeout=self.timeout_s,
                metadata=metadata,
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            log.warning("embeddings service at %s answered %s: %s", self.address, code.name, error.details())
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise Busy("Der Embeddings-Dienst ist ausgelastet; versuche es gleich noch einmal. (embeddings service busy)") from None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidInput(f"Der Text konnte nicht eingebettet werden: {error.details()}") from None
            raise NotReady(UNREACHABLE.format(address=self.address, reason=code.name)) from None
        if len(response.embeddings) != len(texts):
            raise NotReady(UNREACHABLE.format(address=self.address, reason="wrong number of vectors"))
        return [list(e.values) for e in response.embeddings]
