"""What only the embedded store (LanceDB) does: its vector index, its cleanup after crashes, and purging deleted text."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
from schulki.config import RetrievalConfig
from schulki.retrieval import table_upkeep
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
    store.add_document("gross", *BIOLOGY)  # after the index: folded into it before add_document returns
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


def test_a_search_is_answered_while_the_upkeep_of_its_workspace_runs_and_ingests_wait_for_it(tmp_path, monkeypatch):
    """The optimize after each document of an indexed workspace runs in a process of its own: in the store's process it
    held Lance's CPU pool (one thread on 2 cores) and every search waited for it. Here the upkeep process is held at
    its start until the test lets it go, so a search must be answered while it is held, and the ingest that started it
    must still wait. The document of that ingest is found once it is in the indexes, when its ingest returns."""
    store = EmbeddedStore(tmp_path / "store", RetrievalConfig(vector_index_min_rows=500))
    store.create_workspace("gross")
    store.add_document("gross", *many_chunks("viele", 600))  # builds the vector index (its own process, not held)
    store.add_document("gross", *BIOLOGY)  # folded into the indexes after it (not held)
    started, release = tmp_path / "upkeep-started", tmp_path / "upkeep-release"
    upkeep_command = table_upkeep.command

    def held() -> list[str]:
        argv = upkeep_command()
        gate = (
            f"import os, pathlib, time\npathlib.Path({str(started)!r}).touch()\n"
            f"while not pathlib.Path({str(release)!r}).exists(): time.sleep(0.02)\nos.execv({argv[0]!r}, {argv!r})"
        )
        return [sys.executable, "-c", gate]

    monkeypatch.setattr(table_upkeep, "command", held)
    store._upkeep_worker.close()  # the next action starts a new upkeep process: this one, held at its start
    failed: list[BaseException] = []

    def ingest() -> None:
        try:
            store.add_document("gross", *HISTORY)
        except BaseException as error:
            failed.append(error)

    query = "Mitochondrien Kraftwerke der Zelle"
    writer = threading.Thread(target=ingest, name="ingest")
    writer.start()
    try:
        wait_until(started.exists, timeout=120, what="the optimize process started")
        assert store.search("gross", query, vector_of(query), 3, 0.5)[0].document_id == "bio1"
        # Recorded, but not yet in the indexes: the workspace is searched through them alone, so not found yet.
        assert "ges1" not in {hit.document_id for hit in store.search("gross", "Krieg", vector_of("Krieg"), 3, 0.5)}
        assert writer.is_alive() and store._write_lock.locked()  # the ingest that started the optimize waits for it
    finally:
        release.touch()
        writer.join(timeout=300)
    assert not writer.is_alive() and not failed
    table = store._table("gross")
    assert table.index_stats("vector_idx").num_unindexed_rows == 0  # the optimize folded the new rows into the index
    assert store.search("gross", query, vector_of(query), 3, 1.0)[0].document_id == "bio1"
    assert store.search("gross", "Krieg", vector_of("Krieg"), 3, 0.5)[0].document_id == "ges1"
    store.close()


def test_the_index_upkeep_runs_outside_the_process_that_searches(tmp_path, monkeypatch):
    """Lance shares one CPU pool per process (one thread on 2 cores): an optimize or a vector index build in the store's
    process makes every search wait for it. Both must happen, in another process."""
    from lancedb.table import LanceTable

    ran_here: list[str] = []
    optimize, create_index = LanceTable.optimize, LanceTable.create_index

    def optimize_here(self, *args, **kwargs):
        ran_here.append("optimize")
        return optimize(self, *args, **kwargs)

    def create_index_here(self, column, *args, **kwargs):
        if column == "vector":
            ran_here.append("vector index")
        return create_index(self, column, *args, **kwargs)

    monkeypatch.setattr(LanceTable, "optimize", optimize_here)
    monkeypatch.setattr(LanceTable, "create_index", create_index_here)
    store = EmbeddedStore(tmp_path, RetrievalConfig(vector_index_min_rows=500, optimize_every_documents=1))
    store.create_workspace("gross")
    store.add_document("gross", *many_chunks("viele", 600))  # past vector_index_min_rows: the index is built
    store.add_document("gross", *BIOLOGY)  # optimize_every_documents=1: folded into the index
    assert ran_here == []
    assert store._table("gross").index_stats("vector_idx").num_unindexed_rows == 0
    query = "Mitochondrien Kraftwerke der Zelle"
    assert store.search("gross", query, vector_of(query), 3, 1.0)[0].document_id == "bio1"
    store.close()


def test_an_upkeep_process_that_fails_says_why(tmp_path):
    (tmp_path / "lance").mkdir()
    worker = table_upkeep.UpkeepWorker()
    with pytest.raises(RuntimeError, match="optimize of workspace fehlt failed") as failed:
        worker.run(tmp_path / "lance", "fehlt", "optimize", 60)
    assert "fehlt" in str(failed.value).split("):", 1)[1]  # the process's own error names the missing table
    pid = worker.pid
    assert pid is not None  # an action that failed leaves the process serving
    with pytest.raises(ValueError, match="unknown upkeep action"):
        worker.run(tmp_path / "lance", "fehlt", "vacuum", 60)
    worker.close()
    assert worker.pid is None and not Path(f"/proc/{pid}").exists()


def test_the_upkeep_process_serves_document_after_document_and_leaves_when_idle(tmp_path):
    """Each document of an indexed workspace is folded into its indexes by an optimize: one process (lancedb imported
    once, 3.4 s of CPU on a school server) serves them one after another, leaves after its idle time, and the next
    document starts a new one."""
    store = EmbeddedStore(tmp_path, RetrievalConfig(vector_index_min_rows=500))
    worker = store._upkeep_worker
    worker.idle_s = 3.0
    store.create_workspace("gross")
    store.add_document("gross", *many_chunks("viele", 600))  # the vector index is built
    first = worker.pid
    assert first is not None
    store.add_document("gross", *BIOLOGY)  # folded in by the same process
    assert worker.pid == first
    wait_until(lambda: worker.pid is None, timeout=30, what="the idle upkeep process gone", interval=0.2)
    assert not Path(f"/proc/{first}").exists()  # it left, and was waited for (no zombie)
    store.add_document("gross", *HISTORY)
    assert worker.pid not in (None, first)
    assert store._table("gross").index_stats("text_idx").num_unindexed_rows == 0
    assert store.search("gross", "Krieg", vector_of("Krieg"), 3, 0.5)[0].document_id == "ges1"
    store.close()
    assert worker.pid is None


def test_an_upkeep_process_that_dies_fails_its_action_and_the_next_action_gets_a_new_one(tmp_path, monkeypatch):
    store = EmbeddedStore(tmp_path, RetrievalConfig(vector_index_min_rows=500))
    store.create_workspace("gross")
    store.add_document("gross", *many_chunks("viele", 600))
    upkeep_command = table_upkeep.command
    monkeypatch.setattr(
        table_upkeep,
        "command",
        lambda: [sys.executable, "-c", "import sys; sys.stdin.readline(); print('{}', flush=True); sys.exit('kein Speicher mehr')"],
    )
    store._upkeep_worker.close()
    with pytest.raises(RuntimeError, match=r"optimize of workspace gross failed \(exit status 1\): kein Speicher mehr"):
        store.optimize("gross")
    monkeypatch.setattr(table_upkeep, "command", upkeep_command)
    store.add_document("gross", *BIOLOGY)  # a new process folds in what the failed one left
    assert store._table("gross").index_stats("text_idx").num_unindexed_rows == 0
    # Killed between two actions (out of memory, an admin), and the next document right after: the request may reach
    # the process while it is still dying (its threads ending), or find it gone; either way a new one takes it.
    os.kill(store._upkeep_worker.pid, signal.SIGKILL)
    store.add_document("gross", *HISTORY)
    assert store._table("gross").index_stats("text_idx").num_unindexed_rows == 0
    assert store.search("gross", "Krieg", vector_of("Krieg"), 3, 0.5)[0].document_id == "ges1"
    store.close()


def test_a_hybrid_search_runs_its_bm25_half_beside_its_vector_half_and_finds_the_same(tmp_path, monkeypatch):
    """At a million chunks the two halves took 18 and 11 ms, one after the other 31. Here the BM25 half is held
    until the vector half has started: run one after the other, the vector half would never start."""
    store = EmbeddedStore(tmp_path, RetrievalConfig())
    store.create_workspace("klasse")
    store.add_document("klasse", *BIOLOGY)
    store.add_document("klasse", *HISTORY)
    query = "Krieg Zelle"

    def found() -> list[tuple[str, int, float]]:
        return [(hit.document_id, hit.chunk_index, hit.score) for hit in store.search("klasse", query, vector_of(query), 4, 0.5)]

    with monkeypatch.context() as one_after_other:  # the BM25 half in the caller's thread, first, as before
        one_after_other.setattr(store._keyword_threads, "submit", lambda work: done(work()))
        expected = found()
    table = store._table("klasse")
    vector_started, threads = threading.Event(), {}

    class Watched:
        """The workspace's table, recording where each half runs; the BM25 half waits for the vector half's start."""

        def __getattr__(self, name: str):
            return getattr(table, name)

        def search(self, *args, **kwargs):
            kind = kwargs.get("query_type")
            threads[kind] = threading.current_thread().name
            if kind == "vector":
                vector_started.set()
            else:
                threads["vector started first"] = vector_started.wait(timeout=10)
            return table.search(*args, **kwargs)

    monkeypatch.setattr(store, "_table", lambda workspace: Watched())
    assert found() == expected and {hit[0] for hit in expected} == {"bio1", "ges1"}
    assert threads["vector started first"], threads
    assert threads["fts"].startswith("schulki-bm25") and threads["vector"] == threading.current_thread().name
    store.close()


def done(result: object) -> concurrent.futures.Future:
    """A future that already holds its result."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(result)
    return future


def test_an_indexed_workspace_folds_each_document_into_its_indexes_before_the_ingest_returns(tmp_path):
    """Rows outside the indexes cost every search: at 1,000,000 chunks +20 ms for 1,000 of them, +170 ms for 20,000.
    A workspace with a vector index is therefore searched through its indexes alone, and each document is folded
    in before its ingest returns (not every optimize_every_documents ingests)."""
    store = EmbeddedStore(tmp_path, RetrievalConfig(vector_index_min_rows=500, optimize_every_documents=20))
    store.create_workspace("gross")
    store.add_document("gross", *many_chunks("viele", 600))
    for document in (BIOLOGY, HISTORY):
        store.add_document("gross", *document)
        table = store._table("gross")
        assert [table.index_stats(name).num_unindexed_rows for name in ("text_idx", "vector_idx")] == [0, 0]
    assert store.search("gross", "Mitochondrien Zelle", vector_of("Mitochondrien Zelle"), 3, 0.5)[0].document_id == "bio1"
    assert store.search("gross", "Krieg", vector_of("Krieg"), 3, 0.5)[0].document_id == "ges1"
    store.delete_document("gross", "bio1")  # still in the indexes until the purge: the search must leave it out all the same
    for weight in (0.0, 0.5, 1.0):
        hits = store.search("gross", "Mitochondrien Zelle", vector_of("Mitochondrien Zelle"), 5, weight)
        assert "bio1" not in {hit.document_id for hit in hits}
        assert hits or weight == 0.0  # BM25 alone: no other document has these words
    store.close()


def test_a_workspace_whose_upkeep_failed_is_searched_whole_until_an_upkeep_succeeds(tmp_path, monkeypatch):
    store = EmbeddedStore(tmp_path, RetrievalConfig(vector_index_min_rows=500))
    store.create_workspace("gross")
    store.add_document("gross", *many_chunks("viele", 600))

    def disk_full(folder: Path, workspace: str, action: str, keep_versions_s: int) -> None:
        raise RuntimeError(f"{action} of workspace {workspace} failed (exit status 1): No space left on device")

    monkeypatch.setattr(store._upkeep_worker, "run", disk_full)
    store.add_document("gross", *BIOLOGY)  # stored and recorded; its upkeep fails and is logged
    assert store._table("gross").index_stats("text_idx").num_unindexed_rows > 0
    query = "Mitochondrien Kraftwerke der Zelle"
    assert store.search("gross", query, vector_of(query), 3, 0.5)[0].document_id == "bio1"  # searched whole: found
    monkeypatch.undo()
    store.add_document("gross", *HISTORY)  # this upkeep succeeds and folds in both documents
    assert store._table("gross").index_stats("text_idx").num_unindexed_rows == 0
    assert store.search("gross", query, vector_of(query), 3, 0.5)[0].document_id == "bio1"
    assert store.search("gross", "Krieg", vector_of("Krieg"), 3, 0.5)[0].document_id == "ges1"
    store.close()


def test_rows_a_crash_left_outside_the_indexes_are_folded_in_at_the_next_start(tmp_path):
    store = EmbeddedStore(tmp_path, RetrievalConfig(vector_index_min_rows=500))
    store.create_workspace("gross")
    store.add_document("gross", *many_chunks("viele", 600))
    record, chunks = BIOLOGY
    store._write_chunks("gross", chunks)  # the crash came after the chunks and their record, before the upkeep
    store._record("gross", record)
    query = "Mitochondrien Kraftwerke der Zelle"
    assert "bio1" not in {hit.document_id for hit in store.search("gross", query, vector_of(query), 3, 0.5)}
    store.close()
    again = EmbeddedStore(tmp_path, RetrievalConfig(vector_index_min_rows=500))
    again.recover()
    table = again._table("gross")
    assert [table.index_stats(name).num_unindexed_rows for name in ("text_idx", "vector_idx")] == [0, 0]
    assert again.search("gross", query, vector_of(query), 3, 0.5)[0].document_id == "bio1"
    again.close()
