"""The answers that run now, so that a teacher's emergency stop or a task's end can end them within a second.

Each running answer of a student registers here with its task (if any) and
the classes it belongs to (the student's and the task's). ``stop_task`` and
``stop_class`` wake the answers concerned at once: their stream is closed,
which cancels the gRPC call, and the inference service frees the sequence.
The stop may come from any thread (a Gradio event runs a plain function in a
worker thread), so the wake-up goes through the answer's own event loop.
Besides the wake-up, a running answer looks every ``CHECK_EVERY_S`` at the
database (``still_open``): another gateway on the same database may have
paused the task or the class, and a task's end time comes without anyone
pressing anything.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

CHECK_EVERY_S = 1.0
"""How often a running answer asks the database whether it may go on (another gateway's stop, the end time)."""

Item = TypeVar("Item")


@dataclass
class _Running:
    task_id: int | None
    classes: frozenset[str]
    loop: asyncio.AbstractEventLoop
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""


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
            answer.reason = reason
            answer.loop.call_soon_threadsafe(answer.stopped.set)
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
        running = _Running(task_id, classes, asyncio.get_running_loop())
        with self._lock:
            self._running[number] = running
        source = aiter(events)
        waiter = asyncio.ensure_future(running.stopped.wait())
        step: asyncio.Future | None = None
        checked = time.monotonic()
        try:
            while True:
                step = step or asyncio.ensure_future(anext(source))
                wait = max(0.0, checked + CHECK_EVERY_S - time.monotonic())
                done, _ = await asyncio.wait({step, waiter}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if waiter in done:
                    raise AnswerStopped(running.reason or "paused")
                if time.monotonic() - checked >= CHECK_EVERY_S:  # however fast the pieces come
                    checked = time.monotonic()
                    reason = await run_in_threadpool(still_open)
                    if reason:
                        raise AnswerStopped(reason)
                if step in done:
                    try:
                        item = step.result()
                    except StopAsyncIteration:
                        return
                    step = None
                    yield item
        finally:
            with self._lock:
                self._running.pop(number, None)
            waiter.cancel()
            if step is not None and not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
            closing = getattr(source, "aclose", None)
            if closing is not None:
                await closing()
