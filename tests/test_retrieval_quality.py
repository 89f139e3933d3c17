"""Retrieval quality: German questions over a small German corpus, through the real services, on each store engine.

Three question sets (tests/quality/evaluate.py): German questions the default
fusion and weight were chosen on, held-out German questions that choice never
looked at, and English questions about the German documents. The figures are
printed (run with -s, or run python -m tests.quality.evaluate).

On all three sets hybrid search with the default settings must rank at least
as well as the better of BM25 and vector search alone, in recall@5 and in MRR.
The English questions are where BM25 cannot help (German text, English words):
hybrid search then follows the vectors (store.hybrid_weight), so it must reach
vector search's figures there. Everything is deterministic (the same model,
corpus and questions give the same ranks), so there is no tolerance.
Both engines must pass alike: the embedded store (LanceDB's BM25 with a German
stemmer) and Weaviate (its BM25 over whole words), fused the same way.
"""

from __future__ import annotations

import pytest
from schulki import retrieval
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc

from tests.conftest import InProcessServer
from tests.quality.evaluate import QUESTION_SETS, evaluate, ingest_corpus, questions
from tests.retrieval_support import embeddings_server, retrieval_config


@pytest.fixture(scope="module")
def service(tmp_path_factory, store_engine):
    with embeddings_server() as embedder:
        config = retrieval_config(tmp_path_factory.mktemp("quality"), embedder.address, store_engine)
        with InProcessServer([retrieval.build(config)]) as server, server.channel() as channel:
            stub = pb_grpc.RetrievalServiceStub(channel)
            assert ingest_corpus(stub) == 15
            yield stub, config.retrieval.vector_weight, store_engine.name


def figures_of(stub, default_weight, engine, name):
    items = questions(name)
    figures = {search: evaluate(stub, weight, items) for search, weight in (("BM25", 0.0), ("hybrid", default_weight), ("vector", 1.0))}
    print(f"\n  {'engine':<9} {'questions':<27} {'search':<7} recall@5  MRR@10")
    for search, f in figures.items():
        print(f"  {engine:<9} {f'{name} ({f.questions})':<27} {search:<7} {f.recall_at_5:>8.2f}  {f.mrr:>6.3f}")
    return figures


def test_the_question_sets_are_large_enough_and_apart():
    german = questions("tuning (de)") + questions("held-out (de)")
    assert len(german) >= 100
    assert len(questions("held-out (de)")) >= 30
    assert len(questions("English about German")) >= 30
    texts = [q["question"] for name in QUESTION_SETS for q in questions(name)]
    assert len(texts) == len(set(texts)), "a question appears twice"


@pytest.mark.parametrize("name", list(QUESTION_SETS))
def test_hybrid_ranks_no_worse_than_the_better_single_list(service, name):
    figures = figures_of(*service, name)
    hybrid, bm25, vector = figures["hybrid"], figures["BM25"], figures["vector"]
    assert hybrid.recall_at_5 >= max(bm25.recall_at_5, vector.recall_at_5)
    assert hybrid.mrr >= max(bm25.mrr, vector.mrr)
    if name == "English about German":
        # The default model is English-only, yet its vectors find most German passages for
        # English questions (0.81), BM25 hardly any (0.26): floors that catch a broken path.
        assert vector.recall_at_5 >= 0.7
        assert bm25.recall_at_5 <= 0.5
    else:
        assert hybrid.recall_at_5 >= 0.9  # and the set is answerable: ingest, chunks and sections work
