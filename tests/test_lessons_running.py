"""The running answers a teacher's stop ends: a stop from any thread ends an answer waiting for its next piece at once
and closes its stream, a stop between pieces ends it before the next one is asked for, the database check ends a
stalled answer, the client's own cancel stays a cancel, and a piece costs no task of its own on the way through."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest
from schulki.gateway.lessons import running as running_module
from schulki.gateway.lessons.running import AnswerStopped, RunningAnswers

LONG = 60.0
"""A deadline no healthy run comes near; it only keeps a broken run from hanging the suite."""


class Source:
    """An answer's stream: ``pieces`` pieces, then it waits for ever (a model thinking); records how it ended."""

    def __init__(self, pieces: int, swallow_cancel: bool = False) -> None:
        self.pieces = pieces
        self.asked = 0
        self.swallow_cancel = swallow_cancel
        self.closed = asyncio.Event()
        self.waiting = asyncio.Event()
        self.cancelled = False

    async def stream(self) -> AsyncIterator[int]:
        try:
            for number in range(self.pieces):
                self.asked += 1
                yield number
            self.waiting.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                if not self.swallow_cancel:
                    raise
        finally:
            self.closed.set()


def _open(_reason: str | None = None):
    return lambda: _reason


async def _consume(answers: RunningAnswers, source: Source, classes=frozenset({"7a"}), task_id=None, still_open=None):
    got = []
    async for piece in answers.watched(source.stream(), task_id, classes, still_open or _open()):
        got.append(piece)
    return got


@pytest.mark.parametrize("swallow", [False, True], ids=["source-raises", "source-swallows-the-cancel"])
def test_a_stop_from_another_thread_ends_a_waiting_answer_and_closes_its_stream(swallow):
    async def scenario():
        answers, source = RunningAnswers(), Source(3, swallow_cancel=swallow)
        consumer = asyncio.ensure_future(_consume(answers, source))
        await asyncio.wait_for(source.waiting.wait(), LONG)
        assert answers.count() == 1
        stopper = threading.Thread(target=lambda: answers.stop_class("7a"))  # as a Gradio event's worker thread does
        stopper.start()
        with pytest.raises(AnswerStopped) as stopped:
            await asyncio.wait_for(consumer, LONG)
        stopper.join()
        assert stopped.value.reason == "paused"
        assert source.cancelled and source.closed.is_set()
        assert answers.count() == 0
        # the stop's cancel is not left on the task that ran the answer
        assert asyncio.current_task().cancelling() == 0
        await asyncio.sleep(0.01)

    asyncio.run(scenario())


def test_the_consumers_task_may_go_on_after_the_stop():
    """The answer runs in the consumer's own task (a streaming response); after AnswerStopped that task keeps working."""

    async def scenario():
        answers, source = RunningAnswers(), Source(1)

        async def consumer():
            try:
                await _consume(answers, source, task_id=9)
            except AnswerStopped as stopped:
                await asyncio.sleep(0.01)  # would raise CancelledError if the stop's cancel were left pending
                return f"ended: {stopped.reason}"
            return "finished"

        running = asyncio.ensure_future(consumer())
        await asyncio.wait_for(source.waiting.wait(), LONG)
        assert answers.stop_task(9) == 1
        assert await asyncio.wait_for(running, LONG) == "ended: paused"
        assert running.cancelling() == 0

    asyncio.run(scenario())


def test_a_stop_between_pieces_ends_the_answer_before_the_next_piece_is_asked_for():
    async def scenario():
        answers, source = RunningAnswers(), Source(10)
        watched = answers.watched(source.stream(), 4, frozenset({"7a"}), _open())
        assert await anext(watched) == 0
        answers.stop_task(4)  # the consumer is busy elsewhere (writing the piece out) when the stop comes
        await asyncio.sleep(0)  # the wake-up runs on the loop
        with pytest.raises(AnswerStopped):
            await anext(watched)
        assert source.asked == 1
        assert source.closed.is_set() and answers.count() == 0

    asyncio.run(scenario())


def test_the_database_check_ends_an_answer_that_waits_for_its_next_piece(monkeypatch):
    monkeypatch.setattr(running_module, "CHECK_EVERY_S", 0.05)
    asked = threading.Event()
    answers_left = ["", "", "closed"]

    def still_open() -> str | None:
        assert threading.current_thread() is not threading.main_thread()  # the query runs off the event loop
        asked.set()
        return answers_left.pop(0) or None if answers_left else "closed"

    async def scenario():
        answers, source = RunningAnswers(), Source(2)
        with pytest.raises(AnswerStopped) as stopped:
            await asyncio.wait_for(_consume(answers, source, still_open=still_open), LONG)
        assert stopped.value.reason == "closed"
        assert asked.is_set() and not answers_left
        assert source.closed.is_set()

    asyncio.run(scenario())


def test_a_database_error_does_not_end_the_answer(monkeypatch):
    monkeypatch.setattr(running_module, "CHECK_EVERY_S", 0.05)
    calls = []

    def still_open() -> str | None:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("database is locked")
        return "closed"

    async def scenario():
        with pytest.raises(AnswerStopped) as stopped:
            await asyncio.wait_for(_consume(RunningAnswers(), Source(1), still_open=still_open), LONG)
        assert stopped.value.reason == "closed" and len(calls) == 3

    asyncio.run(scenario())


@pytest.mark.parametrize("stopped_too", [False, True], ids=["cancel-alone", "cancel-after-a-stop"])
def test_the_clients_cancel_stays_a_cancel_and_the_answer_is_forgotten(stopped_too):
    async def scenario():
        answers, source = RunningAnswers(), Source(2)
        consumer = asyncio.ensure_future(_consume(answers, source))
        await asyncio.wait_for(source.waiting.wait(), LONG)
        if stopped_too:
            answers.stop_class("7a")
            await asyncio.sleep(0)  # the stop's wake-up cancels the wait, and the page closes before the task runs again
        consumer.cancel()  # the student closed the page
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert source.closed.is_set() and answers.count() == 0

    asyncio.run(scenario())


def test_answers_of_other_classes_and_tasks_run_on_and_end_normally():
    async def scenario():
        answers = RunningAnswers()
        finishing = Source(5)

        async def finite():
            got = []
            async for piece in answers.watched(_first(finishing.stream(), 5), 1, frozenset({"8b"}), _open()):
                got.append(piece)
                if piece == 2:
                    assert answers.stop_class("7a") == 0 and answers.stop_task(2) == 0
            return got

        assert await asyncio.wait_for(finite(), LONG) == [0, 1, 2, 3, 4]
        assert answers.count() == 0

    asyncio.run(scenario())


async def _first(stream: AsyncIterator[int], count: int) -> AsyncIterator[int]:
    async for piece in stream:
        yield piece
        count -= 1
        if count == 0:
            return


def test_a_piece_on_its_way_through_costs_no_task_of_its_own():
    """Every piece of every student's answer passes here: a task (or timer) per piece would cost the gateway a
    scheduling round and an allocation per token of the whole class."""

    async def scenario():
        created = []
        loop = asyncio.get_running_loop()

        def factory(loop, coro, **kwargs):
            created.append(coro)
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)
        got = await _consume(RunningAnswers(), _Finite(500))
        loop.set_task_factory(None)
        assert got == list(range(500))
        assert len(created) <= 2, len(created)

    asyncio.run(scenario())


class _Finite:
    def __init__(self, pieces: int) -> None:
        self.pieces = pieces

    async def stream(self) -> AsyncIterator[int]:
        for number in range(self.pieces):
            await asyncio.sleep(0)  # a gRPC read that gives the loop its turn
            yield number
