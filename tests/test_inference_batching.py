"""Continuous batching in the inference service: the real default model, over a real socket, many streams at once."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from schulki.config import Config
from schulki.inference import build
from schulki.inference.v1 import inference_service_pb2 as pb
from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc

from tests.conftest import ServiceProcess, assert_serving
from tests.service_support import service_fixtures, wait_until

GREEDY = pb.SamplingOptions(temperature=0.0)
PROMPTS = [
    "Was ist die Hauptstadt von Deutschland?",
    "Erkläre mir die Photosynthese.",
    "Schreibe ein kurzes Gedicht über den Herbst.",
    "Wie funktioniert ein Computer?",
    "Nenne drei Flüsse in Europa.",
    "Warum ist der Himmel blau?",
]
AGREE_TOKENS = 1
"""llama.cpp's CPU kernels round a prompt read in one big batch of several sequences differently from one read alone
(measured on these six prompts without flash attention: logits differ by up to 0.9 after a 101-token batch of six
sequences, 0.0 for two sequences of 34 tokens). Greedy answers therefore agree on their first token always, and fully
for most prompts: through 24 tokens, 4 of 6 without flash attention (the other two part at their 2nd and 3rd token,
where the top two tokens were close), 5 of 6 with it, the default (the sixth parts at its 3rd token)."""
IDENTICAL_SHARE = 0.5
PARALLEL = 8


def ask(text: str) -> list[pb.Message]:
    return [pb.Message(role=pb.ROLE_USER, content=text)]


def make_service():
    config = Config()
    config.inference.threads = 1  # one thread: on a shared, busy machine two spinning threads are many times slower
    config.inference.parallel_sequences = PARALLEL
    config.inference.max_queued = 32
    config.inference.max_running_per_user = 2
    return build(config)


server, channel, stub = service_fixtures(make_service, pb_grpc.InferenceServiceStub)


class Stream(threading.Thread):
    """One Chat call on its own thread; records each piece with the time it arrived."""

    def __init__(self, stub, request: pb.ChatRequest):
        super().__init__(daemon=True)
        self.stub, self.request = stub, request
        self.pieces: list[tuple[float, str]] = []
        self.finish: pb.ChatFinish | None = None
        self.error: grpc.RpcError | None = None
        self.call = None
        self.started = threading.Event()

    def run(self):
        self.call = self.stub.Chat(self.request, timeout=300)
        self.started.set()
        try:
            for response in self.call:
                if response.HasField("finish"):
                    self.finish = response.finish
                else:
                    self.pieces.append((time.monotonic(), response.text))
        except grpc.RpcError as error:
            self.error = error

    @property
    def text(self) -> str:
        return "".join(p for _, p in self.pieces)


def run_all(stub, requests: list[pb.ChatRequest]) -> list[Stream]:
    streams = [Stream(stub, r) for r in requests]
    for s in streams:
        s.start()
    for s in streams:
        s.join(300)
        assert s.error is None, s.error
        assert s.finish is not None
    return streams


def test_greedy_answers_are_the_same_alone_and_in_one_batch(server, stub):
    requests = [pb.ChatRequest(messages=ask(p), max_tokens=24, sampling=GREEDY, user=f"u{i}") for i, p in enumerate(PROMPTS)]
    alone = [run_all(stub, [r])[0] for r in requests]
    steps_before = server.service.engine.stats.steps
    together = run_all(stub, requests)
    # All six were decoded in shared steps, not one after another.
    assert server.service.engine.stats.steps - steps_before < 2 * 24
    engine = server.service.engine
    same = 0
    for a, b in zip(alone, together, strict=True):
        ta, tb = engine.tokens_of(a.text), engine.tokens_of(b.text)
        agree = next((i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), min(len(ta), len(tb)))
        print(f"alone {len(ta)} tokens, batched {len(tb)}, agree over {agree}: {a.text!r} | {b.text!r}")
        assert agree >= min(AGREE_TOKENS, len(ta), len(tb)), (a.text, b.text)
        same += a.text == b.text
        assert a.finish.usage == b.finish.usage or a.text != b.text
    print(f"{same} of {len(PROMPTS)} answers identical alone and batched")
    assert same >= IDENTICAL_SHARE * len(PROMPTS)
    # The same batch again gives the same answers: sequences do not leak into each other's cells.
    again = run_all(stub, requests)
    assert [s.text for s in again] == [s.text for s in together]


def test_twenty_mixed_requests_at_once_all_finish_with_exact_usage(stub):
    requests = []
    for i in range(20):
        text = PROMPTS[i % len(PROMPTS)] + (" Bitte ausführlich, mit Beispielen aus der Schule." * (i % 4) * 6)
        requests.append(
            pb.ChatRequest(
                messages=ask(text), max_tokens=4 + (i * 7) % 40, user=f"student-{i}", sampling=pb.SamplingOptions(temperature=0.8, seed=i)
            )
        )
    streams = run_all(stub, requests)
    for request, stream in zip(requests, streams, strict=True):
        counted = stub.CountTokens(pb.CountTokensRequest(messages=request.messages)).token_count
        usage = stream.finish.usage
        assert usage.prompt_tokens == counted
        assert usage.total_tokens == counted + usage.completion_tokens
        if stream.finish.reason == pb.FINISH_REASON_LENGTH:
            assert usage.completion_tokens == request.max_tokens
        else:
            assert stream.finish.reason == pb.FINISH_REASON_STOP and usage.completion_tokens <= request.max_tokens
        assert usage.completion_tokens > 0 or not stream.text


def test_a_cancelled_stream_frees_its_slot_for_the_next_waiting_request(server, stub):
    scheduler, engine = server.service.scheduler, server.service.engine
    long = [
        Stream(stub, pb.ChatRequest(messages=ask(PROMPTS[i % 6]), max_tokens=3000, sampling=GREEDY, user=f"long-{i}"))
        for i in range(PARALLEL)
    ]
    for s in long:
        s.start()
    wait_until(lambda: engine.running == PARALLEL and all(s.pieces for s in long), timeout=60)
    waiting = Stream(stub, pb.ChatRequest(messages=ask(PROMPTS[0]), max_tokens=5, sampling=GREEDY, user="next"))
    waiting.start()
    wait_until(lambda: scheduler.queue_length == 1, timeout=60)
    steps = engine.stats.steps
    long[0].call.cancel()
    waiting.join(120)
    assert waiting.error is None and waiting.finish.usage.completion_tokens == 5
    # The next request started as soon as the slot was free: its 5 tokens took a handful of steps
    # (gRPC's cancellation reaches the server within a few steps), not the 3000 of the cancelled one.
    print(f"the waiting request finished {engine.stats.steps - steps} steps after the cancel")
    assert engine.stats.steps - steps < 60
    for s in long[1:]:
        assert s.finish is None
        s.call.cancel()
    wait_until(lambda: engine.running == 0 and scheduler.running == 0, timeout=60)


def test_requests_waiting_in_the_queue_join_the_step_right_after_slots_free(server, stub):
    engine = server.service.engine
    rounds = []
    # Without waiting for them, every waiting request joins one step late at best (its turn is handed out on the event
    # loop while the worker already decodes the next step): 8 of 8 hand-overs left a slot empty, quiet 0 of 8 do now.
    # On a busy machine some still miss the short wait (5 of 8 once in the full suite), so the best of three rounds counts.
    for _ in range(3):
        before = (engine.stats.handoffs, engine.stats.handoff_steps)
        # Twice as many students as slots: the second half waits in the fair queue and takes over the slots of the first.
        requests = [
            pb.ChatRequest(messages=ask(PROMPTS[i % 6]), max_tokens=12, sampling=GREEDY, user=f"class-{i}") for i in range(2 * PARALLEL)
        ]
        streams = run_all(stub, requests)
        assert all(s.finish.usage.completion_tokens == 12 for s in streams)
        handoffs, gaps = engine.stats.handoffs - before[0], engine.stats.handoff_steps - before[1]
        print(f"{handoffs} hand-overs from the queue, {gaps} steps with a slot left empty in all")
        assert handoffs >= PARALLEL // 2
        rounds.append((handoffs, gaps))
        if gaps <= handoffs // 2:
            break
    else:
        pytest.fail(f"hand-overs and the steps they left a slot empty, each round: {rounds}")


def test_a_long_prompt_being_read_does_not_stop_other_streams(server, stub):
    engine = server.service.engine
    running = Stream(stub, pb.ChatRequest(messages=ask(PROMPTS[1]), max_tokens=3000, sampling=GREEDY, user="reader-1"))
    running.start()
    wait_until(lambda: len(running.pieces) >= 3, timeout=60)
    long_text = "Die Schule liegt am Rand der Stadt, und jeden Morgen fahren die Kinder mit dem Bus. " * 120
    long_request = pb.ChatRequest(messages=ask(long_text), max_tokens=3, sampling=GREEDY, user="reader-2")
    prompt_tokens = stub.CountTokens(pb.CountTokensRequest(messages=long_request.messages)).token_count
    assert prompt_tokens > 3 * server.service.config.batch_size  # read in at least 4 chunks
    reused_before = engine.stats.reused_tokens
    sent = time.monotonic()
    reader = Stream(stub, long_request)
    reader.start()
    reader.join(300)
    assert reader.error is None and reader.finish.usage.prompt_tokens == prompt_tokens
    first_answer = reader.pieces[0][0] if reader.pieces else time.monotonic()
    during = [t for t, _ in running.pieces if sent < t < first_answer]
    print(f"{prompt_tokens} prompt tokens read in {first_answer - sent:.2f} s; meanwhile the other stream got {len(during)} pieces")
    assert engine.stats.reused_tokens - reused_before < 16  # at most the chat template's opening came from a cache
    assert len(during) >= 3
    running.call.cancel()
    wait_until(lambda: engine.running == 0, timeout=60)


def test_a_call_cancelled_while_its_long_prompt_is_read_frees_its_slot_within_one_chunk(server, stub):
    scheduler, engine = server.service.scheduler, server.service.engine
    decoder = engine._decoder
    busy = [
        Stream(stub, pb.ChatRequest(messages=ask(PROMPTS[i % 6]), max_tokens=3000, sampling=GREEDY, user=f"busy-{i}"))
        for i in range(PARALLEL - 1)
    ]
    for s in busy:
        s.start()
    wait_until(lambda: engine.running == PARALLEL - 1 and all(s.pieces for s in busy), 180)
    long_text = "Im Sachunterricht bauen die Kinder ein Vogelhaus aus Holz und Nägeln. " * 220
    long_request = pb.ChatRequest(messages=ask(long_text), max_tokens=3, sampling=GREEDY, user="long-prompt")
    prompt_tokens = stub.CountTokens(pb.CountTokensRequest(messages=long_request.messages)).token_count
    chunk = server.service.config.batch_size - (PARALLEL - 1)  # the answering streams take one batch position each
    assert prompt_tokens > 4 * chunk  # read in at least five chunks
    reader = Stream(stub, long_request)
    reader.start()
    wait_until(lambda: engine.running == PARALLEL)
    waiting = Stream(stub, pb.ChatRequest(messages=ask(PROMPTS[0]), max_tokens=4, sampling=GREEDY, user="next"))
    waiting.start()
    wait_until(lambda: scheduler.queue_length == 1)
    slot = next(s for s in decoder._slots if s.request is not None and len(s.prompt) == prompt_tokens)
    wait_until(lambda: slot.fed >= chunk, 120)  # a first chunk is read (not only the template's opening from a cache)
    reader.call.cancel()
    wait_until(lambda: slot.request is None or slot.request.cancelled.is_set())
    fed_at_cancel, steps_at_cancel = slot.fed, engine.stats.steps
    wait_until(lambda: slot.request is None or len(slot.prompt) != prompt_tokens, 120)
    # Once the service saw the cancellation, at most the chunk already in flight was read (one step, two if the
    # flag was set just as a step began), and the rest of the prompt never was.
    print(f"cancelled at {fed_at_cancel} of {prompt_tokens} prompt tokens; freed {engine.stats.steps - steps_at_cancel} steps later")
    assert engine.stats.steps - steps_at_cancel <= 2 and chunk <= fed_at_cancel and fed_at_cancel + 2 * chunk < prompt_tokens
    waiting.join(120)
    assert waiting.error is None and waiting.finish.usage.completion_tokens == 4  # the next request got the slot
    assert reader.error is not None and reader.error.code() == grpc.StatusCode.CANCELLED
    for s in busy:
        assert s.finish is None
        s.call.cancel()
    wait_until(lambda: engine.running == 0 and scheduler.running == 0)


def test_the_per_user_cap_holds_under_batching(server, stub):
    scheduler, engine = server.service.scheduler, server.service.engine
    tabs = [Stream(stub, pb.ChatRequest(messages=ask(PROMPTS[i]), max_tokens=3000, sampling=GREEDY, user="five-tabs")) for i in range(5)]
    for s in tabs:
        s.start()
    wait_until(lambda: scheduler.running == 2 and scheduler.queue_length == 3, timeout=60)
    other = Stream(stub, pb.ChatRequest(messages=ask(PROMPTS[5]), max_tokens=4, sampling=GREEDY, user="one-tab"))
    other.start()
    other.join(120)
    # Slots were free: the other student got one at once, while three tabs of the first still wait.
    assert other.error is None and other.finish.usage.completion_tokens == 4
    assert scheduler.queue_length == 3 and engine.running == 2
    info = stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.parallel_sequences == PARALLEL and info.running_sequences == 2 and info.queue_length == 3
    for s in tabs:
        s.call.cancel()
    wait_until(lambda: engine.running == 0 and scheduler.running == 0 and scheduler.queue_length == 0, timeout=60)


def test_the_next_turn_and_a_shared_system_prompt_reuse_cached_cells(server, stub):
    engine = server.service.engine
    system = pb.Message(
        role=pb.ROLE_SYSTEM, content="Du bist eine geduldige Lehrerin an einer Grundschule. Antworte kurz und freundlich. " * 4
    )
    first = [system, pb.Message(role=pb.ROLE_USER, content="Was ist ein Nomen?")]
    before = engine.stats.reused_tokens
    answer = run_all(stub, [pb.ChatRequest(messages=first, max_tokens=12, sampling=GREEDY, user="turns")])[0]
    turn_two = [*first, pb.Message(role=pb.ROLE_ASSISTANT, content=answer.text), pb.Message(role=pb.ROLE_USER, content="Und ein Verb?")]
    run_all(stub, [pb.ChatRequest(messages=turn_two, max_tokens=4, sampling=GREEDY, user="turns")])
    shared = stub.CountTokens(pb.CountTokensRequest(messages=[system, pb.Message(role=pb.ROLE_USER, content="")])).token_count
    reused_turn = engine.stats.reused_tokens - before
    assert reused_turn >= shared  # at least the system prompt and the first question came from the cache
    other = [system, pb.Message(role=pb.ROLE_USER, content="Was ist ein Adjektiv?")]
    before = engine.stats.reused_tokens
    run_all(stub, [pb.ChatRequest(messages=other, max_tokens=4, sampling=GREEDY, user="classmate")])
    assert engine.stats.reused_tokens - before >= shared - 8  # the shared system prompt, up to where the texts part


def test_sigterm_with_eight_running_streams_lets_them_finish():
    proc = ServiceProcess(
        "inference",
        env={
            "SCHULKI_INFERENCE__THREADS": "1",
            "SCHULKI_INFERENCE__PARALLEL_SEQUENCES": "8",
            "SCHULKI_RUNTIME__GRACE_PERIOD_S": "60",
        },
    ).start()
    with grpc.insecure_channel(proc.address) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        streams = [
            Stream(stub, pb.ChatRequest(messages=ask(PROMPTS[i % 6]), max_tokens=40, sampling=GREEDY, user=f"s{i}")) for i in range(8)
        ]
        for s in streams:
            s.start()
        wait_until(lambda: all(s.pieces for s in streams), timeout=60)
        assert stub.GetModelInfo(pb.GetModelInfoRequest()).running_sequences == 8
        proc.terminate()
        for s in streams:
            s.join(120)
            assert s.error is None, s.error
            assert s.finish.usage.completion_tokens == 40 or s.finish.reason == pb.FINISH_REASON_STOP
    code, err = proc.stop()
    assert code == 0, err
    assert "Traceback" not in err


def test_model_info_reports_the_slots_and_the_service_keeps_serving(channel, stub):
    info = stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.parallel_sequences == PARALLEL
    assert info.context_length == 4096
    assert info.running_sequences == 0
    assert_serving(channel, pb.DESCRIPTOR.services_by_name["InferenceService"].full_name)
