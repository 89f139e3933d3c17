"""Atomic ingest for real: ``schulki serve retrieval`` is killed with SIGKILL while it ingests, on each store engine.

After a restart on the same store the document is either complete (all its
chunks, listed, found) or absent (not listed, not found, no chunk left), and
every document stored before is intact. Two kills: one while the chunks are
being embedded, one the moment storing begins (the chunks may be half
written, written without their manifest record, or complete).
"""

from __future__ import annotations

import signal

import grpc
import pytest
from schulki.config import Config
from schulki.retrieval.service import open_store
from schulki.retrieval.v1 import retrieval_service_pb2 as pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc

from tests.conftest import ServiceProcess
from tests.retrieval_support import embeddings_server, ingest, requests, search

SENTENCES = 160


def big_text(tag: str) -> bytes:
    """A long text of distinct sentences; the last one names the tag, so a search shows whether it is there."""
    lines = [f"Ereignis {i} im Jahr {1500 + i}." for i in range(SENTENCES)]
    lines.append(f"Das Schlusswort der Chronik lautet Zauberwort{tag}.")
    return "\n".join(lines).encode()


@pytest.fixture(scope="module")
def embeddings_address():
    with embeddings_server() as server:
        yield server.address


def start(store_path, embeddings_address, engine_environment: dict[str, str]) -> ServiceProcess:
    env = {
        **engine_environment,
        "SCHULKI_RETRIEVAL__STORE_PATH": str(store_path),
        "SCHULKI_RETRIEVAL__EMBEDDINGS_ADDRESS": embeddings_address,
        # Short chunks: many of them, so the kill finds ingest in the middle of its work.
        "SCHULKI_RETRIEVAL__CHUNK_CHARS": "60",
        "SCHULKI_RETRIEVAL__CHUNK_OVERLAP_CHARS": "0",
        "SCHULKI_RETRIEVAL__EMBED_BATCH_TEXTS": "16",
    }
    return ServiceProcess("retrieval", env=env).start(timeout=120)


def kill_during(process: ServiceProcess, tag: str, stage: str) -> int:
    """Ingest a big document and SIGKILL the service as soon as it reports the stage; return its chunk count."""
    chunks = 0
    with grpc.insecure_channel(process.address) as channel:
        stub = pb_grpc.RetrievalServiceStub(channel)
        stream = stub.IngestDocument(requests("chronik", f"chronik-{tag}.txt", big_text(tag)), timeout=300)
        try:
            for response in stream:
                assert not response.HasField("document"), "ingest finished before the kill"
                progress = response.progress
                if progress.stage == "embedding":
                    chunks = progress.total
                if progress.stage == stage and (stage != "embedding" or progress.done > 0):
                    process.process.send_signal(signal.SIGKILL)
                    break
        finally:
            stream.cancel()
    process.process.wait(30)
    assert process.process.returncode == -signal.SIGKILL
    assert chunks > 50
    return chunks


def test_a_document_is_complete_or_absent_after_sigkill_mid_ingest(tmp_path, embeddings_address, store_engine):
    store_path = tmp_path / "store"
    settings = store_engine.settings()  # the same store (Weaviate: the same collections) for every restart
    engine_environment = store_engine.environment(settings)
    process = start(store_path, embeddings_address, engine_environment)
    with grpc.insecure_channel(process.address) as channel:
        stub = pb_grpc.RetrievalServiceStub(channel)
        stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="chronik"))
        _, first = ingest(stub, "chronik", "erste.txt", "Die erste Notiz handelt von Leuchttürmen an der Ostsee.".encode())
        _, second = ingest(stub, "chronik", "zweite.txt", b"Die zweite Notiz handelt von Gletschern in den Alpen.")
    earlier = {first.document_id: "Leuchttürmen", second.document_id: "Gletschern"}

    for tag, stage in (("A", "embedding"), ("B", "storing")):
        chunks = kill_during(process, tag, stage)
        process.stop(terminate=False)
        process = start(store_path, embeddings_address, engine_environment)
        with grpc.insecure_channel(process.address) as channel:
            stub = pb_grpc.RetrievalServiceStub(channel)
            documents = {d.document_id: d for d in stub.ListDocuments(pb.ListDocumentsRequest(workspace="chronik")).documents}
            for document_id, word in earlier.items():
                assert document_id in documents
                assert search(stub, "chronik", word, top_k=1, vector_weight=0.0)[0].document_id == document_id
            new = [d for d in documents.values() if d.document_id not in earlier]
            found = search(stub, "chronik", f"Zauberwort{tag}", top_k=1, vector_weight=0.0)
            found = [h for h in found if f"Zauberwort{tag}" in h.text]
            if stage == "embedding":
                assert not new, "a document killed before storing must be absent"
            if new:  # complete: listed with every chunk, and its last sentence is found
                assert len(new) == 1 and new[0].chunk_count == chunks
                assert found and found[0].document_id == new[0].document_id
                earlier[new[0].document_id] = f"Zauberwort{tag}"
            else:  # absent: not listed and nothing of it is found
                assert not found
        code, log = process.stop()
        assert code == 0, log
        # With the service stopped, the store holds exactly the chunks of the listed documents.
        config = Config()
        config.retrieval.store_path = store_path
        store_engine.configure(config.retrieval, settings)
        store = open_store(config)
        listed = store.list_documents("chronik")
        assert store.chunk_count("chronik") == sum(d.chunk_count for d in listed)
        assert {d.document_id for d in listed} == set(earlier)
        assert not list((store_path / "incoming").iterdir())
        store.close()
        process = start(store_path, embeddings_address, engine_environment)
    process.stop()
