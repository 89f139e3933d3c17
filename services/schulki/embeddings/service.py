"""The EmbeddingsService: many texts to normalised vectors over gRPC."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import grpc

from schulki.config import EmbeddingsConfig
from schulki.embeddings.engine import EmbeddingEngine, EmbeddingInfo
from schulki.embeddings.v1 import embeddings_service_pb2 as pb
from schulki.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc
from schulki.runtime.errors import InvalidInput, NotReady

log = logging.getLogger("schulki.embeddings")


def check_texts(texts: Sequence[str], max_texts: int) -> list[str]:
    """The texts of a request, or InvalidInput when there are none, too many, or an empty one."""
    if not texts:
        raise InvalidInput("Es wurde kein Text geschickt. (texts is empty)")
    if len(texts) > max_texts:
        raise InvalidInput(f"Zu viele Texte auf einmal: {len(texts)}, höchstens {max_texts}. (too many texts)")
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidInput(f"Text {i + 1} ist leer. (text {i} is empty)")
    return list(texts)


def prefixes(config: EmbeddingsConfig, model_path: Path) -> dict[int, str]:
    """The text put in front of queries and of documents: the settings', else the catalog's for this model file."""
    from schulki.models.catalog import load_catalog

    found = load_catalog().find_file(model_path.name)
    model = found[0] if found else None
    query = config.query_prefix if config.query_prefix is not None else (model.query_prefix if model else "")
    document = config.document_prefix if config.document_prefix is not None else (model.document_prefix if model else "")
    return {pb.TEXT_PURPOSE_QUERY: query, pb.TEXT_PURPOSE_DOCUMENT: document}


class EmbeddingsService(pb_grpc.EmbeddingsServiceServicer):
    """Serves one GGUF embedding model; requests take turns on its one worker thread."""

    service_name = pb.DESCRIPTOR.services_by_name["EmbeddingsService"].full_name

    def __init__(self, config: EmbeddingsConfig, model_path: Path):
        self.config = config
        self.engine = EmbeddingEngine(model_path, config)
        self.prefixes = prefixes(config, model_path)
        self._loaded = False

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_EmbeddingsServiceServicer_to_server(self, server)

    async def start(self) -> None:
        await asyncio.to_thread(self.engine.load)
        self._loaded = True

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)

    def _require_loaded(self) -> EmbeddingInfo:
        """The loaded model's facts; NotReady while it loads."""
        info = self.engine.info
        if not self._loaded or info is None:
            raise NotReady("Das Modell wird noch geladen. (The model is still loading.)")
        return info

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        info = self._require_loaded()
        texts = check_texts(request.texts, self.config.max_texts)
        prefix = self.prefixes.get(request.purpose, "")
        if prefix:
            texts = [prefix + text for text in texts]
        results = await self.engine.embed(texts)
        truncated = sum(r.truncated for r in results)
        log.info("embedded %d texts, %d tokens, %d truncated", len(results), sum(r.token_count for r in results), truncated)
        return pb.EmbedResponse(
            embeddings=[pb.Embedding(values=r.vector.tolist(), token_count=r.token_count, truncated=r.truncated) for r in results],
            dimension=info.dimension,
            model_name=info.model_name,
            truncation_rule=info.truncation_rule,
        )

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext) -> pb.GetModelInfoResponse:
        info = self._require_loaded()
        return pb.GetModelInfoResponse(
            model_name=info.model_name,
            dimension=info.dimension,
            max_tokens=info.max_tokens,
            quant=info.quant,
            query_prefix=self.prefixes[pb.TEXT_PURPOSE_QUERY],
            document_prefix=self.prefixes[pb.TEXT_PURPOSE_DOCUMENT],
        )
