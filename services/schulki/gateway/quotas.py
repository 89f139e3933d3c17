"""Per-role quotas (requests per minute, tokens per day) and the login rate limit.

Request rates are counted in memory with a sliding window: one gateway
process serves a school. Tokens per day are counted in the accounts database,
so they survive a restart and add up across gateways that share it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from schulki.config import GatewayConfig
from schulki.gateway.accounts import Account, Accounts


class QuotaExceeded(Exception):
    """A quota or rate limit is used up; the message is German and says when to try again."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class SlidingWindow:
    """Counts events per key within the last ``window_s`` seconds."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _trim(self, key: str, now: float) -> deque[float]:
        events = self._events[key]
        while events and events[0] <= now - self.window_s:
            events.popleft()
        return events

    def count(self, key: str) -> int:
        with self._lock:
            return len(self._trim(key, time.monotonic()))

    def add(self, key: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._trim(key, now).append(now)

    def try_add(self, key: str, limit: int) -> float:
        """Add an event unless the key reached its limit; returns 0, or the seconds until the oldest event expires."""
        with self._lock:
            now = time.monotonic()
            events = self._trim(key, now)
            if len(events) >= limit:
                return max(1.0, events[0] + self.window_s - now)
            events.append(now)
            return 0.0

    def clear(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)


class LoginLimiter:
    """Refuses further logins after too many failures, per account name and per address."""

    def __init__(self, attempts: int, window_s: float):
        self.attempts = attempts
        self.failures = SlidingWindow(window_s)

    def blocked(self, name: str, address: str) -> bool:
        return self.failures.count(f"name:{name.lower()}") >= self.attempts or self.failures.count(f"ip:{address}") >= self.attempts

    def failed(self, name: str, address: str) -> None:
        self.failures.add(f"name:{name.lower()}")
        self.failures.add(f"ip:{address}")

    def succeeded(self, name: str) -> None:
        self.failures.clear(f"name:{name.lower()}")


class Quotas:
    """Checks and counts what each user may still do."""

    def __init__(self, config: GatewayConfig, accounts: Accounts):
        self.config = config
        self.accounts = accounts
        self.requests = SlidingWindow(60.0)

    def admit(self, account: Account) -> None:
        """Count one request, or raise QuotaExceeded when the user is over a quota."""
        token_limit = self.config.tokens_per_day.get(account.role, 0)
        if self.accounts.tokens_today(account.id) >= token_limit:
            raise QuotaExceeded(f"Dein Tageskontingent von {token_limit} Tokens ist aufgebraucht. Morgen geht es weiter.", 3600)
        rate_limit = self.config.requests_per_minute.get(account.role, 0)
        wait = self.requests.try_add(str(account.id), rate_limit)
        if wait:
            raise QuotaExceeded(f"Zu viele Anfragen: höchstens {rate_limit} pro Minute. Bitte warte {wait:.0f} Sekunden.", int(wait) + 1)
        self.accounts.count_usage(account.id, requests=1)

    def add_tokens(self, account: Account, tokens: int) -> None:
        if tokens > 0:
            self.accounts.count_usage(account.id, tokens=tokens)
