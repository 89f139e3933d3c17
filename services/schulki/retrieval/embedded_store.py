"""The embedded store: LanceDB on this machine's disk, one table per workspace.

Layout under the store folder::

    lance/<workspace>.lance     the workspace's chunks: text, page, section, source, vector
    manifests/<workspace>.json  the workspace's complete documents (the truth, see store.py)

A LanceDB ``add`` is one commit: its data files are written first and become
part of the table only when the new version is committed, so all chunks of a
document arrive in one ``add`` or not at all. The manifest is replaced
atomically (write a temporary file, fsync, rename, fsync the folder). The
workspace exists exactly when its manifest does.

Search runs BM25 over LanceDB's full-text index (German stemming by default)
and a cosine vector search, the two at the same time (the BM25 half on a thread
of the store's own), then fuses them (store.fuse; by the vectors alone when BM25
has too little evidence, store.hybrid_weight). Large tables get a vector
index (IVF with HNSW, scalar-quantised).

Rows not yet folded into the indexes cost every search dearly: Lance searches
them without an index beside the indexed rows, at 1,000,000 chunks +20 ms for
the first 1,000 such rows and +170 ms for 20,000. So a workspace with a vector
index is searched through its indexes alone (Lance's fast search), and after
each document its rows are folded in before the ingest returns: a document is
found once its ingest is done, and other students' searches meanwhile go on
without it. Smaller tables are searched whole and folded in every
``optimize_every_documents`` ingests. Should an upkeep fail, the workspace is
searched whole again (nothing stored is left out) until one succeeds; at the
start, ``recover`` folds in what a crash left outside the indexes.

``optimize`` and the vector index build run in a process of their own
(table_upkeep): in this process they would hold Lance's CPU pool, one thread
on a 2-core server, and every search would wait for them. After an ingest or
a delete they run under the store's write lock, so the next ingest or delete
waits for them; searches take no lock a writer holds and go on.

Deleting rows in LanceDB writes a new version; the old versions still hold
the deleted text until they are cleaned up. A delete therefore schedules an
``optimize`` after ``keep_versions_s`` (a search running on an old version
must not lose its files), which removes them from the disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from schulki.config import RetrievalConfig
from schulki.retrieval import table_upkeep
from schulki.retrieval.documents import Chunk
from schulki.retrieval.store import CANDIDATES_MIN, Candidate, DocumentRecord, Hit, Store, StoredChunk, fuse, hybrid_weight
from schulki.runtime.errors import InvalidInput

# lancedb's own types lag its API (a query's distance_type is missing from them), so its tables are used untyped.
Table: TypeAlias = Any

log = logging.getLogger("schulki.retrieval")

HNSW_EF = 100
"""Candidates the HNSW graph search keeps while it walks (ignored while a table has no vector index)."""

TEXT_INDEX = "text_idx"
"""The name of a table's full-text index (LanceDB's default for the column "text", given so that it is not left to chance)."""

KEYWORD_THREADS = 8
"""Threads that run the BM25 half of searches beside their vector half (as many searches as the service runs at once
get one; more wait for a thread). Lance does the work in its own pool and lets Python's lock go meanwhile."""


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace a file so that a crash leaves either the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EmbeddedStore(Store):
    """LanceDB tables in a folder; no server needed."""

    def __init__(self, path: Path, config: RetrievalConfig):
        super().__init__()
        import lancedb

        self.path = path
        self.config = config
        self.manifests = path / "manifests"
        self.manifests.mkdir(parents=True, exist_ok=True)
        (path / "lance").mkdir(parents=True, exist_ok=True)
        self._db = lancedb.connect(path / "lance")
        self._tables: dict[str, object] = {}
        self._tables_lock = threading.Lock()
        self._adds_since_optimize: dict[str, int] = {}
        self._purges: dict[str, threading.Timer] = {}
        self._vector_indexed: set[str] = set()
        """Workspaces known to have a vector index: searched through their indexes alone, folded in after each document."""
        self._upkeep_failed: set[str] = set()
        """Workspaces whose last upkeep failed: their rows may lie outside the indexes, so they are searched whole."""
        self._keyword_threads = ThreadPoolExecutor(KEYWORD_THREADS, thread_name_prefix="schulki-bm25")
        self._upkeep_worker = table_upkeep.UpkeepWorker()
        for stale in self.manifests.glob(".*.tmp"):
            stale.unlink()

    # Manifest. -------------------------------------------------------------------

    def _manifest_path(self, workspace: str) -> Path:
        return self.manifests / f"{workspace}.json"

    def _workspace_names(self) -> list[str]:
        return [p.stem for p in self.manifests.glob("*.json")]

    def _manifest(self, workspace: str) -> list[DocumentRecord]:
        try:
            data = json.loads(self._manifest_path(workspace).read_bytes())
        except FileNotFoundError:
            return []
        return [DocumentRecord(**d) for d in data["documents"]]

    def _save_manifest(self, workspace: str, records: list[DocumentRecord]) -> None:
        data = {"version": 1, "documents": [asdict(r) for r in records]}
        _write_atomically(self._manifest_path(workspace), json.dumps(data, ensure_ascii=False).encode())

    def _create_workspace(self, workspace: str) -> None:
        # A table left by a workspace deleted in a crash must not come back with it.
        self._drop_table(workspace)
        self._save_manifest(workspace, [])

    def _drop_workspace(self, workspace: str) -> None:
        self._manifest_path(workspace).unlink()
        _fsync_dir(self.manifests)
        self._drop_table(workspace)

    def _record(self, workspace: str, record: DocumentRecord) -> None:
        self._save_manifest(workspace, [*self._manifest(workspace), record])

    def _unrecord(self, workspace: str, document_id: str) -> None:
        self._save_manifest(workspace, [r for r in self._manifest(workspace) if r.document_id != document_id])

    # Chunks. ---------------------------------------------------------------------

    def _table(self, workspace: str) -> Table | None:
        """The workspace's chunk table, or None before its first document."""
        with self._tables_lock:
            table = self._tables.get(workspace)
            if table is None:
                try:
                    table = self._db.open_table(workspace)
                except (ValueError, FileNotFoundError):
                    return None
                self._tables[workspace] = table
            return table

    def _drop_table(self, workspace: str) -> None:
        with self._tables_lock:
            self._tables.pop(workspace, None)
            self._vector_indexed.discard(workspace)
            self._upkeep_failed.discard(workspace)
            with contextlib.suppress(ValueError, FileNotFoundError):
                self._db.drop_table(workspace)

    def _schema(self, dimension: int) -> pa.Schema:
        return pa.schema(
            [
                pa.field("document_id", pa.string()),
                pa.field("chunk_index", pa.int32()),
                pa.field("text", pa.string()),
                pa.field("page", pa.int32()),
                pa.field("section", pa.string()),
                pa.field("source", pa.string()),
                pa.field("vector", pa.list_(pa.float32(), dimension)),
            ]
        )

    def _check_dimension(self, table: Table, dimension: int) -> None:
        have = table.schema.field("vector").type.list_size
        if have != dimension:
            raise InvalidInput(
                f"Dieser Arbeitsbereich wurde mit einem anderen Embedding-Modell angelegt ({have} statt {dimension} Dimensionen); "
                f"lege einen neuen an. (the workspace holds {have}-dimensional vectors, the model makes {dimension})"
            )

    def _write_chunks(self, workspace: str, chunks: list[StoredChunk]) -> None:
        dimension = len(chunks[0].vector)
        # Column by column, the vectors as one float32 block: row by row (pa.Table.from_pylist) a document of 1,000 chunks
        # held Python's lock for 30 to 60 ms, and every search of the service waited meanwhile.
        try:
            vectors = np.asarray([c.vector for c in chunks], dtype=np.float32).reshape(len(chunks), dimension)
        except ValueError as ragged:
            raise InvalidInput(f"Die Vektoren der Abschnitte sind verschieden lang. (vectors of different lengths: {ragged})") from None
        rows = pa.table(
            {
                "document_id": [c.document_id for c in chunks],
                "chunk_index": [c.chunk.index for c in chunks],
                "text": [c.chunk.text for c in chunks],
                "page": [c.chunk.page for c in chunks],
                "section": [c.chunk.section for c in chunks],
                "source": [c.source for c in chunks],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dimension),
            },
            schema=self._schema(dimension),
        )
        table = self._table(workspace)
        if table is None:
            table = self._db.create_table(workspace, data=rows, schema=self._schema(dimension))
            with self._tables_lock:
                self._tables[workspace] = table
            self._create_text_index(table)
        else:
            self._check_dimension(table, dimension)
            table.add(rows)  # one commit: all chunks of the document or none

    def _create_text_index(self, table: Table) -> None:
        from lancedb.index import FTS

        # Stemming for the schools' language finds "Kriege" for "Krieg"; stop words stay,
        # because questions like "Wer war ..." would otherwise lose words that matter in English.
        table.create_index(
            "text",
            config=FTS(language=self.config.text_language, stem=True, remove_stop_words=False, ascii_folding=True),
            replace=True,
            name=TEXT_INDEX,
        )

    def _maintain(self, workspace: str) -> None:
        """Build the vector index once a table is large; fold new rows into the indexes after each document once it has
        one (it is then searched through them alone), every optimize_every_documents ingests before."""
        table = self._table(workspace)
        if table is None:
            return
        if workspace not in self._vector_indexed and table.count_rows() >= self.config.vector_index_min_rows:
            # Listing indexes reads their statistics, which is slow on large tables: only past the threshold, once.
            if self._has_vector_index(table):
                self._vector_indexed.add(workspace)
            else:
                self.build_vector_index(workspace)
        done = self._adds_since_optimize.get(workspace, 0) + 1
        self._adds_since_optimize[workspace] = done
        if workspace in self._vector_indexed or done >= self.config.optimize_every_documents:
            self.optimize(workspace)

    @staticmethod
    def _has_vector_index(table: Table) -> bool:
        """Whether the table has its vector index (listing indexes reads their statistics: slow on large tables)."""
        return table_upkeep.VECTOR_INDEX in {index.name for index in table.list_indices()}

    def build_vector_index(self, workspace: str) -> None:
        """Build (or rebuild) the workspace's vector index, in a process of its own (table_upkeep: searches go on meanwhile)."""
        table = self._table(workspace)
        if table is None:
            return
        log.info("workspace %s: building the vector index over %d chunks", workspace, table.count_rows())
        self._upkeep(workspace, "vector-index")
        self._vector_indexed.add(workspace)

    def optimize(self, workspace: str) -> None:
        """Compact the table, fold new rows into its indexes and drop old versions (so deleted text leaves the disk),
        in a process of its own (table_upkeep: searches go on meanwhile)."""
        with self._tables_lock:
            self._purges.pop(workspace, None)
        if self._table(workspace) is None:
            return
        self._upkeep(workspace, "optimize")
        self._adds_since_optimize[workspace] = 0

    def _upkeep(self, workspace: str, action: str) -> None:
        """Run an upkeep action in its own process, then let the next read or write open the version it committed.

        A handle stays on the version it last wrote or read; searches that hold the old one finish on it (its files
        are kept for keep_versions_s), the next ones open the new version.
        """
        try:
            self._upkeep_worker.run(self.path / "lance", workspace, action, self.config.keep_versions_s)
        except BaseException:
            self._upkeep_failed.add(workspace)
            raise
        else:
            self._upkeep_failed.discard(workspace)
        finally:
            with self._tables_lock:
                self._tables.pop(workspace, None)

    def _delete_chunks(self, workspace: str, document_ids: Sequence[str]) -> int:
        table = self._table(workspace)
        if table is None or not document_ids:
            return 0
        where = f"document_id IN ({', '.join(map(_quote, document_ids))})"
        before = table.count_rows(where)
        if before:
            table.delete(where)
            self._purge_later(workspace)
        return before

    def _purge_later(self, workspace: str) -> None:
        """Remove the old table versions that still hold deleted text, once no running search can need them."""

        def purge() -> None:
            with self._write_lock:
                if workspace in self._workspace_names():
                    self.optimize(workspace)

        with self._tables_lock:
            if workspace in self._purges:
                return
            timer = threading.Timer(self.config.keep_versions_s + 1, purge)
            timer.daemon = True
            self._purges[workspace] = timer
        timer.start()

    def _table_names(self) -> list[str]:
        names, token = [], None
        while True:
            page = self._db.list_tables(page_token=token)
            names += page.tables
            token = page.page_token
            if not token:
                return names

    def recover(self) -> int:
        """Drop the tables of workspaces deleted in a crash, remove incomplete documents, then fold into the indexes
        what a crash left outside them (so the workspaces with a vector index are searched through their indexes alone)."""
        workspaces = set(self._workspace_names())
        for name in self._table_names():
            if name not in workspaces:
                log.warning("dropping the chunks of workspace %s, deleted before a crash", name)
                self._drop_table(name)
        removed = super().recover()
        with self._write_lock:
            for workspace in self._workspace_names():
                table = self._table(workspace)
                if table is None or not self._has_vector_index(table):
                    continue
                if any(table.index_stats(name).num_unindexed_rows for name in (TEXT_INDEX, table_upkeep.VECTOR_INDEX)):
                    log.warning("workspace %s: folding rows left outside the indexes into them", workspace)
                    try:
                        self.optimize(workspace)
                    except RuntimeError:
                        log.exception("workspace %s: index upkeep failed; searched whole until one succeeds", workspace)
                        continue
                self._vector_indexed.add(workspace)
        return removed

    def _document_chunks(self, workspace: str, document_id: str) -> list[Chunk]:
        table = self._table(workspace)
        if table is None:
            return []
        rows = (
            table.search()
            .where(f"document_id = {_quote(document_id)}")
            .select(["chunk_index", "text", "page", "section"])
            .limit(None)
            .to_list()
        )
        return [Chunk(text=r["text"], index=r["chunk_index"], page=r["page"], section=r["section"]) for r in rows]

    def _chunk_document_ids(self, workspace: str) -> set[str]:
        table = self._table(workspace)
        if table is None:
            return set()
        column = table.search().select(["document_id"]).limit(None).to_arrow().column("document_id")
        return set(column.unique().to_pylist())

    # Search. ---------------------------------------------------------------------

    def _search(
        self, workspace: str, query: str, vector: Sequence[float], top_k: int, vector_weight: float, exclude: Sequence[str]
    ) -> list[Hit]:
        table = self._table(workspace)
        if table is None:
            return []
        if vector_weight > 0.0:
            self._check_dimension(table, len(vector))
        where = f"document_id NOT IN ({', '.join(map(_quote, exclude))})" if exclude else None
        wanted = max(CANDIDATES_MIN, 4 * top_k)
        columns = ["document_id", "chunk_index", "text", "page", "section", "source"]
        # Only a workspace with a vector index: Lance's fast search finds nothing in a vector column without one.
        indexes_alone = workspace in self._vector_indexed and workspace not in self._upkeep_failed

        def keyword_candidates() -> list[Candidate]:
            search = table.search(query, query_type="fts", fts_columns="text").select([*columns, "_score"]).limit(wanted)
            if indexes_alone:
                search = search.fast_search()
            if where:
                search = search.where(where, prefilter=True)
            return [self._candidate(row, row["_score"]) for row in search.to_list()]

        # The BM25 half runs beside the vector half: at 1,000,000 chunks they took 18 and 11 ms, one after the other 31.
        keyword_half = self._keyword_threads.submit(keyword_candidates) if vector_weight < 1.0 and query.strip() else None
        similar: list[Candidate] = []
        if vector_weight > 0.0:
            search = (
                table.search(list(vector), query_type="vector", vector_column_name="vector")
                .distance_type("cosine")
                .select([*columns, "_distance"])
                .limit(wanted)
                .ef(max(HNSW_EF, 2 * wanted))
            )  # a wider graph search: better recall for a few milliseconds
            if indexes_alone:
                search = search.fast_search()
            if where:
                search = search.where(where, prefilter=True)
            similar = [self._candidate(row, 1.0 - row["_distance"]) for row in search.to_list()]
        keyword = keyword_half.result() if keyword_half is not None else []
        weight = hybrid_weight(query, (c.hit.text for c in keyword), vector_weight, self.config.keyword_evidence_min)
        return fuse(keyword, similar, weight, top_k, self.config.fusion)

    @staticmethod
    def _candidate(row: dict, score: float) -> Candidate:
        hit = Hit(
            text=row["text"],
            score=0.0,
            source=row["source"],
            page=row["page"],
            section=row["section"],
            document_id=row["document_id"],
            chunk_index=row["chunk_index"],
        )
        return Candidate(key=(hit.document_id, hit.chunk_index), score=float(score), hit=hit)

    def restore_workspace(self, workspace: str, manifest: bytes, rows: pa.Table | None) -> None:
        """Put a workspace back as ``schulki restore`` read it from a backup: its chunks as one table (with the
        indexes a table gets here), then its manifest as it was saved, so the workspace appears complete or not at all."""
        self._drop_table(workspace)
        if rows is not None and rows.num_rows:
            table = self._db.create_table(workspace, data=rows, schema=rows.schema)
            with self._tables_lock:
                self._tables[workspace] = table
            self._create_text_index(table)
            if rows.num_rows >= self.config.vector_index_min_rows:
                self.build_vector_index(workspace)
        _write_atomically(self._manifest_path(workspace), manifest)

    def chunk_count(self, workspace: str) -> int:
        """Rows in the workspace's table (complete documents or not); for benchmarks and tests."""
        table = self._table(workspace)
        return 0 if table is None else table.count_rows()

    def close(self) -> None:
        with self._tables_lock:
            for timer in self._purges.values():
                timer.cancel()
            self._purges.clear()
            self._tables.clear()
        self._keyword_threads.shutdown(wait=True)  # a search still running finishes; none starts a half after this
        self._upkeep_worker.close()
