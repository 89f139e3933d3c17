"""One conformance suite for both stores: the embedded store (LanceDB) and Weaviate.

The Weaviate run needs a server: the pinned one ./dev test builds and the
tests start (tests/weaviate_support.py), or one of your own at WEAVIATE_URL
(WEAVIATE_API_KEY when it wants one; WEAVIATE_GRPC_PORT when its gRPC port is
not 50051). Each run uses its own collections and removes them afterwards.

Vectors here come from a small hashing of words (each word adds to one of 384
dimensions), so that "shares the most words" is also "nearest vector": the
suite checks the stores, not a model.
"""

from __future__ import annotations

import hashlib
import math

import pytest
from schulki.config import RetrievalConfig
from schulki.retrieval.documents import Chunk
from schulki.retrieval.store import FUSIONS, Candidate, DocumentRecord, StoredChunk, fuse, hybrid_weight, keyword_evidence
from schulki.runtime.errors import AlreadyExists, InvalidInput, NotFound, TooLarge

DIMENSION = 384


def vector_of(text: str) -> list[float]:
    values = [0.0] * DIMENSION
    for raw in text.lower().split():
        word = raw.strip(".,:;!?()")
        values[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIMENSION] += 1.0
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def document(document_id: str, source: str, parts: list[tuple[str, int, str]]) -> tuple[DocumentRecord, list[StoredChunk]]:
    """A record and its chunks from (text, page, section) parts."""
    chunks = [
        StoredChunk(document_id, source, Chunk(text=t, index=i, page=p, section=s), vector_of(t)) for i, (t, p, s) in enumerate(parts)
    ]
    return DocumentRecord(document_id=document_id, source=source, format="pdf", chunk_count=len(chunks), page_count=2), chunks


BIOLOGY = document(
    "bio1",
    "biologie.pdf",
    [
        ("Die Mitochondrien sind die Kraftwerke der Zelle.", 1, "Zellbiologie"),
        ("Chloroplasten betreiben Fotosynthese mit Sonnenlicht.", 2, "Pflanzen"),
    ],
)
HISTORY = document(
    "ges1",
    "geschichte.pdf",
    [
        ("Der Dreißigjährige Krieg dauerte von 1618 bis 1648.", 1, "Neuzeit"),
        ("Die Französische Revolution begann 1789 in Paris.", 2, "Revolution"),
    ],
)


@pytest.fixture(params=["embedded", "weaviate"])
def open_store(request, tmp_path):
    """A function that opens the store under test on the same data each time (as a restarted service would)."""
    yield from opener(request, request.param, tmp_path, "relative_score")


def opener(request, engine: str, tmp_path, fusion: str):
    opened = []
    if engine == "embedded":
        from schulki.retrieval.embedded_store import EmbeddedStore

        config = RetrievalConfig(store_path=tmp_path, fusion=fusion)

        def make():
            store = EmbeddedStore(tmp_path, config)
            opened.append(store)
            return store
    else:
        from schulki.retrieval.weaviate_store import WeaviateStore

        from tests.weaviate_support import StoreEngine

        engine_settings = StoreEngine("weaviate", request.getfixturevalue("weaviate_server"))
        config = engine_settings.configure(RetrievalConfig(fusion=fusion))

        def make():
            store = WeaviateStore(config)
            opened.append(store)
            return store

    try:
        yield make
    finally:
        if engine == "weaviate" and opened:
            opened[-1].client.collections.delete([opened[-1].chunks_name, opened[-1].documents_name])
        for store in opened:
            store.close()


@pytest.fixture()
def store(open_store):
    return open_store()


@pytest.fixture(params=[(engine, fusion) for engine in ("embedded", "weaviate") for fusion in FUSIONS], ids=str)
def store_and_fusion(request, tmp_path):
    """Each store with each fusion, as (store, fusion)."""
    engine, fusion = request.param
    for make in opener(request, engine, tmp_path, fusion):
        yield make(), fusion


def hybrid(store, workspace: str, query: str, top_k: int = 5, weight: float = 0.5):
    return store.search(workspace, query, vector_of(query), top_k, weight)


def test_workspaces_have_names_and_exist_once(store):
    store.create_workspace("klasse-7a")
    store.create_workspace("Kurs_2")
    assert store.list_workspaces() == ["Kurs_2", "klasse-7a"]
    with pytest.raises(AlreadyExists):
        store.create_workspace("klasse-7a")
    for bad in ("", "a b", "ö", "x" * 65, "../x"):
        with pytest.raises(InvalidInput):
            store.create_workspace(bad)
    store.add_document("klasse-7a", *BIOLOGY)
    assert store.delete_workspace("klasse-7a") == 1
    assert store.list_workspaces() == ["Kurs_2"]
    for call in (
        lambda: store.delete_workspace("klasse-7a"),
        lambda: store.list_documents("klasse-7a"),
        lambda: hybrid(store, "klasse-7a", "Zelle"),
        lambda: store.add_document("klasse-7a", *HISTORY),
    ):
        with pytest.raises(NotFound):
            call()
    store.create_workspace("klasse-7a")
    assert store.list_documents("klasse-7a") == []
    assert hybrid(store, "klasse-7a", "Mitochondrien Zelle") == []


def test_hybrid_search_finds_chunks_with_source_page_and_section(store):
    store.create_workspace("suche")
    store.add_document("suche", *BIOLOGY)
    store.add_document("suche", *HISTORY)
    for weight in (0.0, 0.5, 1.0):
        hits = hybrid(store, "suche", "Wann begann die Französische Revolution", weight=weight)
        best = hits[0]
        assert (best.document_id, best.chunk_index, best.page, best.section, best.source) == (
            "ges1",
            1,
            2,
            "Revolution",
            "geschichte.pdf",
        ), weight
        assert best.text == "Die Französische Revolution begann 1789 in Paris."
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(hybrid(store, "suche", "Zelle Krieg Revolution Fotosynthese", top_k=3)) == 3
    assert [d.document_id for d in store.list_documents("suche")] in (["ges1", "bio1"], ["bio1", "ges1"])
    with pytest.raises(InvalidInput):
        hybrid(store, "suche", "Zelle", weight=1.5)


def test_a_workspace_never_sees_another_workspaces_chunks(store):
    store.create_workspace("a")
    store.create_workspace("b")
    store.add_document("a", *BIOLOGY)
    store.add_document("b", *HISTORY)
    for weight in (0.0, 0.5, 1.0):
        assert {h.document_id for h in hybrid(store, "a", "Krieg Revolution Zelle", top_k=50, weight=weight)} == {"bio1"}
        assert {h.document_id for h in hybrid(store, "b", "Krieg Revolution Zelle", top_k=50, weight=weight)} == {"ges1"}
    store.delete_workspace("a")
    assert {h.document_id for h in hybrid(store, "b", "Krieg Revolution Zelle", top_k=50)} == {"ges1"}


def test_a_deleted_document_is_gone_and_the_others_stay(store):
    store.create_workspace("w")
    store.add_document("w", *BIOLOGY)
    store.add_document("w", *HISTORY)
    assert store.delete_document("w", "bio1") == 2
    assert [d.document_id for d in store.list_documents("w")] == ["ges1"]
    assert {h.document_id for h in hybrid(store, "w", "Mitochondrien Zelle Chloroplasten", top_k=50)} == {"ges1"}
    with pytest.raises(NotFound):
        store.delete_document("w", "bio1")


def test_a_failed_ingest_leaves_no_chunks(store, monkeypatch):
    store.create_workspace("w")
    store.add_document("w", *HISTORY)

    def fail(workspace, record):
        raise OSError("disk full")

    monkeypatch.setattr(store, "_record", fail)
    with pytest.raises(OSError):
        store.add_document("w", *BIOLOGY)
    monkeypatch.undo()
    assert [d.document_id for d in store.list_documents("w")] == ["ges1"]
    assert store._chunk_document_ids("w") == {"ges1"}
    assert {h.document_id for h in hybrid(store, "w", "Mitochondrien Zelle", top_k=50)} == {"ges1"}


def test_chunks_without_a_manifest_record_are_never_found_and_removed_at_the_next_start(open_store):
    store = open_store()
    store.create_workspace("w")
    store.add_document("w", *HISTORY)
    record, chunks = BIOLOGY
    # The state a crash leaves between writing the chunks and recording the document:
    store._pending.setdefault("w", set()).add(record.document_id)
    store._write_chunks("w", chunks)
    assert {h.document_id for h in hybrid(store, "w", "Mitochondrien Zelle", top_k=50)} == {"ges1"}
    store.close()
    again = open_store()  # the restarted service
    assert again.recover() == 1
    assert again._chunk_document_ids("w") == {"ges1"}
    assert [d.document_id for d in again.list_documents("w")] == ["ges1"]
    assert hybrid(again, "w", "Dreißigjährige Krieg")[0].document_id == "ges1"
    assert again.recover() == 0


def test_a_documents_text_comes_back_in_order_for_an_export(store):
    store.create_workspace("w")
    store.add_document("w", *BIOLOGY)
    store.add_document("w", *HISTORY)
    chunks = store.document_chunks("w", "ges1")
    assert [(c.index, c.page, c.section) for c in chunks] == [(0, 1, "Neuzeit"), (1, 2, "Revolution")]
    assert chunks[1].text == "Die Französische Revolution begann 1789 in Paris."
    with pytest.raises(NotFound):
        store.document_chunks("w", "gibt-es-nicht")


def test_a_document_over_the_workspaces_quota_is_refused_and_nothing_is_written(store):
    store.create_workspace("w")
    record, chunks = BIOLOGY
    record = DocumentRecord(**{**record.__dict__, "size_bytes": 600, "text_bytes": 90})
    store.add_document("w", record, chunks, quota_bytes=1000)
    assert store.used_bytes("w") == 600
    second, second_chunks = HISTORY
    second = DocumentRecord(**{**second.__dict__, "size_bytes": 100, "text_bytes": 500})  # counts its text: 500
    with pytest.raises(TooLarge, match="Speicherplatz"):
        store.add_document("w", second, second_chunks, quota_bytes=1000)
    assert [d.document_id for d in store.list_documents("w")] == ["bio1"]
    assert store._chunk_document_ids("w") == {"bio1"}
    store.add_document("w", second, second_chunks, quota_bytes=1100)
    assert store.used_bytes("w") == 1100


FUSION_DOCUMENT = document(
    "fus1",
    "fusion.pdf",
    [
        ("Der Vulkan Vesuv zerstörte Pompeji im Jahr 79.", 1, "Vulkane"),
        ("Vulkan Vulkan Vulkan: Lava, Asche und Magma.", 1, "Vulkane"),
        ("Pompeji lag am Golf von Neapel, nahe dem Vesuv.", 2, "Orte"),
        ("Ausbruch des Vesuv: Asche bedeckte Pompeji und Herculaneum im Jahr 79.", 2, "Orte"),
        ("Die Asche konservierte Häuser, Brot und Menschen in Pompeji.", 3, "Funde"),
        ("Magma steigt im Vulkan auf, bis der Druck zu groß wird.", 3, "Funde"),
    ],
)


def test_hybrid_search_fuses_its_two_lists_as_the_fusion_says(store_and_fusion):
    """Both stores rank hybrid hits exactly as store.fuse ranks their own BM25 and vector lists.

    So the embedded store and Weaviate (rankedFusion / relativeScoreFusion) rank alike,
    and a store that used the other fusion would fail: on this data the two orders differ.
    (A single list's hit scores are that list's share of the fusion: enough for both fusions
    under relative_score, the order alone under rrf.)
    """
    store, fusion = store_and_fusion
    store.create_workspace("fusion")
    store.add_document("fusion", *FUSION_DOCUMENT)
    query, weight, everything = "Vesuv Asche", 0.3, len(FUSION_DOCUMENT[1])

    def candidates(vector_weight):
        return [
            Candidate(key=(h.document_id, h.chunk_index), score=h.score, hit=h)
            for h in hybrid(store, "fusion", query, top_k=everything, weight=vector_weight)
        ]

    keyword, similar = candidates(0.0), candidates(1.0)
    expected = {f: [h.chunk_index for h in fuse(keyword, similar, weight, everything, f)] for f in FUSIONS}
    if fusion == "relative_score":  # the single lists' scores are the scaled raw scores here, so both fusions apply
        assert expected["rrf"] != expected["relative_score"]
    got = [h.chunk_index for h in hybrid(store, "fusion", query, top_k=everything, weight=weight)]
    assert got == expected[fusion]


def test_hybrid_search_follows_the_vectors_when_the_question_shares_few_words_with_the_workspace(store):
    """An English question about German documents: BM25 matches only "Paris", the vectors the passage asked for.

    Both stores drop BM25's list when less than retrieval.keyword_evidence_min of the
    question's words occur in its best passages (store.hybrid_weight); a German question
    with the same vector keeps it, and a weight of exactly 0 still means BM25 alone.
    """
    store.create_workspace("sprachen")
    store.add_document("sprachen", *BIOLOGY)
    store.add_document("sprachen", *HISTORY)
    mitochondria = vector_of("Die Mitochondrien sind die Kraftwerke der Zelle.")
    english = "What powers the cells of Paris?"  # 1 of 5 words in the workspace: "Paris"
    assert store.search("sprachen", english, mitochondria, 3, 0.3)[0].text.startswith("Die Mitochondrien")
    assert store.search("sprachen", english, mitochondria, 3, 0.0)[0].text.startswith("Die Französische Revolution")
    german = "Revolution in Paris"
    assert store.search("sprachen", german, mitochondria, 3, 0.3)[0].text.startswith("Die Französische Revolution")


def test_keyword_evidence_is_the_share_of_question_words_that_begin_a_word_of_the_passages():
    passages = ["Der Zellkern enthält die Erbinformation der Zellen.", "Der Dreißigjährige Krieg dauerte 30 Jahre."]
    assert keyword_evidence("Wann begann der Krieg?", passages) == 0.5  # der, Krieg of wann, begann, der, krieg
    assert keyword_evidence("Was steckt in der Zelle?", passages) == 0.5  # der, Zelle ("Zellen"); "in" is too short to count
    assert keyword_evidence("Where is the genetic information of a cell?", passages) == 0.0  # "information" only ends a word
    assert keyword_evidence("Pi?", passages) == 1.0  # no word of three letters: no evidence against BM25
    assert keyword_evidence("Krieg", []) == 0.0


def test_hybrid_weight_moves_to_the_vectors_only_below_the_evidence_and_keeps_single_lists():
    passages = ["Die Französische Revolution begann 1789 in Paris."]
    assert hybrid_weight("What powers the cells of Paris?", passages, 0.1, 0.3) == 1.0
    assert hybrid_weight("Wann begann die Revolution in Paris?", passages, 0.1, 0.3) == 0.1
    assert hybrid_weight("What powers the cells of Paris?", passages, 0.0, 0.3) == 0.0  # BM25 alone was asked for
    assert hybrid_weight("What powers the cells of Paris?", passages, 0.1, 0.0) == 0.1  # 0 turns the rule off
    assert hybrid_weight("What powers the cells of Paris?", iter(passages * 50), 0.1, 0.3) == 1.0  # reads a few passages only
