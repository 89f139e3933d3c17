"""The login rate limit: password guessing is slowed down, and nobody can use it to keep another user out.

What a class of students can try against a teacher, and what stops it:

- **Guessing her password from many PCs.** Failures count per name *and*
  address (``login_attempts``) and per address (``login_attempts_per_address``),
  so each guessing PC soon has to wait. Once a name has
  ``login_attempts_per_account`` failures from everywhere, every address that
  failed for it gets one try per ``login_backoff_s`` for it, each on its own
  clock. There is no shared "next try" for the name that pollers could win:
  the teacher's own PC, which has not failed, logs in at once, and a refused
  try neither counts nor moves anyone's clock.
- **Logging in correctly in a loop** (as oneself) to keep every password
  check busy: successful logins count too, per name
  (``login_successes_per_account``) and per address
  (``login_successes_per_address``), and are refused before a check once
  over. Sessions per user are capped elsewhere (``sessions_per_user``).
- **Bursts**: password checks (argon2, 64 MiB each) run at most
  ``login_concurrency`` at once, one per address and one per name and address.
  Logins beyond that wait in one line, first come first served, at most
  ``login_wait_s``; an address may have one login waiting (a NAT address
  more, up to ``login_queue`` in all), a further one gets 429 at once. A
  teacher thus waits behind at most one login of each other address, never
  behind a burst, and a class that logs in at once gets in.

Every refusal above costs no password check. A class behind one NAT address
(``nat_addresses``) gets that address's limits raised to the ``login_nat_*``
settings, so three students logging in at once, or a few typos, do not hold
back the rest of the class. Behind one address a teacher and the students
guessing her password look alike, so a browser that has logged in as a name
before (it holds a device cookie for that name, see auth.py) counts as a place
of its own: failures for that name from elsewhere at the same address neither
block nor slow it, nor does the limit on the address's failures. Every wait
ends by itself: windows slide.

The counts (failures, logins, and so the backoff of a name under attack) live
in the accounts database (rate_windows.py): gateways that share it throttle
together, a name slowed on one is slowed on every other. The password checks
running at once and the line of waiting logins stay per gateway process: they
guard that process's memory and CPU, and a second gateway has its own. So the
rule "one check at a time per name and place" holds per gateway; with n
gateways an attacker may have up to n checks of one name and place running
when the limit is reached, and counts at most n - 1 failures past it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from schulki.config import GatewayConfig
from schulki.gateway.accounts.rate_windows import SharedWindow
from schulki.gateway.web.addresses import in_networks


class LoginRefused(Exception):
    """A login that is not checked now; ``retry_after_s`` says when to try again.

    ``reason``: "failures" (too many wrong passwords), "logins" (too many
    logins in a short time) or "busy" (every password check is taken)."""

    def __init__(self, retry_after_s: int, reason: str = "failures"):
        super().__init__(retry_after_s)
        self.retry_after_s = retry_after_s
        self.reason = reason

    @property
    def busy(self) -> bool:
        return self.reason == "busy"


def _pair(name: str, address: str, device: str | None) -> str:
    """Where tries for a name are counted: the known browser, else the address."""
    return f"{name}|device:{device}" if device else f"{name}|{address}"


@dataclass(eq=False)
class _Waiter:
    """A login waiting for a password check; the slot is taken on its behalf before it is woken."""

    address: str
    pair: str
    concurrency: int
    event: asyncio.Event
    loop: asyncio.AbstractEventLoop
    granted: bool = False


class LoginLimiter:
    """Counts logins and hands out password-check slots; see the module's docstring for the rules."""

    def __init__(self, config: GatewayConfig, engine: Engine):
        """``engine``: the accounts database, where the counts live (shared by every gateway on it)."""
        self.config = config
        self.failures = SharedWindow(engine, "login-failures", config.login_window_s)
        self.successes = SharedWindow(engine, "logins", config.login_window_s)
        self._running: dict[str, int] = defaultdict(int)
        self._running_pairs: set[str] = set()
        self._total = 0
        self._waiting: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every count (the tests start each attack afresh)."""
        self.failures.clear_all()
        self.successes.clear_all()

    def _shared(self, address: str) -> bool:
        """Whether many users share the address (one of the school's NAT addresses)."""
        return bool(self.config.nat_addresses) and in_networks(address, self.config.nat_addresses)

    def _per_address(self, address: str) -> tuple[int, int, int]:
        """Failures, successes and checks at once allowed for one address: higher for the school's NAT addresses."""
        c = self.config
        if self._shared(address):
            return c.login_nat_attempts_per_address, c.login_nat_successes_per_address, c.login_nat_concurrency_per_address
        return c.login_attempts_per_address, c.login_successes_per_address, c.login_concurrency_per_address

    def _backoff(self, name: str, pair: str) -> float:
        """Seconds this address must still wait for a name under attack; 0 for an address that has not failed for it."""
        if self.failures.count(f"name:{name}") < self.config.login_attempts_per_account:
            return 0.0
        last = self.failures.last(f"pair:{pair}")
        if last is None:
            return 0.0
        return max(0.0, last + self.config.login_backoff_s - time.time())

    def _check(self, name: str, pair: str, address: str, device: str | None) -> None:
        """Raise LoginRefused when a count says this try must wait; costs no password check."""
        address_failures, address_successes, _ = self._per_address(address)
        failed = max(
            self.failures.wait(f"pair:{pair}", self.config.login_attempts),
            0.0 if device else self.failures.wait(f"ip:{address}", address_failures),
            self._backoff(name, pair),
        )
        if failed:
            raise LoginRefused(int(failed) + 1, "failures")
        logged_in = max(
            self.successes.wait(f"name:{name}", self.config.login_successes_per_account),
            self.successes.wait(f"ip:{address}", address_successes),
        )
        if logged_in:
            raise LoginRefused(int(logged_in) + 1, "logins")

    def _free(self, address: str, pair: str, concurrency: int) -> bool:
        return (
            self._total < self.config.login_concurrency
            and self._running.get(address, 0) < concurrency  # .get: an address refused here takes no memory
            and pair not in self._running_pairs  # one check at a time per name and place: its failure counts before the next
        )

    def _take(self, address: str, pair: str) -> None:
        self._total += 1
        self._running[address] += 1
        self._running_pairs.add(pair)

    def _release(self, address: str, pair: str) -> None:
        """Free a slot and hand it to the longest-waiting login that may take it (under the lock)."""
        self._total -= 1
        self._running[address] -= 1
        if not self._running[address]:
            del self._running[address]
        self._running_pairs.discard(pair)
        self._hand_over()

    def _hand_over(self) -> None:
        for waiter in list(self._waiting):
            if self._total >= self.config.login_concurrency:
                break
            if self._free(waiter.address, waiter.pair, waiter.concurrency):
                self._waiting.remove(waiter)
                self._take(waiter.address, waiter.pair)
                waiter.granted = True
                waiter.loop.call_soon_threadsafe(waiter.event.set)

    async def start(self, name: str, address: str, device: str | None = None) -> None:
        """Take a slot for one password check, waiting for one in order of arrival; or raise LoginRefused.
        Call ``finish`` afterwards.

        ``device``: the browser's device id when it has logged in as ``name`` before (a checked cookie), else None."""
        name = name.lower()
        pair = _pair(name, address, device)
        await asyncio.to_thread(self._check, name, pair, address, device)  # the counts are in the database
        concurrency, shared = self._per_address(address)[2], self._shared(address)
        with self._lock:
            self._hand_over()
            if self._free(address, pair, concurrency):
                self._take(address, pair)
                return
            waiting_here = sum(1 for w in self._waiting if w.address == address)
            if len(self._waiting) >= self.config.login_queue or (waiting_here and not shared):
                raise LoginRefused(1, "busy")  # one waiting login per address (a NAT may queue more): a burst waits in no line
            waiter = _Waiter(address, pair, concurrency, asyncio.Event(), asyncio.get_running_loop())
            self._waiting.append(waiter)
        try:
            await asyncio.wait_for(waiter.event.wait(), self.config.login_wait_s)
        except BaseException as error:  # timed out, or the request was cancelled: leave the line, or give back what was handed over
            with self._lock:
                if waiter.granted:
                    self._release(address, pair)
                else:
                    self._waiting.remove(waiter)
            if isinstance(error, TimeoutError):
                raise LoginRefused(1, "busy") from None
            raise
        try:  # counts may have changed while it waited (this name's last try from here failed)
            await asyncio.to_thread(self._check, name, pair, address, device)
        except BaseException:  # refused now, or the request was cancelled meanwhile: the slot goes back
            with self._lock:
                self._release(address, pair)
            raise

    def finish(self, name: str, address: str, succeeded: bool, device: str | None = None) -> None:
        """Count the check's result and free its slot; writes to the database, so call it off the event loop."""
        name = name.lower()
        pair = _pair(name, address, device)
        try:
            if succeeded:
                self.failures.clear(f"pair:{pair}")
                self.successes.add(f"name:{name}", f"ip:{address}")
            else:
                self.failures.add(f"pair:{pair}", f"ip:{address}", f"name:{name}")
        finally:  # counted before the slot is free, so that the next try of this pair sees this one's result (and freed if the database failed)
            with self._lock:
                self._release(address, pair)
