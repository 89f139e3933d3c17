"""Ingest yields to the class: a step waits while chats wait in the real inference service's line, and goes on after.

The inference service decodes one answer at a time here, so a few students'
chats make a line; ``ClassYield.wait_turn`` (what every ingest step calls
first) must not return while the line holds anyone, must give up after its
longest wait, and must not wait at all when turned off or when the inference
service cannot be asked.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import grpc
from schulki.config import Config
from schulki.inference import build
from schulki.inference.v1 import inference_service_pb2 as pb
from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc
from schulki.retrieval.class_yield import ClassYield, allowed_wait, yields

from tests.service_support import service_fixtures, wait_until

STUDENTS = 3


def make_service():
    config = Config()
    config.inference.threads = 1
    config.inference.parallel_sequences = 1  # one answer at a time: the others wait in the line
    config.inference.max_queued = 16
    return build(config)


server, channel, stub = service_fixtures(make_service, pb_grpc.InferenceServiceStub)


class Student(threading.Thread):
    """One streamed chat; records when its first piece came (when it left the line)."""

    def __init__(self, stub, user: str):
        super().__init__(daemon=True)
        self.stub, self.user = stub, user
        self.first_piece: float | None = None
        self.error: grpc.RpcError | None = None

    def run(self):
        request = pb.ChatRequest(
            messages=[pb.Message(role=pb.ROLE_USER, content="Erzähl eine lange Geschichte über einen Drachen.")],
            max_tokens=48,
            sampling=pb.SamplingOptions(temperature=0.0),
            user=self.user,
        )
        try:
            for response in self.stub.Chat(request, timeout=600):
                if self.first_piece is None and not response.HasField("finish"):
                    self.first_piece = time.monotonic()
        except grpc.RpcError as error:
            self.error = error


def class_yield(server, **settings) -> ClassYield:
    config = Config()
    config.retrieval.inference_address = server.address
    for name, value in settings.items():
        setattr(config.retrieval, name, value)
    return ClassYield(config)


def wait_turn(watch: ClassYield):
    async def once():
        try:
            return await watch.wait_turn()
        finally:
            await watch.close()

    return asyncio.run(once())


def first_upload_turn(watch: ClassYield):
    """What an upload's first step (the parse) goes on with, and how long it waited."""
    turns = watch.upload()

    async def once():
        try:
            return await turns.wait_turn(), turns.waited_s
        finally:
            await watch.close()

    return asyncio.run(once())


def queued(stub) -> int:
    return stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30).queue_length


def test_an_ingest_step_waits_while_the_class_waits_and_goes_on_after(server, stub):
    students = [Student(stub, f"student-{i}") for i in range(STUDENTS)]
    for student in students:
        student.start()
    try:
        wait_until(lambda: queued(stub) > 0, timeout=120, what="a line of chats")

        # turned off (embeddings on their own node or GPU): no wait, no question asked
        assert wait_turn(class_yield(server, yield_to_class=False)) is None
        # a line that does not empty within the longest wait: the step goes on anyway, and says what it saw
        started = time.monotonic()
        load = wait_turn(class_yield(server, yield_max_wait_s=0.5))
        assert load is not None and load.queued > 0, load
        assert time.monotonic() - started < 60
        # an upload that has not worked yet: its first step waits half a second at most, not the step's longest wait
        load, waited = first_upload_turn(class_yield(server, yield_max_wait_s=600))
        assert load is not None and load.queued > 0 and waited < 60, (load, waited)

        load = wait_turn(class_yield(server, yield_max_wait_s=600))
        returned = time.monotonic()
        assert load is not None and load.queued == 0, load
        # the line had emptied before the step went on: every student but the one being answered (one answer at a time;
        # its first piece may still be on its way) had had a first piece; when the wait began, two still waited
        waiting = [s for s in students if s.first_piece is None or s.first_piece > returned]
        assert len(waiting) <= 1, [s.first_piece for s in students]
    finally:
        for student in students:
            student.join(600)
    assert all(s.error is None for s in students), [s.error for s in students]


def test_an_ingest_step_does_not_wait_for_an_inference_service_it_cannot_ask():
    config = Config()
    config.retrieval.inference_address = "127.0.0.1:1"  # nothing listens on port 1
    started = time.monotonic()
    assert wait_turn(ClassYield(config)) is None
    assert time.monotonic() - started < 30


def test_ingest_waits_for_the_class_unless_the_core_split_pinned_it_apart_from_the_chat(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    config = Config()
    assert yields(config)  # not pinned (a container, an unpinned machine): the chat may need these cores
    config.runtime.cpu_cores = [0, 1, 2, 3]
    assert yields(config)  # pinned to every CPU: the same
    config.runtime.cpu_cores = [3]  # as schulki up pins embeddings and retrieval: the chat has the others
    assert not yields(config)
    assert not ClassYield(config).enabled  # the retrieval service's ingest steps go on without asking
    config.retrieval.yield_to_class = True  # the admin's word wins either way
    assert yields(config)
    config.runtime.cpu_cores = []
    config.retrieval.yield_to_class = False
    assert not yields(config)


def test_an_uploads_waits_together_stay_within_a_share_of_the_time_it_worked():
    assert allowed_wait(0.0, 0.0, share=0.5, max_wait_s=10) == 0.5  # before any work: a moment for a line that moves
    assert allowed_wait(9.0, 0.0, share=0.5, max_wait_s=10) == 5.0
    assert allowed_wait(99.0, 0.0, share=0.5, max_wait_s=10) == 10  # never more than one step's longest wait
    assert allowed_wait(9.0, 5.0, share=0.5, max_wait_s=10) == 0.0  # the budget is spent
    assert allowed_wait(99.0, 0.0, share=0.0, max_wait_s=10) == 0.0
    # a class whose line never empties, 100 embedding steps of one second: each waits what it may
    worked = waited = 0.0
    for _ in range(100):
        waited += allowed_wait(worked, waited, share=0.5, max_wait_s=10)
        worked += 1.0
    assert (worked + waited) / worked <= 1.51  # where every step waiting its 10 s took 11 times as long
