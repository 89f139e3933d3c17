"""Retrieval quality on a small German corpus: recall@5 and MRR for German questions.

The corpus (``corpus/``, Markdown, one section per fact) and the questions
(``questions.json``, each naming the file and section that answers it) are
written for this check: school subjects, questions worded differently from
the text. A hit is relevant when it comes from the right file and section.

    .venv/bin/python -m tests.quality.evaluate     # prints the figures for BM25, hybrid and vector search

Ingest and search go through the real retrieval service with the real
embeddings service (the default model), as in production.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from schulki.retrieval.v1 import retrieval_service_pb2 as pb

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
QUESTIONS = HERE / "questions.json"
WORKSPACE = "qualitaet"
DEPTH = 10
"""Hits looked at for the reciprocal rank; a question answered below this rank counts 0."""


@dataclass
class Figures:
    """Quality of one search setting over the question set."""

    vector_weight: float
    recall_at_5: float
    mrr: float
    questions: int


def questions() -> list[dict]:
    return json.loads(QUESTIONS.read_text())


def ingest_corpus(stub) -> int:
    """Create the workspace and ingest every corpus file; return how many."""
    from tests.retrieval_support import ingest

    stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace=WORKSPACE))
    files = sorted(CORPUS.glob("*.md"))
    for path in files:
        ingest(stub, WORKSPACE, path.name, path.read_bytes())
    return len(files)


def evaluate(stub, vector_weight: float) -> Figures:
    """recall@5 and MRR@10 of the question set at one vector weight."""
    found_in_5 = 0
    reciprocal = 0.0
    items = questions()
    for item in items:
        hits = stub.Search(pb.SearchRequest(workspace=WORKSPACE, query=item["question"], top_k=DEPTH,
                                            vector_weight=vector_weight), timeout=60).hits
        ranks = [i for i, h in enumerate(hits, 1) if h.source == item["file"] and h.section == item["section"]]
        if ranks:
            reciprocal += 1.0 / ranks[0]
            found_in_5 += ranks[0] <= 5
    return Figures(vector_weight, found_in_5 / len(items), reciprocal / len(items), len(items))


def main() -> int:
    from schulki import retrieval
    from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
    from tests.conftest import InProcessServer
    from tests.retrieval_support import embeddings_server, retrieval_config

    with tempfile.TemporaryDirectory() as folder, embeddings_server() as embedder:
        config = retrieval_config(Path(folder), embedder.address)
        with InProcessServer([retrieval.build(config)]) as server, server.channel() as channel:
            stub = pb_grpc.RetrievalServiceStub(channel)
            count = ingest_corpus(stub)
            print(f"corpus: {count} German documents, {len(questions())} German questions, default model all-MiniLM-L6-v2")
            print("vector_weight  search          recall@5  MRR@10")
            for weight, name in ((0.0, "BM25 only"), (config.retrieval.vector_weight, "hybrid (default)"), (1.0, "vector only")):
                f = evaluate(stub, weight)
                print(f"{weight:<13.2f}  {name:<16} {f.recall_at_5:>7.2f}  {f.mrr:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
