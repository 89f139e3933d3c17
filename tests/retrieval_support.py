"""What the retrieval tests share: the real embeddings service, a retrieval config, and an ingest call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from schulki import embeddings
from schulki.config import Config
from schulki.retrieval.v1 import retrieval_service_pb2 as pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc

from tests.conftest import InProcessServer
from tests.conftest import assert_serving as assert_service_serving
from tests.weaviate_support import StoreEngine

PIECE = 64 * 1024
RETRIEVAL_SERVICE = pb.DESCRIPTOR.services_by_name["RetrievalService"].full_name


@contextmanager
def embeddings_server() -> Iterator[InProcessServer]:
    """The real embeddings service (the default all-MiniLM-L6-v2 GGUF) on a real port."""
    config = Config()
    config.embeddings.threads = 2
    with InProcessServer([embeddings.build(config)]) as server:
        yield server


def retrieval_config(store_path: Path, embeddings_address: str, engine: StoreEngine | None = None, **settings) -> Config:
    """Retrieval settings for a test: the embedded store in store_path, or the engine given (tests.weaviate_support)."""
    config = Config()
    config.retrieval.store_path = store_path  # Weaviate too keeps uploads there while they are parsed
    config.retrieval.embeddings_address = embeddings_address
    if engine is not None:
        engine.configure(config.retrieval)
    for name, value in settings.items():
        setattr(config.retrieval, name, value)
    return config


def requests(workspace: str, file_name: str = "", data: bytes = b"", url: str = "", piece: int = PIECE):
    yield pb.IngestDocumentRequest(source=pb.IngestSource(workspace=workspace, file_name=file_name, url=url))
    for start in range(0, len(data), piece):
        yield pb.IngestDocumentRequest(file_chunk=data[start : start + piece])


def ingest(
    stub: pb_grpc.RetrievalServiceStub, workspace: str, file_name: str = "", data: bytes = b"", url: str = "", timeout: float = 300
) -> tuple[list[pb.IngestProgress], pb.Document]:
    """Ingest one document; return the progress reports and the stored document."""
    progress, document = [], None
    for response in stub.IngestDocument(requests(workspace, file_name, data, url), timeout=timeout):
        if response.HasField("document"):
            assert document is None, "two documents for one ingest"
            document = response.document
        else:
            assert document is None, "progress after the document"
            progress.append(response.progress)
    assert document is not None, "the stream ended without a document"
    return progress, document


def search(stub, workspace: str, query: str, top_k: int = 5, **fields) -> list[pb.Hit]:
    return list(stub.Search(pb.SearchRequest(workspace=workspace, query=query, top_k=top_k, **fields), timeout=60).hits)


def assert_serving(channel: grpc.Channel) -> None:
    assert_service_serving(channel, RETRIEVAL_SERVICE)
