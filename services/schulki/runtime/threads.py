"""The bridge from a worker (a thread, or a task) to the async stream a service answers with.

The engines run their models on worker threads (a llama context, a Whisper
model), and retrieval parses in a child process watched by a task; each emits
items (text pieces, segments, progress) and ends with a last item or an error.
(The batch worker of the chat engine hands a step's pieces of many requests
to the loop at once, then each lands in its request's ``Bridge``.)
``Bridge`` carries them, in order, to the event loop: ``put`` may be called
from any thread, ``stream`` yields them until the last one and raises an error
put in its place. ``stream_from_thread`` runs a blocking function on an
executor with such a bridge and, when the caller stops reading early, tells the
function to stop and waits until it has, so its thread is free again when the
stream closes; ``stream_from_task`` does the same for a coroutine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Bridge(Generic[T]):
    """Items from a worker, read in order on the event loop that made the bridge; an exception put ends the stream with it."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[T | BaseException] = asyncio.Queue()

    def put(self, item: T | BaseException) -> None:
        """Hand an item to the loop; safe from any thread. Dropped when the loop is gone (shut down: nobody reads any more)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def put_here(self, item: T | BaseException) -> None:
        """Hand an item over from the loop's own thread (no wake-up needed)."""
        self._queue.put_nowait(item)

    async def get(self) -> T:
        """The next item; an exception put is raised here."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def ready(self, accept: Callable[[T], bool]) -> list[T]:
        """The items already waiting that ``accept`` takes, up to the first it does not (or an exception): what piled up
        while the reader was busy."""
        items: list[T] = []
        waiting = self._queue._queue  # type: ignore[attr-defined]  # asyncio.Queue has no peek
        while waiting and not isinstance(waiting[0], BaseException) and accept(waiting[0]):
            items.append(self._queue.get_nowait())  # type: ignore[arg-type]
        return items

    async def stream(self, last: Callable[[T], bool]) -> AsyncIterator[T]:
        """Yield the items up to and including the first one ``last`` accepts."""
        while True:
            item = await self.get()
            yield item
            if last(item):
                return


async def stream_from_thread(
    executor: concurrent.futures.Executor, work: Callable[[Callable[[Any], None], threading.Event], R]
) -> AsyncGenerator[Any, None]:
    """Run ``work(emit, cancelled)`` on the executor; yield what it emits, then what it returns.

    ``work`` calls ``emit(item)`` from its thread as items are ready, and
    should stop soon after ``cancelled`` is set: that happens when the caller
    closes this iterator early, which then waits for the thread to finish.
    An exception raised by ``work`` reaches the caller after the items before it.
    """
    bridge: Bridge[Any] = Bridge()
    cancelled = threading.Event()

    def run() -> None:
        try:
            bridge.put(_Returned(work(bridge.put, cancelled)))
        except BaseException as error:
            bridge.put(error)

    future = bridge.loop.run_in_executor(executor, run)
    try:
        while True:
            item = await bridge.get()
            if isinstance(item, _Returned):
                yield item.value
                return
            yield item
    finally:
        cancelled.set()
        await asyncio.shield(future)


class _Returned:
    """What the worker function returned: the last item of its stream."""

    def __init__(self, value: object):
        self.value = value


async def stream_from_task(work: Callable[[Callable[[Any], None]], Awaitable[R]]) -> AsyncGenerator[Any, None]:
    """``stream_from_thread`` for a coroutine on the loop itself (one that watches a child process):
    yield what ``work(emit)`` emits, then what it returns; closing the iterator early cancels it."""
    bridge: Bridge[Any] = Bridge()
    task = asyncio.ensure_future(work(bridge.put_here))

    def finished(task: asyncio.Future[R]) -> None:
        if not task.cancelled():
            error = task.exception()
            bridge.put_here(error if error is not None else _Returned(task.result()))

    task.add_done_callback(finished)
    try:
        while True:
            item = await bridge.get()
            if isinstance(item, _Returned):
                yield item.value
                return
            yield item
    finally:
        if not task.done():
            task.cancel()
