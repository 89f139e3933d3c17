"""Retrieval: ingest time of a 100-page PDF, and search latency at 10,000 and 100,000 chunks.

Ingest goes through the real retrieval service with the real embeddings
service (default model), both on real sockets in this process; the time of
each stage comes from the service's own progress messages.

Search latency is measured in each store itself (the embedded store, LanceDB,
and Weaviate), without the query's embedding: the chunks for it are SYNTHETIC,
inserted directly into the store (texts drawn from a German word list, random
unit vectors), because embedding 100,000 real chunks would take hours on this
machine. Each query is a hybrid search (BM25 and vector, weight 0.5) for 3
words and a random unit vector, through the store's own search (both fuse the
two lists alike, store.fuse). At each size the embedded store runs without a
vector index (exact search) and with the IVF-HNSW-SQ index it builds for large
workspaces; Weaviate always has its HNSW index. Weaviate is the server of
WEAVIATE_URL (WEAVIATE_API_KEY, WEAVIATE_GRPC_PORT) or the pinned one ./dev
test builds, started here on loopback (tests/weaviate_support.py); with
neither, its rows say why they are missing.

    .venv/bin/python benchmarks/retrieval_bench.py [--pages 100] [--sizes 10000 100000] [--queries 100] [--store embedded weaviate]
    .venv/bin/python benchmarks/retrieval_bench.py --smoke    # a 2-page PDF, a 100-chunk store per engine: does it still run?

With --chunks N (for example 1000000) it measures one large workspace of the
embedded store instead: the time to insert N synthetic chunks (documents of
1,000, one commit each, as the service writes them), the time to build the
vector index over them, the process's memory (RSS) after each (and at the end the
peak of its largest child process: the store builds and optimizes the index in one), and hybrid
top-5 search p50/p95 while another thread goes on ingesting (documents of
1,000 chunks, with the service's default upkeep: a workspace with a vector
index is searched through its indexes alone and each document is folded into
them before its ingest returns). The vectors are the same SYNTHETIC random
unit vectors (numpy, seeded), not embeddings of the texts. --text picks the
chunks' words: "narrow" (the default) draws each of 25 words evenly from the 64
words above, so every query word is in a third of all chunks, the worst case
for BM25; "zipf" draws them as a language spreads its words (Zipf's law, s = 1,
over German's most common function words and then 30,000 made-up content
words), and each query is two function words and two content words, as a
student's question is.

    .venv/bin/python benchmarks/retrieval_bench.py --pages 0 --sizes --chunks 100000 --queries 100 [--text zipf] [--keep FOLDER]

--keep FOLDER keeps the workspace in FOLDER, and a later run with the same
--chunks and --text reuses it (opened as the service opens its store at the
start, with ``recover``) instead of inserting and indexing again, which takes
about half an hour at 1,000,000 chunks; the documents its ingest added are
deleted again at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from schulki import retrieval  # noqa: E402
from schulki.config import RetrievalConfig  # noqa: E402
from schulki.retrieval.documents import Chunk  # noqa: E402
from schulki.retrieval.embedded_store import EmbeddedStore  # noqa: E402
from schulki.retrieval.store import DocumentRecord, Store, StoredChunk  # noqa: E402
from schulki.retrieval.v1 import retrieval_service_pb2 as pb  # noqa: E402
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc  # noqa: E402

from benchmarks.smoke import parse_args  # noqa: E402
from tests.conftest import InProcessServer  # noqa: E402
from tests.retrieval_documents import pdf_bytes  # noqa: E402
from tests.retrieval_support import embeddings_server, requests, retrieval_config  # noqa: E402
from tests.weaviate_support import StoreEngine, WeaviateUnavailable, weaviate_for_tests  # noqa: E402

WORDS = (
    "Zelle Atom Energie Fluss Berg Stadt König Krieg Frieden Zahl Bruch Winkel Kreis Licht Strom Wasser Luft Pflanze Tier "
    "Mensch Sprache Gedicht Roman Drama Grammatik Verb Nomen Insel Meer Wüste Wald Klima Wetter Sonne Mond Planet Stern Rechner "
    "Netz Daten Algorithmus Musik Kunst Farbe Sport Spiel Gesetz Staat Wahl Geschichte Kaiser Burg Handel Markt Geld Arbeit "
    "Schule Klasse Lehrer Prüfung Aufgabe Lösung Frage"
).split()
FUNCTION_WORDS = (
    "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an werden aus er hat dass sie "
    "nach wird bei einer um am sind noch wie einem über einen so zum war haben nur oder aber vor zur bis mehr durch man "
    "sein wurde sei"
).split()
"""German's most common words, most common first: the head of the "zipf" texts."""
SYLLABLES = "ba be bi bo bu da de di do ka ke ki ko la le li lo lu ma me mi mo na ne ni no ra re ri ro sa se si so ta te ti to".split()
ENDINGS = ("", "n", "r", "s", "t", "ng", "ch", "l", "m", "ung", "heit", "keit", "lich", "isch")
CONTENT_WORDS = 30_000
DIMENSION = 384
BATCH_CHUNKS = 1000
ENGINES = ("embedded", "weaviate")


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


class Narrow:
    """Texts and questions of the 64 words above, drawn evenly: every query word is in a third of all chunks."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def texts(self, count: int, words: int) -> list[str]:
        return [sentence(self.rng, words) for _ in range(count)]

    def question(self) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(3))


class Zipf:
    """Texts and questions whose words follow Zipf's law: the function words first, then made-up content words."""

    def __init__(self, seed: int):
        rng = random.Random(seed)
        content: set[str] = set()
        while len(content) < CONTENT_WORDS:
            word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) + rng.choice(ENDINGS)
            if word not in FUNCTION_WORDS:
                content.add(word)
        ranked = sorted(content)
        rng.shuffle(ranked)  # a content word's rank does not follow its spelling
        self.words = np.array(FUNCTION_WORDS + ranked)
        weights = 1.0 / np.arange(1, len(self.words) + 1)
        self.p = weights / weights.sum()
        self.draws = np.random.default_rng(seed)

    def texts(self, count: int, words: int) -> list[str]:
        picked = self.words[self.draws.choice(len(self.words), size=(count, words), p=self.p)]
        return [" ".join(row) + "." for row in picked]

    def question(self) -> str:
        """Two function words and two content words, each drawn by its frequency among its kind."""
        head = len(FUNCTION_WORDS)
        function = self.draws.choice(head, size=2, p=self.p[:head] / self.p[:head].sum())
        content = head + self.draws.choice(len(self.words) - head, size=2, p=self.p[head:] / self.p[head:].sum())
        return " ".join(self.words[[function[0], content[0], function[1], content[1]]])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def unit_vector(rng: random.Random) -> list[float]:
    values = [rng.gauss(0.0, 1.0) for _ in range(DIMENSION)]
    norm = sum(v * v for v in values) ** 0.5
    return [v / norm for v in values]


class TimedIngest(NamedTuple):
    document: pb.Document
    spans: dict[str, float]
    """Seconds of each stage of the ingest (as the service's progress messages name them), in order."""
    total: float
    exported: pb.ExportDocumentResponse | None
    """The stored chunks, when asked for."""


def timed_ingest(file_name: str, data: bytes, export: bool = False) -> TimedIngest:
    """Ingest one file through a real retrieval service with real embeddings: the stored document, the seconds of each
    stage in order, the seconds in all, and (when asked) its exported chunks."""
    with tempfile.TemporaryDirectory() as folder, embeddings_server() as embedder:
        config = retrieval_config(Path(folder), embedder.address)
        with InProcessServer([retrieval.build(config)]) as server, server.channel() as channel:
            stub = pb_grpc.RetrievalServiceStub(channel)
            stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="bench"))
            started = time.perf_counter()
            stage_start: dict[str, float] = {}
            document = None
            for response in stub.IngestDocument(requests("bench", file_name, data), timeout=3600):
                now = time.perf_counter() - started
                if response.HasField("document"):
                    document = response.document
                else:
                    stage_start.setdefault(response.progress.stage, now)
            total = time.perf_counter() - started
            if document is None:
                raise RuntimeError(f"the ingest of {file_name} ended without a stored document")
            exported = None
            if export:
                exported = stub.ExportDocument(pb.ExportDocumentRequest(workspace="bench", document_id=document.document_id), timeout=600)
    stages = sorted(stage_start.items(), key=lambda item: item[1])
    spans = {name: (stages[i + 1][1] if i + 1 < len(stages) else total) - at for i, (name, at) in enumerate(stages)}
    return TimedIngest(document, spans, total, exported)


def bench_ingest(pages: int) -> None:
    rng = random.Random(1)
    data = pdf_bytes([" ".join(sentence(rng, 12) for _ in range(12)) for _ in range(pages)])
    document, spans, total, _ = timed_ingest("buch.pdf", data)
    print(
        f"ingest of a {pages}-page PDF ({len(data) / 1e6:.1f} MB, {document.chunk_count} chunks) through the service: {total:.1f} s in all"
    )
    print("  " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in spans.items()))
    print(f"  {document.chunk_count / spans['embedding']:.1f} chunks/s embedded (default model, 2 threads)")


def fill(store: Store, workspace: str, count: int, rng: random.Random, start: int) -> None:
    """Add synthetic documents of BATCH_CHUNKS chunks until the workspace holds count chunks."""
    have = start
    while have < count:
        n = min(BATCH_CHUNKS, count - have)
        document_id = f"synthetic{have:07d}"
        chunks = [
            StoredChunk(document_id, f"{document_id}.txt", Chunk(text=sentence(rng, 25), index=i), unit_vector(rng)) for i in range(n)
        ]
        store.add_document(workspace, DocumentRecord(document_id, f"{document_id}.txt", "txt", n), chunks)
        have += n


def measure(store: Store, workspace: str, queries: int, rng: random.Random, words: Narrow | Zipf | None = None) -> tuple[float, float]:
    """Hybrid top-5 latency p50 and p95 in ms; the questions from ``words`` (default: the 64 words, from ``rng``)."""
    words = words or Narrow(rng)
    times = []
    for _ in range(queries):
        query = words.question()
        vector = unit_vector(rng)
        started = time.perf_counter()
        hits = store.search(workspace, query, vector, 5, 0.5)
        times.append(time.perf_counter() - started)
        assert len(hits) == 5
    return percentile(times, 0.5) * 1000, percentile(times, 0.95) * 1000


def row(engine: str, size: int, index: str, figures: tuple[float, float], note: str) -> None:
    print(f"  {engine:<9} {size:>8}  {index:<22} {figures[0]:>7.1f} {figures[1]:>7.1f}   ({note})")


def search_embedded(sizes: list[int], queries: int, rng: random.Random) -> None:
    with tempfile.TemporaryDirectory() as folder:
        # No automatic index while filling: the exact search is measured first, then the index is built.
        config = RetrievalConfig(vector_index_min_rows=10**9, optimize_every_documents=10**9)
        store = EmbeddedStore(Path(folder), config)
        for size in sorted(sizes):
            workspace = f"bench{size}"  # each size its own workspace, so no index of a smaller size carries over
            store.create_workspace(workspace)
            started = time.perf_counter()
            fill(store, workspace, size, rng, 0)
            store.optimize(workspace)  # fold the new rows into the full-text index, as the service does every few ingests
            filled = time.perf_counter() - started
            row("embedded", size, "none (exact)", measure(store, workspace, queries, rng), f"insert and optimize: {filled:.0f} s")
            started = time.perf_counter()
            store.build_vector_index(workspace)
            built = time.perf_counter() - started
            row("embedded", size, "IVF-HNSW-SQ, cosine", measure(store, workspace, queries, rng), f"index built in {built:.0f} s")
            store.delete_workspace(workspace)
        store.close()


@contextlib.contextmanager
def weaviate_store() -> Iterator[Store]:
    """A Weaviate store in collections of its own on the test server (tests.weaviate_support), removed afterwards."""
    from schulki.retrieval.weaviate_store import WeaviateStore

    with weaviate_for_tests() as server:
        engine = StoreEngine("weaviate", server)
        store = WeaviateStore(engine.configure(RetrievalConfig()))
        try:
            yield store
        finally:
            store.close()
            engine.clean_up()


def search_weaviate(sizes: list[int], queries: int, rng: random.Random) -> None:
    try:
        with weaviate_store() as store:
            for size in sorted(sizes):
                workspace = f"bench{size}"
                store.create_workspace(workspace)
                started = time.perf_counter()
                fill(store, workspace, size, rng, 0)
                filled = time.perf_counter() - started
                row("weaviate", size, "HNSW, cosine", measure(store, workspace, queries, rng), f"insert: {filled:.0f} s")
                store.delete_workspace(workspace)
    except WeaviateUnavailable as reason:  # only raised while the server starts
        print(f"  weaviate  skipped: {reason}")


def bench_search(sizes: list[int], queries: int, engines: list[str]) -> None:
    rng = random.Random(2)
    print(f"search latency in each store, hybrid (BM25 + vector, weight 0.5), top 5, {queries} queries each;")
    print("  SYNTHETIC chunks inserted directly into the store (random German words, random unit vectors, 384 dims)")
    print(f"  {'store':<9} {'chunks':>8}  {'vector index':<22} {'p50 ms':>7} {'p95 ms':>7}")
    if "embedded" in engines:
        search_embedded(sizes, queries, rng)
    if "weaviate" in engines:
        search_weaviate(sizes, queries, rng)


def memory_mib() -> tuple[float, float]:
    """This process's resident memory now and at its peak (VmRSS, VmHWM), in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def synthetic_document(number: int, words: Narrow | Zipf, vectors: np.random.Generator) -> tuple[DocumentRecord, list[StoredChunk]]:
    """One synthetic document of BATCH_CHUNKS chunks: texts from ``words``, random unit vectors (numpy, for speed)."""
    document_id = f"synthetic{number:07d}"
    matrix = vectors.standard_normal((BATCH_CHUNKS, DIMENSION), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    texts = words.texts(BATCH_CHUNKS, 25)
    chunks = [StoredChunk(document_id, f"{document_id}.txt", Chunk(text=texts[i], index=i), matrix[i]) for i in range(BATCH_CHUNKS)]
    return DocumentRecord(document_id, f"{document_id}.txt", "txt", BATCH_CHUNKS), chunks


def search_at_scale(chunks: int, queries: int, text: str = "narrow", keep: Path | None = None) -> None:
    """One workspace of `chunks` chunks in the embedded store: insert, index build, memory, search while ingesting;
    in ``keep`` (kept, and reused when it holds such a workspace) or in a temporary folder."""
    vectors = np.random.default_rng(3)

    def word_source(seed: int) -> Narrow | Zipf:
        return Zipf(seed) if text == "zipf" else Narrow(random.Random(seed))

    load = lambda: "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())  # noqa: E731
    words = (
        f"Zipf's law over {len(FUNCTION_WORDS)} function words and {CONTENT_WORDS} content words"
        if text == "zipf"
        else f"{len(WORDS)} German words, evenly"
    )
    print(f"embedded store, one workspace of {chunks} SYNTHETIC chunks ({words}; random unit vectors, {DIMENSION} dims)")
    print(f"  start: RSS {memory_mib()[0]:.0f} MiB, {load()}")
    with contextlib.ExitStack() as cleanup:
        folder = keep or Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        # The index is built by hand below (timed); the upkeep of new rows is the service's default.
        store = EmbeddedStore(folder, RetrievalConfig(vector_index_min_rows=10**9))
        kept = folder / "kept.txt"  # what the kept workspace holds
        if keep and kept.exists() and kept.read_text() == f"{chunks} {text}" and store.chunk_count("bench") == chunks:
            started = time.perf_counter()
            store.recover()
            print(f"  reused the workspace of {chunks} chunks in {folder}, opened in {time.perf_counter() - started:.1f} s; {load()}")
        else:
            kept.unlink(missing_ok=True)
            if "bench" in store.list_workspaces():
                store.delete_workspace("bench")
            store.create_workspace("bench")
            started = time.perf_counter()
            texts = word_source(3)
            for number in range(0, chunks, BATCH_CHUNKS):
                store.add_document("bench", *synthetic_document(number, texts, vectors))
            store.optimize("bench")
            filled = time.perf_counter() - started
            print(
                f"  inserted {chunks} chunks in {filled:.1f} s ({chunks / filled:.0f} chunks/s, with optimize); RSS {memory_mib()[0]:.0f} MiB, {load()}"
            )
            started = time.perf_counter()
            store.build_vector_index("bench")
            built = time.perf_counter() - started
            print(f"  vector index (IVF-HNSW-SQ, cosine) built in {built:.1f} s; RSS {memory_mib()[0]:.0f} MiB, {load()}")
            if keep:
                kept.write_text(f"{chunks} {text}")
        stop, going, added = threading.Event(), threading.Event(), [0]

        def ingest() -> None:
            number = chunks
            while not stop.is_set():
                store.add_document("bench", *synthetic_document(number, texts_ingest, vectors_ingest))
                number += BATCH_CHUNKS
                added[0] += BATCH_CHUNKS
                going.set()

        texts_ingest, vectors_ingest = word_source(4), np.random.default_rng(4)
        quiet = measure(store, "bench", queries, random.Random(5), word_source(5) if text == "zipf" else None)
        print(f"  hybrid top 5, {queries} queries, no ingest: p50 {quiet[0]:.1f} ms, p95 {quiet[1]:.1f} ms; {load()}")
        writer = threading.Thread(target=ingest, name="ingest")
        started = time.perf_counter()
        writer.start()
        going.wait()  # the searches start once the first document is in, so the ingest runs beside all of them
        busy = measure(store, "bench", queries, random.Random(6), word_source(6) if text == "zipf" else None)
        stop.set()
        writer.join()
        seconds = time.perf_counter() - started
        print(
            f"  hybrid top 5, {queries} queries while ingesting ({added[0]} chunks added in {seconds:.1f} s): "
            f"p50 {busy[0]:.1f} ms, p95 {busy[1]:.1f} ms; {load()}"
        )
        rss, peak = memory_mib()
        upkeep = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the store's optimize and index build run there
        print(f"  memory: RSS {rss:.0f} MiB now, peak {peak:.0f} MiB; the largest child process peaked at {upkeep:.0f} MiB")
        if keep:  # the kept workspace goes back to its chunks, the deleted rows purged (as the store does a minute later)
            for number in range(chunks, chunks + added[0], BATCH_CHUNKS):
                store.delete_document("bench", f"synthetic{number:07d}")
            store.optimize("bench")
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=100, help="pages of the PDF to ingest (0 skips ingest)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000], help="chunk counts to search")
    parser.add_argument("--queries", type=int, default=100, help="searches per size")
    parser.add_argument("--store", nargs="+", choices=ENGINES, default=list(ENGINES), help="the stores to search (default: both)")
    parser.add_argument("--chunks", type=int, default=0, help="one embedded workspace of this many chunks, searched while ingesting")
    parser.add_argument(
        "--text",
        choices=("narrow", "zipf"),
        default="narrow",
        help="with --chunks: the chunks' words (narrow: 64 words evenly; zipf: as a language)",
    )
    parser.add_argument("--keep", type=Path, help="with --chunks: keep the workspace in this folder, and reuse it when it is there")
    args = parse_args(parser, pages=2, sizes=[100], queries=5, chunks=2000)
    if args.pages:
        bench_ingest(args.pages)
    if args.sizes:
        bench_search(args.sizes, args.queries, args.store)
    if args.chunks:
        search_at_scale(args.chunks, args.queries, args.text, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
