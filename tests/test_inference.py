"""The inference service with the real default model, over a real socket."""

from __future__ import annotations

import re
import threading

import grpc
import pytest
from schulki.config import Config
from schulki.inference import build
from schulki.inference.v1 import inference_service_pb2 as pb
from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc

from tests.conftest import InProcessServer, assert_serving
from tests.service_support import service_fixtures, wait_until

GERMAN_WORDS = {"der", "die", "das", "und", "ist", "ein", "eine", "nicht", "von", "den", "mit", "du", "sie", "deutschland", "was", "wie"}
QUESTION = [
    pb.Message(role=pb.ROLE_SYSTEM, content="Du bist ein hilfreicher Assistent. Antworte auf Deutsch."),
    pb.Message(role=pb.ROLE_USER, content="Was ist die Hauptstadt von Deutschland?"),
]
GREEDY = pb.SamplingOptions(temperature=0.0, seed=1)


def chat(stub, messages=QUESTION, **kwargs) -> tuple[list[str], pb.ChatFinish]:
    pieces, finish = [], None
    for response in stub.Chat(pb.ChatRequest(messages=messages, **kwargs), timeout=120):
        if response.HasField("finish"):
            finish = response.finish
        else:
            assert finish is None, "text arrived after the finish"
            pieces.append(response.text)
    return pieces, finish


def make_service():
    config = Config()
    config.inference.threads = 2
    config.inference.max_queued = 8
    config.inference.parallel_sequences = 1  # the line in front of one slot; many slots: test_inference_batching.py
    return build(config)


server, channel, stub = service_fixtures(make_service, pb_grpc.InferenceServiceStub)


def test_a_german_answer_streams_in_several_pieces(stub):
    pieces, finish = chat(stub, max_tokens=40, sampling=GREEDY)
    text = "".join(pieces)
    assert len(pieces) >= 5, pieces
    words = set(re.findall(r"\w+", text.lower()))
    assert len(words & GERMAN_WORDS) >= 2, text
    assert finish.reason == pb.FINISH_REASON_LENGTH
    assert finish.usage.completion_tokens == 40
    counted = stub.CountTokens(pb.CountTokensRequest(messages=QUESTION))
    assert finish.usage.prompt_tokens == counted.token_count
    assert finish.usage.total_tokens == counted.token_count + 40


def test_the_same_seed_gives_the_same_answer_and_a_stop_string_ends_it(stub):
    sampling = pb.SamplingOptions(temperature=0.8, top_p=0.9, top_k=20, repeat_penalty=1.2, seed=42)
    first, _ = chat(stub, max_tokens=20, sampling=sampling)
    second, _ = chat(stub, max_tokens=20, sampling=sampling)
    assert "".join(first) == "".join(second)
    greedy, _ = chat(stub, max_tokens=30, sampling=GREEDY)
    full = "".join(greedy)
    stop = full.split()[2]
    cut, finish = chat(stub, max_tokens=30, sampling=GREEDY, stop_sequences=[stop])
    assert "".join(cut) == full[: full.index(stop)]
    assert finish.reason == pb.FINISH_REASON_STOP


def test_model_info_reports_what_llama_cpp_allocated(stub):
    info = stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.quant == "Q4_K_M"
    assert info.model_name == "Gemma 3 270m"
    assert info.context_length == 4096
    assert info.training_context_length == 32768
    assert info.layer_count == 18
    assert info.gpu_layers == 0  # this build of llama.cpp has no GPU
    assert 200e6 < info.weights_bytes < 300e6  # the file is 253 MB
    assert info.kv_cache_bytes > 0 and info.compute_buffer_bytes > 0
    assert info.file_name == "gemma-3-270m-q4_k_m.gguf"


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"messages": []}, "leer"),
        ({"messages": [pb.Message(role=pb.ROLE_USER, content="   ")]}, "leer"),
        ({"messages": [pb.Message(role=pb.ROLE_UNSPECIFIED, content="Hallo")]}, "unbekannte Rolle"),
        ({"messages": [pb.Message(role=17, content="Hallo")]}, "unbekannte Rolle"),
        ({"messages": QUESTION, "max_tokens": 0}, "max_tokens must be positive"),
        ({"messages": QUESTION, "max_tokens": -5}, "max_tokens must be positive"),
        ({"messages": QUESTION, "max_tokens": 5000}, "does not fit into the context of 4096"),
        ({"messages": QUESTION, "max_tokens": 4070}, "at most"),
        ({"messages": QUESTION, "temperature": 3.5}, "temperature"),
        ({"messages": QUESTION, "sampling": pb.SamplingOptions(top_p=0)}, "top_p"),
    ],
)
def test_bad_requests_are_invalid_argument(stub, request_fields, expected):
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Chat(pb.ChatRequest(**request_fields), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.value.details()


def test_a_prompt_longer_than_the_context_says_how_long_it_is(stub):
    long_text = "Das ist ein sehr langer Satz über die Schule. " * 500
    messages = [pb.Message(role=pb.ROLE_USER, content=long_text)]
    tokens = stub.CountTokens(pb.CountTokensRequest(messages=messages)).token_count
    assert tokens > 4096
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Chat(pb.ChatRequest(messages=messages), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{tokens} Tokens" in error.value.details()
    assert "4096" in error.value.details()


def test_cancelling_mid_stream_frees_the_model_at_once(server, stub):
    stream = stub.Chat(pb.ChatRequest(messages=QUESTION, max_tokens=3000, sampling=GREEDY), timeout=120)
    for _ in range(3):
        next(stream)
    stream.cancel()
    scheduler = server.service.scheduler
    wait_until(lambda: scheduler.running == 0, timeout=5)
    _pieces, finish = chat(stub, max_tokens=5, sampling=GREEDY)
    assert finish.usage.completion_tokens == 5


class Streamer(threading.Thread):
    """Runs one Chat call on a thread and records when it started and ended."""

    def __init__(self, stub, user, max_tokens, log):
        super().__init__(daemon=True)
        self.stub, self.user, self.max_tokens, self.log = stub, user, max_tokens, log
        self.call = None
        self.error = None
        self.finish = None

    def run(self):
        self.call = self.stub.Chat(
            pb.ChatRequest(messages=QUESTION, max_tokens=self.max_tokens, sampling=GREEDY, user=self.user), timeout=120
        )
        try:
            for response in self.call:
                if response.HasField("finish"):
                    self.finish = response.finish
            self.log.append(self.name)
        except grpc.RpcError as error:
            self.error = error


def test_a_full_queue_answers_resource_exhausted_at_once():
    config = Config()
    config.inference.threads = 2
    config.inference.max_queued = 1
    config.inference.parallel_sequences = 1
    service = build(config)
    with InProcessServer([service]) as server, server.channel() as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        log: list[str] = []
        holder = Streamer(stub, "a", 3000, log)
        holder.start()
        wait_until(lambda: service.scheduler.running == 1)
        waiter = Streamer(stub, "b", 3000, log)
        waiter.start()
        wait_until(lambda: service.scheduler.queue_length == 1)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Chat(pb.ChatRequest(messages=QUESTION, max_tokens=5, user="c"), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Bitte warte einen Moment" in refused.value.details()
        waiter.call.cancel()
        holder.call.cancel()
        wait_until(lambda: service.scheduler.running == 0 and service.scheduler.queue_length == 0)
        assert_serving(channel, service.service_name)


def test_a_user_with_several_requests_waits_behind_a_user_with_none(server, stub):
    scheduler = server.service.scheduler
    log: list[str] = []
    first = Streamer(stub, "anna", 3000, log)
    first.start()
    wait_until(lambda: scheduler.running == 1)
    queued = []
    for name, user in (("anna-2", "anna"), ("anna-3", "anna"), ("ben-1", "ben")):
        s = Streamer(stub, user, 8, log)
        s.name = name
        s.start()
        waiting = len(queued) + 1
        wait_until(lambda waiting=waiting: scheduler.queue_length == waiting)
        queued.append(s)
    first.call.cancel()
    for s in queued:
        s.join(60)
        assert s.error is None and s.finish.usage.completion_tokens == 8
    assert log == ["ben-1", "anna-2", "anna-3"]
