"""Per-role quotas (requests per minute, tokens per day) and the sliding windows that count rates.

Request rates are counted in memory with a sliding window: one gateway
process serves a school. Tokens per day are counted in the accounts database,
so they survive a restart and add up across gateways that share it.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from schulki.config import GatewayConfig
from schulki.gateway.accounts import Account, Accounts


class QuotaExceeded(Exception):
    """A quota or rate limit is used up; the message is German and says when to try again."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class SlidingWindow:
    """Counts events per key within the last ``window_s`` seconds.

    A key without events in the window takes no memory: looking one up does
    not store it, so a stream of made-up names costs nothing to count.
    """

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _trim(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            return deque()
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if not events:
            del self._events[key]
        return events

    def count(self, key: str) -> int:
        with self._lock:
            return len(self._trim(key, time.monotonic()))

    def last(self, key: str) -> float | None:
        """When the newest event of the key within the window happened (time.monotonic), or None."""
        with self._lock:
            events = self._trim(key, time.monotonic())
            return events[-1] if events else None

    def wait(self, key: str, limit: int) -> float:
        """0 while the key has fewer than ``limit`` events, else the seconds until the oldest one leaves the window."""
        with self._lock:
            now = time.monotonic()
            events = self._trim(key, now)
            return max(1.0, events[0] + self.window_s - now) if len(events) >= limit else 0.0

    def add(self, key: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._trim(key, now)
            self._events.setdefault(key, deque()).append(now)

    def try_add(self, key: str, limit: int) -> float:
        """Add an event unless the key reached its limit; returns 0, or the seconds until the oldest event expires."""
        with self._lock:
            now = time.monotonic()
            events = self._trim(key, now)
            if len(events) >= limit:
                return max(1.0, events[0] + self.window_s - now)
            self._events.setdefault(key, events).append(now)
            return 0.0

    def clear_all(self) -> None:
        with self._lock:
            self._events.clear()

    def clear(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)


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


class Quotas:
    """Checks and counts what each user may still do."""

    def __init__(self, config: GatewayConfig, accounts: Accounts):
        self.config = config
        self.accounts = accounts
        self.requests = SlidingWindow(60.0)

    def _spent(self, account: Account) -> QuotaExceeded:
        token_limit = self.config.tokens_per_day.get(account.role, 0)
        return QuotaExceeded(f"Dein Tageskontingent von {token_limit} Tokens ist aufgebraucht. Morgen geht es weiter.", 3600)

    def admit(self, account: Account) -> None:
        """Count one request, or raise QuotaExceeded when the user is over a quota."""
        token_limit = self.config.tokens_per_day.get(account.role, 0)
        if self.accounts.tokens_today(account.id) >= token_limit:
            raise self._spent(account)
        rate_limit = self.config.requests_per_minute.get(account.role, 0)
        wait = self.requests.try_add(str(account.id), rate_limit)
        if wait:
            raise QuotaExceeded(f"Zu viele Anfragen: höchstens {rate_limit} pro Minute. Bitte warte {wait:.0f} Sekunden.", int(wait) + 1)
        self.accounts.count_usage(account.id, requests=1)

    def reserve(self, account: Account, prompt_tokens: int, max_tokens: int, count_request: bool = True) -> Reservation:
        """Admit one request and set aside its prompt and its longest answer against the daily token quota.

        Parallel requests each reserve their own share, so together they cannot
        overrun the quota. When less than the longest answer is left, the answer
        is shortened to what is left; when not even the prompt fits, QuotaExceeded.
        """
        if count_request:
            self.admit(account)
        token_limit = self.config.tokens_per_day.get(account.role, 0)
        granted = self.accounts.reserve_tokens(account.id, prompt_tokens, max_tokens, token_limit)
        if granted is None:
            raise self._spent(account)
        return Reservation(self, account, prompt_tokens + granted, granted)

    def add_tokens(self, account: Account, tokens: int) -> None:
        if tokens > 0:
            self.accounts.count_usage(account.id, tokens=tokens)
