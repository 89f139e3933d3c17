"""The store interface: workspaces, documents and hybrid search, with atomic ingest.

Two engines implement it: the embedded store (LanceDB, one table per
workspace) and Weaviate (one tenant per workspace). Both keep two things per
workspace: the chunks with their vectors, and a manifest of the documents
that are complete. The manifest is the truth:

- ``add_document`` writes all chunks of a document first and records the
  document in the manifest only after they are written. A document whose
  chunks are there but whose manifest record is not (a crash in between, or a
  failed write) is not a document: reads leave its chunks out, and
  ``recover`` deletes them when the store opens.
- ``delete_document`` removes the manifest record first and the chunks
  after, so a crash in between leaves only chunks that ``recover`` removes.

So after a crash at any point a document is either fully searchable or absent.
Subclasses supply the engine's primitive operations; this class holds the
order of operations that makes ingest atomic, and the fusion of BM25 and
vector scores that both engines share.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice

from schulki.retrieval.documents import Chunk
from schulki.runtime.errors import AlreadyExists, InvalidInput, NotFound, TooLarge

log = logging.getLogger("schulki.retrieval")

WORKSPACE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Letters, digits, "-" and "_", at most 64: valid as a LanceDB table name and as a Weaviate tenant name."""


def check_workspace_name(name: str) -> str:
    """The name itself, or InvalidInput saying what a workspace name may contain."""
    if not WORKSPACE_NAME.fullmatch(name or ""):
        raise InvalidInput(
            "Ungültiger Name für einen Arbeitsbereich: erlaubt sind Buchstaben A-Z, Ziffern, - und _, höchstens 64 Zeichen. "
            "(workspace names are 1 to 64 of A-Z, a-z, 0-9, - and _)"
        )
    return name


@dataclass
class DocumentRecord:
    """One complete document, as the manifest keeps it."""

    document_id: str
    source: str
    format: str
    chunk_count: int
    page_count: int = 0
    size_bytes: int = 0
    created_at: int = field(default_factory=lambda: int(time.time()))
    text_bytes: int = 0
    """UTF-8 bytes of the chunks' text as stored (0 in manifests written before it was counted)."""

    @property
    def counted_bytes(self) -> int:
        """What the document counts against its workspace's quota: its file or its stored text, whichever is larger."""
        return max(self.size_bytes, self.text_bytes)


def mib(count: int) -> str:
    """Bytes as MiB for a message, one decimal, German style."""
    return f"{count / (1024 * 1024):.1f}".replace(".", ",")


def over_quota(used: int, quota: int) -> TooLarge:
    """The error for an upload that does not fit into its workspace's storage quota."""
    return TooLarge(
        f"Der Speicherplatz dieses Arbeitsbereichs reicht nicht: {mib(used)} von {mib(quota)} MB belegt. "
        f"Lösche alte Dokumente oder lade eine kleinere Datei hoch. (storage quota exceeded: {used} of {quota} bytes used)"
    )


@dataclass
class StoredChunk:
    """A chunk with its vector and the document it belongs to, as stores write it."""

    document_id: str
    source: str
    chunk: Chunk
    vector: Sequence[float]


@dataclass
class Hit:
    """One chunk found by a search."""

    text: str
    score: float
    source: str
    page: int
    section: str
    document_id: str
    chunk_index: int


@dataclass
class Candidate:
    """A chunk from one of the two searches, with that search's raw score (higher is better)."""

    key: tuple[str, int]
    """(document_id, chunk_index): the same chunk found by both searches is fused into one hit."""
    score: float
    hit: Hit


RRF_K = 60
"""Reciprocal-rank fusion's constant, as Weaviate's rankedFusion hard-codes it: a hit at 0-based rank r adds weight / (60 + r)."""

FUSIONS = ("rrf", "relative_score")
"""The fusions both stores implement alike (retrieval.fusion)."""


CANDIDATES_MIN = 20
"""Each of the two searches returns at least this many candidates for fusion (4 * top_k for a larger top_k), in both stores."""

EVIDENCE_PASSAGES = 10
"""How many of BM25's best passages ``keyword_evidence`` reads: few enough to be cheap, and the figures were the same from 5 to 40."""

EVIDENCE_WORD = re.compile(r"\w{3,}")
"""Words of the question that count as evidence: three letters or more, so "in", "an" and "of" decide nothing."""


def keyword_evidence(query: str, passages: Iterable[str]) -> float:
    """The share of the question's words (3 letters or more) that begin a word of BM25's best passages; 1.0 for a question without such words.

    A word that begins a word of the text counts, so "Zelle" is found in
    "Zellen" and "Krieg" in "Krieges", as the index's stemming would. An
    English question about German documents shares few words with them (at
    most half of them, mostly a third or less on the quality set), a German
    question most of them: BM25's list then holds chance matches only.
    """
    words = EVIDENCE_WORD.findall(query.lower())
    if not words:
        return 1.0
    vocabulary = sorted(set(EVIDENCE_WORD.findall(" ".join(passages).lower())))
    found = 0
    for word in words:
        at = bisect_left(vocabulary, word)  # the first text word >= the question word; it begins with it, or none does
        found += at < len(vocabulary) and vocabulary[at].startswith(word)
    return found / len(words)


def hybrid_weight(query: str, keyword_passages: Iterable[str], vector_weight: float, evidence_min: float) -> float:
    """The vector weight one hybrid search uses: ``vector_weight``, or 1.0 (the vector list alone) when BM25 has too little evidence.

    ``keyword_passages`` are the texts of BM25's best passages, best first
    (``EVIDENCE_PASSAGES`` are read). A weight of exactly 0 or 1 asks for one
    list and is kept. Below ``evidence_min`` (retrieval.keyword_evidence_min)
    the question's words are mostly absent from the workspace, as for an
    English question about German documents, and BM25's few chance matches
    ("in", "Information") would push the passage the vectors found down.
    Both stores decide alike with this function (docs/decisions.md).
    """
    if not 0.0 < vector_weight < 1.0:
        return vector_weight
    passages = list(islice(keyword_passages, EVIDENCE_PASSAGES))
    return 1.0 if keyword_evidence(query, passages) < evidence_min else vector_weight


def fuse(keyword: list[Candidate], vector: list[Candidate], vector_weight: float, top_k: int, fusion: str = "relative_score") -> list[Hit]:
    """Fuse the BM25 and the vector list into one ranking, the way Weaviate's hybrid search does.

    ``relative_score`` (Weaviate's relativeScoreFusion, the default): each
    list's scores scaled to 0..1, then weighted and added.
    ``rrf`` (Weaviate's rankedFusion): each list adds weight / (60 + rank) for
    a chunk, rank counted from 0; scores play no part, only order. At no
    weight did it reach BM25's recall on the quality set (docs/decisions.md), so it is a choice, not the default.
    The weights are 1 - vector_weight for BM25 and vector_weight for the
    vector list (Weaviate's alpha), so both stores rank the same way. A chunk
    found by only one search gets nothing from the other. Each list must be
    ordered best first.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; expected one of {FUSIONS}")
    fused: dict[tuple[str, int], tuple[float, Hit]] = {}
    for candidates, weight in ((keyword, 1.0 - vector_weight), (vector, vector_weight)):
        if not candidates or weight <= 0:
            continue
        scores = [c.score for c in candidates]
        low, high = min(scores), max(scores)
        for rank, c in enumerate(candidates):
            if fusion == "rrf":
                part = weight / (RRF_K + rank)
            else:
                part = weight * ((c.score - low) / (high - low) if high > low else 1.0)
            before = fused.get(c.key, (0.0, c.hit))
            fused[c.key] = (before[0] + part, before[1])
    ranked = sorted(fused.values(), key=lambda item: (-item[0], item[1].document_id, item[1].chunk_index))
    hits = []
    for score, hit in ranked[:top_k]:
        hit.score = score
        hits.append(hit)
    return hits


class Store(ABC):
    """Workspaces of documents, atomic per document, with hybrid search."""

    def __init__(self) -> None:
        self._pending: dict[str, set[str]] = {}
        """Per workspace, documents whose chunks are being written: every read leaves them out."""
        self._write_lock = threading.Lock()

    # The engine's primitives. ------------------------------------------------

    @abstractmethod
    def _workspace_names(self) -> list[str]:
        """The workspaces whose manifest exists."""

    @abstractmethod
    def _create_workspace(self, workspace: str) -> None:
        """Make the workspace's chunk space (idempotent), then its empty manifest."""

    @abstractmethod
    def _drop_workspace(self, workspace: str) -> None:
        """Remove the manifest first, then every chunk of the workspace."""

    @abstractmethod
    def _manifest(self, workspace: str) -> list[DocumentRecord]:
        """The complete documents of a workspace."""

    @abstractmethod
    def _record(self, workspace: str, record: DocumentRecord) -> None:
        """Add a record to the manifest; after this returns the document is complete, even after a crash."""

    @abstractmethod
    def _unrecord(self, workspace: str, document_id: str) -> None:
        """Remove a record from the manifest."""

    @abstractmethod
    def _write_chunks(self, workspace: str, chunks: list[StoredChunk]) -> None:
        """Write the chunks of one document."""

    @abstractmethod
    def _delete_chunks(self, workspace: str, document_ids: Sequence[str]) -> int:
        """Delete every chunk of these documents; return how many were deleted."""

    @abstractmethod
    def _document_chunks(self, workspace: str, document_id: str) -> list[Chunk]:
        """Every chunk of one document, in any order."""

    @abstractmethod
    def _chunk_document_ids(self, workspace: str) -> set[str]:
        """The document ids that have chunks in the workspace (complete or not)."""

    @abstractmethod
    def _search(
        self, workspace: str, query: str, vector: Sequence[float], top_k: int, vector_weight: float, exclude: Sequence[str]
    ) -> list[Hit]:
        """Hybrid search, leaving out the chunks of the documents in ``exclude``."""

    @abstractmethod
    def chunk_count(self, workspace: str) -> int:
        """Chunks in the workspace, of complete documents or not (for benchmarks and tests)."""

    def _maintain(self, workspace: str) -> None:  # noqa: B027 - an optional hook: engines without index upkeep keep the default
        """Index upkeep after a document was stored (the engine may build or refresh indexes); nothing by default."""

    def close(self) -> None:  # noqa: B027 - an optional hook: an embedded store holds no connection
        """Release connections."""

    # The operations the service calls. ------------------------------------------

    def recover(self) -> int:
        """Delete chunks of documents that are not complete (left by a crash); return how many documents."""
        removed = 0
        with self._write_lock:
            for workspace in self._workspace_names():
                complete = {r.document_id for r in self._manifest(workspace)}
                orphans = sorted(self._chunk_document_ids(workspace) - complete - self._pending.get(workspace, set()))
                if orphans:
                    self._delete_chunks(workspace, orphans)
                    removed += len(orphans)
                    log.warning("workspace %s: removed the chunks of %d incomplete documents", workspace, len(orphans))
        return removed

    def list_workspaces(self) -> list[str]:
        return sorted(self._workspace_names())

    def require_workspace(self, workspace: str) -> None:
        """NotFound unless the workspace exists."""
        check_workspace_name(workspace)
        if workspace not in self._workspace_names():
            raise NotFound(f"Den Arbeitsbereich {workspace} gibt es nicht. (unknown workspace {workspace})")

    def create_workspace(self, workspace: str) -> None:
        check_workspace_name(workspace)
        with self._write_lock:
            if workspace in self._workspace_names():
                raise AlreadyExists(f"Den Arbeitsbereich {workspace} gibt es schon. (workspace {workspace} exists)")
            self._create_workspace(workspace)

    def delete_workspace(self, workspace: str) -> int:
        """Remove a workspace with all its documents; return how many documents it had."""
        with self._write_lock:
            self.require_workspace(workspace)
            count = len(self._manifest(workspace))
            self._drop_workspace(workspace)
            self._pending.pop(workspace, None)
        return count

    def used_bytes(self, workspace: str) -> int:
        """What the workspace's complete documents count against its quota."""
        return sum(r.counted_bytes for r in self._manifest(workspace))

    def add_document(self, workspace: str, record: DocumentRecord, chunks: list[StoredChunk], quota_bytes: int = 0) -> None:
        """Store a document atomically: every chunk, then its manifest record.

        With ``quota_bytes`` set, TooLarge when the workspace's documents and
        this one together would count more; checked under the write lock, so
        two uploads at once cannot both squeeze into the last megabytes.
        """
        self.require_workspace(workspace)
        if not chunks:
            raise InvalidInput("Das Dokument enthält keinen Text. (the document has no text)")
        with self._write_lock:
            # Checked again under the lock: the workspace may have been deleted while the document was embedded.
            self.require_workspace(workspace)
            if quota_bytes:
                used = self.used_bytes(workspace)
                if used + record.counted_bytes > quota_bytes:
                    raise over_quota(used, quota_bytes)
            pending = self._pending.setdefault(workspace, set())
            pending.add(record.document_id)
            try:
                self._write_chunks(workspace, chunks)
                self._record(workspace, record)
            except BaseException:
                # Whatever was written is not a document; remove it now rather than at the next start.
                try:
                    self._delete_chunks(workspace, [record.document_id])
                except Exception:
                    log.exception("could not remove the chunks of a failed ingest; they are removed at the next start")
                raise
            finally:
                pending.discard(record.document_id)
            try:
                self._maintain(workspace)
            except Exception:
                log.exception("workspace %s: index upkeep failed", workspace)

    def list_documents(self, workspace: str) -> list[DocumentRecord]:
        """The complete documents of a workspace, newest first."""
        self.require_workspace(workspace)
        return sorted(self._manifest(workspace), key=lambda r: (-r.created_at, r.document_id))

    def document_chunks(self, workspace: str, document_id: str) -> list[Chunk]:
        """The chunks of one complete document in their order (for a user's export of their data)."""
        self.require_workspace(workspace)
        if document_id not in {r.document_id for r in self._manifest(workspace)}:
            raise NotFound(f"Das Dokument {document_id} gibt es in {workspace} nicht. (unknown document)")
        return sorted(self._document_chunks(workspace, document_id), key=lambda c: c.index)

    def delete_document(self, workspace: str, document_id: str) -> int:
        """Remove a document: its manifest record first, then its chunks; return how many chunks."""
        self.require_workspace(workspace)
        with self._write_lock:
            if document_id not in {r.document_id for r in self._manifest(workspace)}:
                raise NotFound(f"Das Dokument {document_id} gibt es in {workspace} nicht. (unknown document)")
            self._unrecord(workspace, document_id)
            return self._delete_chunks(workspace, [document_id])

    def search(self, workspace: str, query: str, vector: Sequence[float], top_k: int, vector_weight: float) -> list[Hit]:
        """The best chunks of complete documents in this workspace only."""
        self.require_workspace(workspace)
        if not 0.0 <= vector_weight <= 1.0:
            raise InvalidInput(f"vector_weight muss zwischen 0 und 1 liegen, nicht {vector_weight:g}. (vector_weight out of range)")
        exclude = sorted(self._pending.get(workspace, ()))
        return self._search(workspace, query, vector, top_k, vector_weight, exclude)
