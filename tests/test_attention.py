"""The attention view's weights, read from llama.cpp's computation graph by the inference service's Attention RPC."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
from schulki.config import Config
from schulki.inference import build
from schulki.inference.attention import AttentionReader, shown_layers
from schulki.inference.v1 import inference_service_pb2 as pb
from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc
from schulki.models.defaults import chat_model_path
from schulki.runtime import llama_adapter as lc

from tests.service_support import service_fixtures

SENTENCE = "Gut Ding braucht Weile"


def make_service():
    config = Config()
    config.inference.threads = 1
    config.inference.parallel_sequences = 2
    config.inference.context_length = 512
    return build(config)


server, channel, stub = service_fixtures(make_service, pb_grpc.InferenceServiceStub)


def maps_of(answer: pb.AttentionResponse) -> dict[int, np.ndarray]:
    n = len(answer.tokens)
    return {layer.layer: np.array([list(h.weights) for h in layer.heads], dtype=np.float64).reshape(-1, n, n) for layer in answer.layers}


def test_the_heat_map_of_a_short_sentence_is_causal_sums_to_one_per_row_and_comes_from_the_model(stub):
    answer = stub.Attention(pb.AttentionRequest(text=SENTENCE), timeout=120)
    assert not answer.unavailable and answer.architecture == "gemma3"
    assert b"".join(token.piece for token in answer.tokens[1:]).decode() == SENTENCE  # the start token first
    n = len(answer.tokens)
    maps = maps_of(answer)
    assert sorted(maps) == list(range(answer.layer_count)) == list(range(18))  # Gemma 3 270M: 18 layers, all shown
    for weights in maps.values():
        assert weights.shape == (4, n, n)  # four heads
        assert np.allclose(weights.sum(axis=2), 1.0, atol=1e-5)
        assert np.all(weights[:, np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] == 0.0)  # no token sees a later one
        assert np.all(weights >= 0)
    # The model's own: layers and heads look differently (a uniform or copied table would not).
    assert np.abs(maps[0] - maps[17]).max() > 0.05
    assert np.abs(maps[5][0] - maps[5][1]).max() > 0.05
    assert not np.allclose(maps[0][0][n - 1], np.full(n, 1 / n), atol=0.05)


def test_the_weights_are_the_softmax_of_the_models_attention_scores_recomputed_from_them(stub):
    """A reader of its own reads the scores K·Q (the node "kq-<layer>" before the softmax) beside the weights; the
    softmax over the tokens before each, recomputed here, gives the service's weights."""
    answer = stub.Attention(pb.AttentionRequest(text=SENTENCE), timeout=120)
    served = maps_of(answer)
    model, _ = lc.load_model(chat_model_path(Config()))
    reader = AttentionReader(model, max_tokens=16, max_layers=64, time_limit_s=60, threads=1)
    try:
        tokens = [token.token_id for token in answer.tokens]
        read = reader.read(tokens, nodes=tuple(f"kq-{layer}" for layer in (0, 9, 17)))
    finally:
        reader.close()
        model.close()
    n = len(tokens)
    for layer in (0, 9, 17):
        scores = read.nodes[f"kq-{layer}"][0, :, :n, :n].astype(np.float64)  # Gemma 3 scales Q before K·Q: no scale here
        scores[:, np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]] = -np.inf
        expected = np.exp(scores - scores.max(axis=2, keepdims=True))
        expected /= expected.sum(axis=2, keepdims=True)
        assert np.abs(expected - served[layer]).max() < 1e-4, layer


def test_a_sentence_of_more_tokens_than_allowed_is_refused(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.Attention(pb.AttentionRequest(text="Gut Ding braucht Weile, und Rom wurde auch nicht an einem Tag erbaut."), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "zu lang" in caught.value.details() and "16" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Attention(pb.AttentionRequest(text="  "), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_view_is_refused_while_the_class_is_chatting(stub):
    answering = threading.Event()
    request = pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content="Erzähl eine lange Geschichte.")], max_tokens=400)
    stream = stub.Chat(request, timeout=300)

    def read() -> None:
        try:
            for event in stream:
                if event.HasField("text"):
                    answering.set()
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.CANCELLED  # the test hangs up once it has seen the refusal

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert answering.wait(120)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Attention(pb.AttentionRequest(text=SENTENCE), timeout=60)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Klasse arbeitet" in caught.value.details()
    finally:
        stream.cancel()
        reader.join()


def test_a_deep_model_shows_layers_spread_from_first_to_last():
    assert shown_layers(18, 48) == list(range(18))
    assert shown_layers(80, 5) == [0, 20, 40, 59, 79]
    assert shown_layers(80, 1) == [79]
