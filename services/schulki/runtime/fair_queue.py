"""A fair waiting line in front of an engine's slots (llama.cpp decoding, Whisper).

One llama context is not thread safe, so requests take turns. The line is fair
between users: when a slot frees, the next turn goes to the waiting user with
the fewest requests running, then to the one whose next request has waited
longest, where a request that queued while the same user's previous one ran
counts as arriving when that one ended. A user with several requests therefore
waits behind users with none, users with many take turns round robin, and
students who ask one question at a time are served first come, first served
(which keeps the longest wait of a class short). A full line refuses new requests at once, and a request that
is cancelled while it waits leaves the line without taking a turn.

The engine has ``slots`` places (the chat engine decodes that many sequences
in one batch). One user holds at most ``max_running_per_user`` of them at
once: further requests of that user wait even while slots are free, so a
student with five tabs takes two slots, not five, and the others stay free
for the class.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from schulki.runtime.errors import Busy

BUSY_MESSAGE = (
    "Gerade fragen sehr viele gleichzeitig. Bitte warte einen Moment und versuche es dann noch einmal. "
    "(The server is busy: {waiting} requests are waiting. Please try again in a minute.)"
)
USER_BUSY_MESSAGE = (
    "Du hast schon {waiting} Anfragen in der Warteschlange. Warte, bis eine fertig ist. (You already have {waiting} requests waiting.)"
)


@dataclass(order=True)
class _Waiter:
    seq: int
    user: str = field(compare=False)
    future: asyncio.Future = field(compare=False)


class FairScheduler:
    """Hands out ``slots`` turns at a time, fairly between users."""

    def __init__(self, slots: int = 1, max_queued: int = 32, max_queued_per_user: int = 4, max_running_per_user: int | None = None):
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.max_queued = max_queued
        self.max_queued_per_user = max_queued_per_user
        self.max_running_per_user = max_running_per_user or slots
        self._running: dict[str, int] = defaultdict(int)
        self._waiting: dict[str, deque[_Waiter]] = defaultdict(deque)
        self._last_ended: dict[str, int] = {}
        self._clock = itertools.count()
        """Ticks for arrivals and for ends of turns, in one order."""
        self._free = slots
        self._queued = 0

    @property
    def queue_length(self) -> int:
        """Requests waiting for a turn; a plain counter, so an engine's worker thread may read it too."""
        return self._queued

    @property
    def running(self) -> int:
        """Requests holding a turn."""
        return self.slots - self._free

    @asynccontextmanager
    async def turn(self, user: str) -> AsyncIterator[None]:
        """Wait for a turn (or fail at once with Busy) and hold it for the block."""
        await self._acquire(user)
        try:
            yield
        finally:
            self._release(user)

    async def _acquire(self, user: str) -> None:
        if self._free > 0 and self.queue_length == 0 and self._running.get(user, 0) < self.max_running_per_user:
            self._grant(user)
            return
        waiting = self.queue_length
        if waiting >= self.max_queued:
            raise Busy(BUSY_MESSAGE.format(waiting=waiting))
        mine = len(self._waiting.get(user, ()))
        if mine >= self.max_queued_per_user:
            raise Busy(USER_BUSY_MESSAGE.format(waiting=mine))
        waiter = _Waiter(next(self._clock), user, asyncio.get_running_loop().create_future())
        self._waiting[user].append(waiter)
        self._queued += 1
        self._hand_out()  # a slot may be free for this user while others wait only for their own cap
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                # The turn was granted just as the caller gave up: hand it on.
                self._release(user)
            else:
                self._remove(waiter)
            raise

    def _grant(self, user: str) -> None:
        self._free -= 1
        self._running[user] += 1

    def _remove(self, waiter: _Waiter) -> None:
        queue = self._waiting.get(waiter.user)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self._queued -= 1
            if not queue:
                del self._waiting[waiter.user]

    def _release(self, user: str) -> None:
        self._free += 1
        self._running[user] -= 1
        self._last_ended[user] = next(self._clock)
        if self._running[user] <= 0:
            del self._running[user]
        self._hand_out()

    def _hand_out(self) -> None:
        while self._free > 0:
            allowed = [u for u in self._waiting if self._running.get(u, 0) < self.max_running_per_user]
            if not allowed:
                return
            nxt = min(
                allowed,
                key=lambda u: (self._running.get(u, 0), max(self._waiting[u][0].seq, self._last_ended.get(u, -1)), self._waiting[u][0].seq),
            )
            waiter = self._waiting[nxt].popleft()
            self._queued -= 1
            if not self._waiting[nxt]:
                del self._waiting[nxt]
            if waiter.future.done():
                continue
            self._grant(nxt)
            waiter.future.set_result(None)
