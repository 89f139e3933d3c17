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


class LoginRefused(Exception):
    """A login that is not checked now; ``retry_after_s`` says when to try again."""

    def __init__(self, retry_after_s: int, busy: bool = False):
        super().__init__(retry_after_s)
        self.retry_after_s = retry_after_s
        self.busy = busy


class LoginLimiter:
    """Limits password guessing without letting anyone lock another user out.

    - Failures count per account name *and* address: five wrong passwords for a
      teacher's name from one PC make only that PC wait, never the teacher.
    - Failures count per address across names, at a higher limit.
    - A name attacked from many addresses is slowed down, not locked: tries for
      it are spaced ``login_backoff_s`` apart, so its owner gets in seconds later.
    - Password checks (argon2, 64 MiB each) run at most ``login_concurrency`` at
      once, one per address; more are refused at once instead of queueing, so
      a burst costs neither memory nor a look at the limits above.
    Every wait ends by itself: windows slide, and refused tries are not counted.
    """

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.failures = SlidingWindow(config.login_window_s)
        self._running: dict[str, int] = defaultdict(int)
        self._total = 0
        self._last_try: dict[str, float] = {}
        self._lock = threading.Lock()

    def _wait(self, key: str, limit: int) -> float:
        with self.failures._lock:
            events = self.failures._trim(key, time.monotonic())
            return max(1.0, events[0] + self.failures.window_s - time.monotonic()) if len(events) >= limit else 0.0

    def start(self, name: str, address: str) -> None:
        """Take a slot for one password check, or raise LoginRefused; call ``finish`` afterwards."""
        name = name.lower()
        wait = max(
            self._wait(f"pair:{name}|{address}", self.config.login_attempts),
            self._wait(f"ip:{address}", self.config.login_attempts_per_address),
        )
        if wait:
            raise LoginRefused(int(wait) + 1)
        with self._lock:
            if self._total >= self.config.login_concurrency or self._running[address] >= self.config.login_concurrency_per_address:
                raise LoginRefused(1, busy=True)
            now = time.monotonic()
            if self.failures.count(f"name:{name}") >= self.config.login_attempts_per_account:
                since = now - self._last_try.get(name, 0.0)
                if since < self.config.login_backoff_s:
                    raise LoginRefused(int(self.config.login_backoff_s - since) + 1, busy=True)
            self._last_try[name] = now
            self._total += 1
            self._running[address] += 1

    def finish(self, name: str, address: str, succeeded: bool) -> None:
        name = name.lower()
        with self._lock:
            self._total -= 1
            self._running[address] -= 1
            if not self._running[address]:
                del self._running[address]
            if len(self._last_try) > 10_000:
                self._last_try.clear()
        if succeeded:
            self.failures.clear(f"pair:{name}|{address}")
        else:
            for key in (f"pair:{name}|{address}", f"ip:{address}", f"name:{name}"):
                self.failures.add(key)


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
