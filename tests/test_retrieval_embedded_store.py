"""What only the embedded store (LanceDB) does: its vector index, its cleanup after crashes, and purging deleted text."""

from __future__ import annotations

from schulki.config import RetrievalConfig
from schulki.retrieval.documents import Chunk
from schulki.retrieval.embedded_store import EmbeddedStore
from schulki.retrieval.store import DocumentRecord, StoredChunk

from tests.service_support import wait_until
from tests.test_retrieval_store_conformance import BIOLOGY, HISTORY, vector_of

WORDS = "Meer Insel Wald Berg Fluss Stadt Dorf Feld Wiese Turm Brücke Hafen Schiff Zug Straße Markt".split()


def many_chunks(document_id: str, count: int) -> tuple[DocumentRecord, list[StoredChunk]]:
    texts = [f"{WORDS[i % 16]} {WORDS[(i * 7) % 16]} {WORDS[(i * 5 + 3) % 16]} Nummer{i}" for i in range(count)]
    chunks = [StoredChunk(document_id, "viele.txt", Chunk(text=t, index=i), vector_of(t)) for i, t in enumerate(texts)]
    return DocumentRecord(document_id, "viele.txt", "txt", count), chunks


def test_a_large_workspace_gets_a_vector_index_and_still_finds_the_right_chunk(tmp_path):
    store = EmbeddedStore(tmp_path, RetrievalConfig(vector_index_min_rows=500))
    store.create_workspace("gross")
    store.add_document("gross", *many_chunks("viele", 600))
    assert "vector_idx" in {index.name for index in store._table("gross").list_indices()}
    store.add_document("gross", *BIOLOGY)  # after the index: searched unindexed until the next optimize
    query = "Mitochondrien Kraftwerke der Zelle"
    assert store.search("gross", query, vector_of(query), 3, 1.0)[0].document_id == "bio1"
    assert store.search("gross", "Nummer417", [], 3, 0.0)[0].text.endswith("Nummer417")
    indexed = many_chunks("viele", 600)[1][417].chunk.text
    assert store.search("gross", indexed, vector_of(indexed), 3, 1.0)[0].text == indexed
    store.optimize("gross")
    assert store.search("gross", query, vector_of(query), 3, 0.5)[0].document_id == "bio1"
    store.close()


def test_the_chunks_of_a_workspace_deleted_in_a_crash_are_dropped_at_the_next_start(tmp_path):
    store = EmbeddedStore(tmp_path, RetrievalConfig())
    store.create_workspace("alt")
    store.create_workspace("bleibt")
    store.add_document("alt", *BIOLOGY)
    store.add_document("bleibt", *HISTORY)
    (tmp_path / "manifests" / "alt.json").unlink()  # the crash came after the manifest, before the table
    store.close()
    again = EmbeddedStore(tmp_path, RetrievalConfig())
    again.recover()
    assert again._table_names() == ["bleibt"]
    assert again.list_workspaces() == ["bleibt"]
    again.create_workspace("alt")
    assert again.search("alt", "Zelle", vector_of("Zelle"), 5, 0.5) == []
    again.close()


def lance_files_contain(folder, text: str) -> bool:
    """Whether any file of the store holds ``text``; files that the store's background work removes meanwhile are skipped."""
    needle = text.encode()

    def holds(path) -> bool:
        try:
            return needle in path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return False

    return any(holds(path) for path in folder.rglob("*"))


def test_deleted_text_leaves_the_disk(tmp_path):
    store = EmbeddedStore(tmp_path, RetrievalConfig(keep_versions_s=1))
    store.create_workspace("w")
    secret = "Geheimnis4711 steht nur in diesem Dokument."
    record = DocumentRecord("geheim", "geheim.txt", "txt", 1)
    store.add_document("w", record, [StoredChunk("geheim", "geheim.txt", Chunk(text=secret, index=0), vector_of(secret))])
    store.add_document("w", *HISTORY)
    folder = tmp_path / "lance"
    assert lance_files_contain(folder, "Geheimnis4711")
    store.delete_document("w", "geheim")
    wait_until(lambda: not lance_files_contain(folder, "Geheimnis4711"), timeout=60, what="the secret gone from the files", interval=0.2)
    assert store.search("w", "Krieg", vector_of("Krieg"), 5, 0.5)[0].document_id == "ges1"
    store.close()
