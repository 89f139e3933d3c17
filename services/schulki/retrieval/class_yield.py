"""Ingest that yields to the class: parsing and embedding wait while the chat's inference service has requests in line.

On one machine an upload's parsing and embedding share the cores with the
class's chat. The OS priority (``cores.background_nice``) lets the chat's
threads go first where they compete, but a busy embedding step still takes
cores the chat could use. So before each step (the parse, each embedding
batch) the ingest asks the inference service how many requests wait for their
turn (GetModelInfo's ``queue_length``) and waits while any do, up to
``retrieval.yield_max_wait_s`` per step, so that an upload still moves on
during a class that never empties its line, and all the waits of one upload
together at most ``retrieval.yield_share`` of the time it has worked
(``UploadTurns``): a class of 30 keeps the line full, and waiting the full
time at every step made a 100-page upload 18.5 times slower on 2 cores
without the core split. While answers only run (nothing
waits), steps go on, in batches of ``retrieval.embed_batch_texts_in_class``
chunks, so each step is short and the next check comes soon.

Where embeddings have their own node or GPU, ``retrieval.yield_to_class =
false`` lets ingest run at full speed. Left empty, ingest yields unless this
process runs on CPUs of its own (``runtime.cpu_cores``, as ``schulki up``'s core
split pins embeddings and retrieval apart from the chat): there the chat's
cores are its own already, and waiting only made a 100-page upload during a
class of 30 ten times slower (``benchmarks/core_split_bench.py``, modes
``after`` and ``yield``). When the inference service cannot be asked (not
started, another machine without a route), ingest does not wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass

import grpc

from schulki.config import Config
from schulki.inference.v1 import inference_service_pb2 as inference_pb
from schulki.inference.v1 import inference_service_pb2_grpc as inference_grpc
from schulki.runtime import logs
from schulki.runtime.client import call_metadata, open_channel

log = logging.getLogger("schulki.retrieval")

POLL_S = 0.25
"""How often a waiting step asks again: a line of chats empties in a few hundred milliseconds once it moves."""

START_CREDIT_S = 1.0
"""Working time an upload is credited with at its start, so that its first step (the parse) may wait for a line that
moves (``yield_share`` of it: half a second by default)."""


@dataclass(frozen=True)
class ClassLoad:
    """What the inference service said: requests waiting for their turn, answers being generated."""

    queued: int
    running: int


def yields(config: Config) -> bool:
    """Whether ingest waits for the class: ``retrieval.yield_to_class`` where set; left empty, unless this process is
    pinned to some of the machine's CPUs only (``runtime.cpu_cores``), which leaves the others to the chat."""
    if config.retrieval.yield_to_class is not None:
        return config.retrieval.yield_to_class
    pinned = set(config.runtime.cpu_cores)
    return not pinned or pinned >= set(range(os.cpu_count() or 1))


class ClassYield:
    """Asks the inference service how busy the class is; ``wait_turn`` is what an ingest step calls first."""

    def __init__(self, config: Config) -> None:
        settings = config.retrieval
        self.enabled = yields(config)
        self.max_wait_s = settings.yield_max_wait_s
        self.share = settings.yield_share
        self.address = settings.inference_address or f"127.0.0.1:{config.inference.port}"
        self.runtime = config.runtime
        self._stub: inference_grpc.InferenceServiceStub | None = None
        self._channel: grpc.aio.Channel | None = None

    async def load(self) -> ClassLoad | None:
        """The inference service's line now; None when it cannot be asked (then nothing waits for it)."""
        if self._stub is None:
            self._channel = open_channel(self.address, self.runtime, aio=True)
            self._stub = inference_grpc.InferenceServiceStub(self._channel)
        try:
            info = await self._stub.GetModelInfo(
                inference_pb.GetModelInfoRequest(), timeout=2.0, metadata=call_metadata(self.runtime, logs.request_id.get())
            )
        except grpc.aio.AioRpcError as error:
            log.debug("inference service at %s not asked about its line: %s", self.address, error.code().name)
            return None
        return ClassLoad(queued=info.queue_length, running=info.running_sequences)

    def upload(self) -> UploadTurns:
        """The waiting of one upload's steps, with its own budget (``retrieval.yield_share`` of its working time)."""
        return UploadTurns(self)

    async def wait_turn(self, max_wait_s: float | None = None) -> ClassLoad | None:
        """Wait while requests of the class wait in the inference service's line, at most ``max_wait_s`` (else
        ``retrieval.yield_max_wait_s``); returns the load the step goes on with (None: off, or the inference service
        could not be asked)."""
        if not self.enabled:
            return None
        deadline = time.monotonic() + (self.max_wait_s if max_wait_s is None else max_wait_s)
        load = await self.load()
        while load is not None and load.queued > 0 and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            load = await self.load()
        return load

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None


def allowed_wait(worked_s: float, waited_s: float, share: float, max_wait_s: float) -> float:
    """How long the next step of an upload may wait: at most ``max_wait_s``, and all its waits together at most ``share``
    of the time it has worked and ``START_CREDIT_S`` (so it takes at most 1 + ``share`` times its working time, and a
    moment, however full the line stays)."""
    return max(0.0, min(max_wait_s, share * (worked_s + START_CREDIT_S) - waited_s))


class UploadTurns:
    """One upload's turns: each step waits for the class's line as ``ClassYield.wait_turn`` does, within the budget
    ``allowed_wait`` gives. A class of 30 on an unsplit machine keeps its line full; a step waiting its full
    ``yield_max_wait_s`` each time made a 100-page upload take 18.5 times its quiet time (3.1 times with the budget)."""

    def __init__(self, watch: ClassYield) -> None:
        self._watch = watch
        self._started = time.monotonic()
        self.waited_s = 0.0

    async def wait_turn(self) -> ClassLoad | None:
        began = time.monotonic()
        worked = began - self._started - self.waited_s
        load = await self._watch.wait_turn(allowed_wait(worked, self.waited_s, self._watch.share, self._watch.max_wait_s))
        self.waited_s += time.monotonic() - began
        return load
