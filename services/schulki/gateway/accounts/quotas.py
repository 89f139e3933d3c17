"""Per-role quotas (requests per minute, tokens per day) and the sliding windows that count rates.

Both are counted in the accounts database, so they survive a restart and add
up across gateways that share it: requests per minute in a sliding window
(rate_windows.py), tokens per day in the usage table.

A streamed answer's admission, reservation and settlement run on one writer
thread of their own (``reserve_off_loop``, ``Reservation.settle_off_loop``),
not on the event loop that streams every answer: a commit of SQLite or a round
trip to PostgreSQL no longer holds up the pieces of the other answers. The one
thread also keeps the writes in the order they were asked for, and SQLite's
single writer is never contended by the gateway's own requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.orm import Session

from schulki.config import GatewayConfig
from schulki.gateway.accounts.database import Account, Accounts, locked_usage, reserve_on
from schulki.gateway.accounts.rate_windows import SharedWindow

T = TypeVar("T")


class QuotaExceeded(Exception):
    """A quota or rate limit is used up; the message is German and says when to try again."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """An upper bound for the tokens of a prompt, without asking the model: a token covers at least one UTF-8 byte.

    The template adds a few tokens per message. The bound is generous on purpose:
    a reservation is settled with the real count when the answer ends.
    """
    return 8 + sum(len(str(m.get("content", "")).encode()) + 8 for m in messages)


class Reservation:
    """Tokens set aside for one request at admission; ``settle`` replaces them with what it really used."""

    def __init__(self, quotas: Quotas, account: Account, reserved: int, max_tokens: int):
        self.quotas, self.account, self.reserved, self.max_tokens = quotas, account, reserved, max_tokens
        self.streamed = False
        self.open = True

    def settle(self, used_tokens: int) -> None:
        if self.open:
            self.open = False
            self.quotas.accounts.count_usage(self.account.id, tokens=used_tokens - self.reserved)

    def release(self) -> None:
        """At the end in any case: a request that failed before any answer costs nothing; one broken off mid-answer keeps its reservation."""
        if self.open and not self.streamed:
            self.settle(0)
        self.open = False

    async def settle_off_loop(self, used_tokens: int) -> None:
        """``settle`` on the quotas' writer thread; the event loop goes on streaming meanwhile."""
        if self.open:
            self.open = False
            await self.quotas.off_loop(self.quotas.accounts.count_usage, self.account.id, tokens=used_tokens - self.reserved)

    async def release_off_loop(self) -> None:
        """``release`` on the writer thread. Marked closed before the write is queued: a cancelled caller (the client went
        away) stops waiting, and the queued write still runs."""
        if self.open and not self.streamed:
            await self.settle_off_loop(0)
        self.open = False


class Quotas:
    """Checks and counts what each user may still do."""

    def __init__(self, config: GatewayConfig, accounts: Accounts):
        self.config = config
        self.accounts = accounts
        self.requests = SharedWindow(accounts.engine, "requests", 60.0)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="schulki-quotas")

    async def off_loop(self, work: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``work`` on the writer thread, awaited; a caller cancelled meanwhile leaves it to run to its end there."""
        return await asyncio.wrap_future(self._writer.submit(work, *args, **kwargs))

    async def reserve_off_loop(self, account: Account, prompt_tokens: int, max_tokens: int, count_request: bool = True) -> Reservation:
        """``reserve`` on the writer thread. A caller cancelled while it runs does not leak the reservation: the writer
        releases it right after, as the next job in its queue."""
        future = self._writer.submit(self.reserve, account, prompt_tokens, max_tokens, count_request)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self._writer.submit(_release_reserved, future)
            raise

    def close(self) -> None:
        """Wait for the writes queued so far (the app's shutdown): no settlement is lost. A fresh writer takes over, for
        an app that starts the same Gateway again."""
        done, self._writer = self._writer, ThreadPoolExecutor(max_workers=1, thread_name_prefix="schulki-quotas")
        done.shutdown(wait=True)

    def _spent(self, account: Account) -> QuotaExceeded:
        token_limit = self.config.tokens_per_day.get(account.role, 0)
        return QuotaExceeded(f"Dein Tageskontingent von {token_limit} Tokens ist aufgebraucht. Morgen geht es weiter.", 3600)

    def _too_many(self, rate_limit: int, wait: float) -> QuotaExceeded:
        return QuotaExceeded(f"Zu viele Anfragen: höchstens {rate_limit} pro Minute. Bitte warte {wait:.0f} Sekunden.", int(wait) + 1)

    def admit(self, account: Account) -> None:
        """Count one request, or raise QuotaExceeded when the user is over a quota."""
        token_limit = self.config.tokens_per_day.get(account.role, 0)
        if self.accounts.tokens_today(account.id) >= token_limit:
            raise self._spent(account)
        self.admit_request(account)

    def admit_request(self, account: Account) -> None:
        """Count one request against the per-minute rate only (a task's answers draw tokens from the task's budget)."""
        rate_limit = self.config.requests_per_minute.get(account.role, 0)
        wait = self.requests.try_add(str(account.id), rate_limit)
        if wait:
            raise self._too_many(rate_limit, wait)
        self.accounts.count_usage(account.id, requests=1)

    def reserve(self, account: Account, prompt_tokens: int, max_tokens: int, count_request: bool = True) -> Reservation:
        """Admit one request and set aside its prompt and its longest answer against the daily token quota.

        Parallel requests each reserve their own share, so together they cannot
        overrun the quota. When less than the longest answer is left, the answer
        is shortened to what is left; when not even the prompt fits, QuotaExceeded.
        The admission (the daily quota, the rate window, the request count) and
        the reservation are one transaction: one commit per answer before it
        starts, where there were three.
        """
        token_limit = self.config.tokens_per_day.get(account.role, 0)
        if not count_request:
            granted = self.accounts.reserve_tokens(account.id, prompt_tokens, max_tokens, token_limit)
        else:
            rate_limit = self.config.requests_per_minute.get(account.role, 0)

            def admit_and_reserve(db: Session, wait: float) -> int | None:
                usage = locked_usage(db, account.id)
                if usage.tokens >= token_limit:
                    raise self._spent(account)
                if wait:
                    raise self._too_many(rate_limit, wait)
                usage.requests += 1
                return reserve_on(usage, prompt_tokens, max_tokens, token_limit)

            granted = self.requests.try_add_with(str(account.id), rate_limit, admit_and_reserve)
        if granted is None:
            raise self._spent(account)
        return Reservation(self, account, prompt_tokens + granted, granted)

    def add_tokens(self, account: Account, tokens: int) -> None:
        if tokens > 0:
            self.accounts.count_usage(account.id, tokens=tokens)


def _release_reserved(reserved: Future[Reservation]) -> None:
    """Release a reservation whose requester went away before it got it (run on the writer, after the reservation)."""
    if not reserved.cancelled() and reserved.exception() is None:
        reserved.result().release()
