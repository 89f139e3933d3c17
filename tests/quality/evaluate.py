"""Retrieval quality on a small German corpus: recall@5 and MRR for BM25, vector and hybrid search.

The corpus (``corpus/``, Markdown, one section per fact) and the questions
(each naming the file and section that answers it) are written for this
check: school subjects, questions worded differently from the text. A hit is
relevant when it comes from the right file and section. Three question sets:

- ``questions.json``: German questions the fusion and its weight were tuned on;
- ``questions-heldout.json``: German questions the tuning never looked at, to
  show the choice holds on questions it was not made for;
- ``questions-en.json``: English questions about the German documents
  (cross-lingual), measured separately.

    .venv/bin/python -m tests.quality.evaluate           # figures per fusion, set and search
    .venv/bin/python -m tests.quality.evaluate --sweep   # hybrid at several weights, tuning set only
    .venv/bin/python -m tests.quality.evaluate --evidence-sweep  # hybrid at several keyword_evidence_min, tuning and English sets

Ingest and search go through the real retrieval service with the real
embeddings service (the default model), as in production.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from schulki.retrieval.v1 import retrieval_service_pb2 as pb

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
QUESTION_SETS = {
    "tuning (de)": HERE / "questions.json",
    "held-out (de)": HERE / "questions-heldout.json",
    "English about German": HERE / "questions-en.json",
}
WORKSPACE = "qualitaet"
DEPTH = 10
"""Hits looked at for the reciprocal rank; a question answered below this rank counts 0."""


@dataclass
class Figures:
    """Quality of one search setting over one question set."""

    vector_weight: float
    recall_at_5: float
    mrr: float
    questions: int


def questions(name: str = "tuning (de)") -> list[dict]:
    return json.loads(QUESTION_SETS[name].read_text())


def ingest_corpus(stub) -> int:
    """Create the workspace and ingest every corpus file; return how many."""
    from tests.retrieval_support import ingest

    stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace=WORKSPACE))
    files = sorted(CORPUS.glob("*.md"))
    for path in files:
        ingest(stub, WORKSPACE, path.name, path.read_bytes())
    return len(files)


def evaluate(stub, vector_weight: float, items: list[dict] | None = None) -> Figures:
    """recall@5 and MRR@10 of a question set (the tuning set unless given) at one vector weight."""
    items = questions() if items is None else items
    found_in_5 = 0
    reciprocal = 0.0
    for item in items:
        hits = stub.Search(
            pb.SearchRequest(workspace=WORKSPACE, query=item["question"], top_k=DEPTH, vector_weight=vector_weight), timeout=60
        ).hits
        ranks = [i for i, h in enumerate(hits, 1) if h.source == item["file"] and h.section == item["section"]]
        if ranks:
            reciprocal += 1.0 / ranks[0]
            found_in_5 += ranks[0] <= 5
    return Figures(vector_weight, found_in_5 / len(items), reciprocal / len(items), len(items))


def main() -> int:
    from schulki import retrieval
    from schulki.retrieval.store import FUSIONS
    from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc

    from tests.conftest import InProcessServer
    from tests.retrieval_support import embeddings_server, retrieval_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="hybrid at vector weights 0.1 .. 0.9 on the tuning set")
    parser.add_argument(
        "--evidence-sweep", action="store_true", help="default hybrid at keyword_evidence_min 0 .. 0.6 on the tuning and the English set"
    )
    args = parser.parse_args()
    if args.evidence_sweep:
        return evidence_sweep()
    with tempfile.TemporaryDirectory() as folder, embeddings_server() as embedder:
        for fusion in FUSIONS:
            config = retrieval_config(Path(folder) / fusion, embedder.address, fusion=fusion)
            with InProcessServer([retrieval.build(config)]) as server, server.channel() as channel:
                stub = pb_grpc.RetrievalServiceStub(channel)
                count = ingest_corpus(stub)
                default = config.retrieval.vector_weight
                print(f"\nfusion {fusion}: {count} German documents, default model all-MiniLM-L6-v2")
                if args.sweep:
                    items = questions()
                    for weight in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
                        f = evaluate(stub, weight, items)
                        print(f"  vector_weight {weight:.1f}: recall@5 {f.recall_at_5:.2f}  MRR@10 {f.mrr:.3f}")
                    continue
                print(f"  {'questions':<27} {'search':<20} recall@5  MRR@10")
                for name in QUESTION_SETS:
                    items = questions(name)
                    for weight, search in ((0.0, "BM25 only"), (default, f"hybrid ({default:g})"), (1.0, "vector only")):
                        f = evaluate(stub, weight, items)
                        print(f"  {f'{name} ({len(items)})':<27} {search:<20} {f.recall_at_5:>7.2f}  {f.mrr:>6.3f}")
    return 0


def evidence_sweep() -> int:
    """Default hybrid search at several retrieval.keyword_evidence_min against the better single list; never the held-out set."""
    from schulki import retrieval
    from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc

    from tests.conftest import InProcessServer
    from tests.retrieval_support import embeddings_server, retrieval_config

    names = ("tuning (de)", "English about German")
    with tempfile.TemporaryDirectory() as folder, embeddings_server() as embedder:
        print(f"  {'keyword_evidence_min':<21}" + "".join(f"{name:>28}" for name in names))
        for step in range(13):
            minimum = step / 20
            config = retrieval_config(Path(folder) / str(step), embedder.address, keyword_evidence_min=minimum)
            with InProcessServer([retrieval.build(config)]) as server, server.channel() as channel:
                stub = pb_grpc.RetrievalServiceStub(channel)
                ingest_corpus(stub)
                row = f"  {minimum:<21.2f}"
                for name in names:
                    items = questions(name)
                    single = [evaluate(stub, weight, items) for weight in (0.0, 1.0)] if step == 0 else []
                    if single:
                        best = (max(f.recall_at_5 for f in single), max(f.mrr for f in single))
                        print(f"  better single list, {name}: recall@5 {best[0]:.2f}, MRR@10 {best[1]:.3f}")
                    f = evaluate(stub, config.retrieval.vector_weight, items)
                    row += f"{f.recall_at_5:>21.2f} {f.mrr:>6.3f}"
                print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
