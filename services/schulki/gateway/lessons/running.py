"""The answers that run now, so that a teacher's emergency stop or a task's end can end them within a second.

Each running answer of a student registers here with its task (if any) and
the classes it belongs to (the student's and the task's). ``stop_task`` and
``stop_class`` wake the answers concerned at once: their stream is closed,
which cancels the gRPC call, and the inference service frees the sequence.
The stop may come from any thread (a Gradio event runs a plain function in a
worker thread), so the wake-up goes through the answer's own event loop.
Besides the wake-up, a timer of each running answer asks the database every
``CHECK_EVERY_S`` in a worker thread (``still_open``): another gateway on the
same database may have paused the task or the class, and a task's end time
comes without anyone pressing anything.

This sits on the path of every piece of every student's answer, so a piece
costs nothing here beyond a flag: no task or timer per piece. A stop that
finds the answer waiting for its next piece cancels that wait in the answer's
own task (the cancel lands in the gRPC read, which ends the call) and turns
into ``AnswerStopped``; a stop that finds it elsewhere (its consumer writing
the last piece to a slow client) is noticed before the next piece is asked for.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

CHECK_EVERY_S = 1.0
"""How often a running answer asks the database whether it may go on (another gateway's stop, the end time)."""

Item = TypeVar("Item")

log = logging.getLogger(__name__)


@dataclass
class _Running:
    task_id: int | None
    classes: frozenset[str]
    loop: asyncio.AbstractEventLoop
    reason: str = ""
    """Why the answer was stopped; empty while it may go on. Written on the answer's loop only."""
    waiting_in: asyncio.Task | None = None
    """The task that waits for the answer's next piece now, else None: a stop then cancels that wait."""
    cancelled: bool = False
    """A stop cancelled ``waiting_in``: the cancel is this module's, not the client's."""
    finished: bool = False
    timer: asyncio.TimerHandle | None = None
    """The next database check, cancelled when the answer ends."""

    def wake(self, reason: str) -> None:
        """On the answer's loop: stop it, at once if it waits for a piece, else before it asks for the next one."""
        if self.finished or self.reason:
            return
        self.reason = reason
        if self.waiting_in is not None:
            self.cancelled = True
            self.waiting_in.cancel()


class AnswerStopped(Exception):
    """A running answer was ended: ``reason`` is "paused" (a teacher's stop) or "closed" (the task's end time)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunningAnswers:
    """Every student answer this gateway streams now, by a number of its own."""

    def __init__(self) -> None:
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)

    def count(self) -> int:
        with self._lock:
            return len(self._running)

    def _stop(self, chosen: Callable[[_Running], bool], reason: str) -> int:
        with self._lock:
            found = [answer for answer in self._running.values() if chosen(answer)]
        for answer in found:
            answer.loop.call_soon_threadsafe(answer.wake, reason)
        return len(found)

    def stop_task(self, task_id: int) -> int:
        """End every running answer in the task; returns how many."""
        return self._stop(lambda answer: answer.task_id == task_id, "paused")

    def stop_class(self, class_name: str) -> int:
        """End every running answer of the class's students and in the class's tasks; returns how many."""
        return self._stop(lambda answer: class_name in answer.classes, "paused")

    async def watched(
        self,
        events: AsyncIterator[Item],
        task_id: int | None,
        classes: frozenset[str],
        still_open: Callable[[], str | None],
    ) -> AsyncGenerator[Item, None]:
        """``events`` passed on until they end, or until a stop wakes this answer or ``still_open()`` (asked every
        CHECK_EVERY_S in a worker thread) names a reason; then the events are closed and AnswerStopped raised."""
        number = next(self._numbers)
        loop = asyncio.get_running_loop()
        running = _Running(task_id, classes, loop)
        with self._lock:
            self._running[number] = running
        source = aiter(events)
        running.timer = loop.call_later(CHECK_EVERY_S, _check, running, still_open)
        try:
            while True:
                if running.reason:  # a stop came while the consumer was busy elsewhere
                    raise AnswerStopped(running.reason)
                task = running.waiting_in = asyncio.current_task()
                try:
                    item = await anext(source)
                except StopAsyncIteration:
                    if running.cancelled:  # the source swallowed the stop's cancel and ended
                        _stopped(running, task)
                    return
                except BaseException:
                    if running.cancelled:  # the stop's cancel, or what the source made of it
                        _stopped(running, task)
                    raise
                finally:
                    running.waiting_in = None
                yield item
        finally:
            running.finished = True
            if running.timer is not None:
                running.timer.cancel()
            with self._lock:
                self._running.pop(number, None)
            closing = getattr(source, "aclose", None)
            if closing is not None:
                await closing()


def _stopped(running: _Running, task: asyncio.Task | None) -> NoReturn:
    """AnswerStopped for a wait the stop cancelled; CancelledError if the client cancelled the same task too."""
    running.cancelled = False
    if task is not None and task.uncancel() > 0:
        raise asyncio.CancelledError  # cancelled from outside as well: that cancel goes on
    raise AnswerStopped(running.reason or "paused") from None


def _check(running: _Running, still_open: Callable[[], str | None]) -> None:
    """The answer's timer: ask ``still_open`` in a worker thread, then wake the answer or look again later."""
    if running.finished:
        return
    asked = running.loop.run_in_executor(None, still_open)

    def answered(future: asyncio.Future[str | None]) -> None:
        if running.finished:
            return
        if future.cancelled() or future.exception() is not None:
            # a database that does not answer for a moment does not end 28 answers: ask again at the next tick
            log.warning("could not ask whether a running answer may go on: %r", None if future.cancelled() else future.exception())
        elif reason := future.result():
            running.wake(reason)
            return
        running.timer = running.loop.call_later(CHECK_EVERY_S, _check, running, still_open)

    asked.add_done_callback(answered)
