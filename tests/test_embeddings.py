"""The embeddings service with the real default model (all-MiniLM-L6-v2, GGUF), over a real socket."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from schulki.config import Config
from schulki.embeddings import build
from schulki.embeddings.v1 import embeddings_service_pb2 as pb
from schulki.embeddings.v1 import embeddings_service_pb2_grpc as pb_grpc

from tests.conftest import InProcessServer, ServiceProcess
from tests.service_support import service_fixtures

CAPITAL = "Die Hauptstadt von Deutschland ist Berlin."
CAPITAL_PARAPHRASE = "Berlin ist die deutsche Hauptstadt."
PLANTS = "Photosynthese wandelt Lichtenergie in chemische Energie um."
PLANTS_PARAPHRASE = "Pflanzen nutzen Licht, um chemische Energie zu erzeugen."
UNRELATED = "Ich esse gerne Pizza mit Käse."
LONG = "Die Schülerinnen und Schüler lesen im Deutschunterricht einen Roman von Theodor Fontane. " * 60


def make_service():
    config = Config()
    config.embeddings.max_texts = 64
    return build(config)


server, channel, stub = service_fixtures(make_service, pb_grpc.EmbeddingsServiceStub)


def vectors(response: pb.EmbedResponse) -> np.ndarray:
    return np.array([e.values for e in response.embeddings], dtype=np.float32)


def test_german_paraphrases_score_clearly_above_an_unrelated_sentence(stub):
    response = stub.Embed(pb.EmbedRequest(texts=[CAPITAL, CAPITAL_PARAPHRASE, PLANTS, PLANTS_PARAPHRASE, UNRELATED]), timeout=60)
    assert response.dimension == 384
    v = vectors(response)
    assert v.shape == (5, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    capital, unrelated = float(v[0] @ v[1]), float(v[0] @ v[4])
    assert capital > unrelated + 0.3, (capital, unrelated)
    plants = float(v[2] @ v[3])
    assert plants > float(v[2] @ v[4]) + 0.15 and plants > float(v[2] @ v[0]), v @ v.T
    assert response.model_name


def test_batched_vectors_equal_one_by_one_vectors(stub):
    # Different lengths, so the batch holds sequences of several sizes, and more than one batch is needed.
    texts = [f"Satz {i}: " + "Im Herbst fallen die bunten Blätter von den Bäumen. " * (i % 7 + 1) for i in range(40)] + [LONG]
    batched = stub.Embed(pb.EmbedRequest(texts=texts), timeout=120)
    assert len(batched.embeddings) == len(texts)
    for text, together in zip(texts, batched.embeddings, strict=True):
        alone = stub.Embed(pb.EmbedRequest(texts=[text]), timeout=60).embeddings[0]
        assert alone.token_count == together.token_count
        assert np.abs(np.array(alone.values) - np.array(together.values)).max() < 1e-4, text[:20]
    # The vectors follow the texts: neighbours differ, equal texts agree.
    again = stub.Embed(pb.EmbedRequest(texts=[texts[3], texts[0], texts[3]]), timeout=60)
    v = vectors(again)
    assert np.abs(v[0] - v[2]).max() < 1e-4
    assert np.abs(v[0] - vectors(batched)[3]).max() < 1e-4
    assert np.abs(v[1] - vectors(batched)[0]).max() < 1e-4


def test_an_over_long_text_is_truncated_and_the_response_says_so(stub):
    info = stub.GetModelInfo(pb.GetModelInfoRequest())
    assert (info.dimension, info.max_tokens, info.quant) == (384, 512, "F16")
    response = stub.Embed(pb.EmbedRequest(texts=[LONG, CAPITAL]), timeout=60)
    long, short = response.embeddings
    assert long.truncated and long.token_count == info.max_tokens
    assert not short.truncated and 5 < short.token_count < 30
    assert "512" in response.truncation_rule
    # Only the first tokens count: the long text and its first half give the same vector.
    head = stub.Embed(pb.EmbedRequest(texts=[LONG[: len(LONG) // 2]]), timeout=60).embeddings[0]
    assert head.truncated
    assert np.abs(np.array(head.values) - np.array(long.values)).max() < 1e-4


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        ([], "texts is empty"),
        ([""], "text 0 is empty"),
        ([CAPITAL, "   \n"], "text 1 is empty"),
        ([CAPITAL] * 65, "too many texts"),
    ],
)
def test_bad_requests_are_invalid_argument(stub, texts, expected):
    with pytest.raises(grpc.RpcError) as error:
        stub.Embed(pb.EmbedRequest(texts=texts), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.value.details()


def test_schulki_serve_embeddings_serves_and_stops_cleanly():
    process = ServiceProcess("embeddings", env={"SCHULKI_EMBEDDINGS__THREADS": "1"}).start()
    try:
        with grpc.insecure_channel(process.address) as channel:
            response = pb_grpc.EmbeddingsServiceStub(channel).Embed(pb.EmbedRequest(texts=[CAPITAL]), timeout=60)
        assert response.dimension == 384 and len(response.embeddings[0].values) == 384
    finally:
        code, log = process.stop()
    assert code == 0, log
    assert CAPITAL not in log  # the text of a request is never logged


def test_a_missing_model_or_a_chat_model_stops_start_up_with_one_line(tmp_path, config):
    from schulki.models.defaults import chat_model_path

    missing = tmp_path / "nowhere.gguf"
    for model, expected in ((missing, f"model file not found: {missing}"), (chat_model_path(config), "pools its tokens as 'none'")):
        process = ServiceProcess("embeddings", env={"SCHULKI_EMBEDDINGS__MODEL_PATH": str(model)}).start(wait=False)
        code, log = process.stop(terminate=False)
        assert code == 2
        assert expected in log
        assert "Traceback" not in log


def test_queries_and_passages_get_the_models_own_prefixes(server):
    """multilingual-e5 expects "query: " and "passage: "; the service adds them from the catalog or the settings."""
    from pathlib import Path

    from schulki.embeddings.service import prefixes

    e5 = prefixes(Config().embeddings, Path("/models/multilingual-e5-large-q8_0.gguf"))
    assert (e5[pb.TEXT_PURPOSE_QUERY], e5[pb.TEXT_PURPOSE_DOCUMENT]) == ("query: ", "passage: ")
    unknown = prefixes(Config().embeddings, Path("/models/my-own-model.gguf"))
    assert unknown == {pb.TEXT_PURPOSE_QUERY: "", pb.TEXT_PURPOSE_DOCUMENT: ""}

    config = Config()
    config.embeddings.query_prefix, config.embeddings.document_prefix = "query: ", "passage: "
    with InProcessServer([build(config)]) as prefixed, prefixed.channel() as channel:
        stub = pb_grpc.EmbeddingsServiceStub(channel)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
        assert (info.query_prefix, info.document_prefix) == ("query: ", "passage: ")
        as_query = stub.Embed(pb.EmbedRequest(texts=[CAPITAL], purpose=pb.TEXT_PURPOSE_QUERY), timeout=60)
        as_passage = stub.Embed(pb.EmbedRequest(texts=[CAPITAL], purpose=pb.TEXT_PURPOSE_DOCUMENT), timeout=60)
        written_out = stub.Embed(pb.EmbedRequest(texts=["query: " + CAPITAL, "passage: " + CAPITAL]), timeout=60)
        plain = stub.Embed(pb.EmbedRequest(texts=[CAPITAL]), timeout=60)
    np.testing.assert_allclose(vectors(as_query)[0], vectors(written_out)[0], atol=1e-4)  # as in the batching test
    np.testing.assert_allclose(vectors(as_passage)[0], vectors(written_out)[1], atol=1e-4)
    assert not np.allclose(vectors(as_query)[0], vectors(plain)[0], atol=1e-3)  # the prefix really went in
    assert as_query.embeddings[0].token_count > plain.embeddings[0].token_count

    # The default model (all-MiniLM-L6-v2) wants no prefixes: the purpose changes nothing.
    with server.channel() as channel:
        stub = pb_grpc.EmbeddingsServiceStub(channel)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
        assert (info.query_prefix, info.document_prefix) == ("", "")
        query = stub.Embed(pb.EmbedRequest(texts=[CAPITAL], purpose=pb.TEXT_PURPOSE_QUERY), timeout=60)
    np.testing.assert_allclose(vectors(query)[0], vectors(plain)[0], atol=1e-4)
