"""Gradio's sessions and events bound to the account that started them.

Gradio keeps a page's state (a chat's history, the open chat's id) under the
page's ``session_hash`` and nothing else, and its ``/cancel`` route needs no
login: anyone who knows a hash could read another student's state through
``queue/join`` or cancel her events. The gateway therefore notes the account
that first used each session hash and each event id, and the guard refuses
every other account (gradio_guard.GradioGuard).

Both notes live in memory, as what they guard does: Gradio keeps sessions and
events in one process (several gateways need sticky sessions for the page, see
the README), and after a restart it has forgotten them too.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs

MAX_AGE_S = 24 * 3600.0
"""How long a note is kept; a page open longer than a school day starts a new session when reloaded."""
MAX_NOTES = 200_000
"""Past this many notes the ones older than MAX_AGE_S are forgotten, and if that is not enough the older half (a class
of 30 makes a few thousand a day; a script inventing session hashes must not grow the gateway's memory without end)."""

SESSION_IN_PATH = re.compile(r"^(?:heartbeat|stream)/([^/]+)(?:/|$)")
EVENT_IN_PATH = re.compile(r"^(?:call/(?:v2/)?[^/]+/([^/]+)|stream/([^/]+)(?:/close)?)/?$")


class Bindings:
    """Maps a key (a session hash, an event id) to the account that used it first."""

    def __init__(self) -> None:
        self._owners: dict[str, tuple[int, float]] = {}

    def owner(self, key: str) -> int | None:
        found = self._owners.get(key)
        return found[0] if found else None

    def claim(self, key: str, account_id: int) -> bool:
        """Note ``account_id`` as the key's owner if it has none; whether the key is (now) that account's."""
        now = time.monotonic()
        found = self._owners.get(key)
        if found is not None and found[0] != account_id:
            return False
        if len(self._owners) > MAX_NOTES:
            self._owners = {k: v for k, v in self._owners.items() if now - v[1] < MAX_AGE_S}
            if len(self._owners) > MAX_NOTES // 2:
                newest = sorted(self._owners.items(), key=lambda item: item[1][1])[-(MAX_NOTES // 2) :]
                self._owners = dict(newest)
        self._owners[key] = (account_id, now)
        return True


def session_hash_of(route: str, query: bytes, data: object) -> str | None:
    """The session hash a request to ``/gradio_api/<route>`` names: in the path, the query or the JSON body."""
    match = SESSION_IN_PATH.match(route)
    # POST stream/<event id> names an event, GET stream/<session hash>/... a session
    if match and (route.startswith("heartbeat/") or route.count("/") >= 3):
        return match.group(1)
    hashes = parse_qs(query.decode("latin-1")).get("session_hash")
    if hashes:
        return hashes[0]
    if isinstance(data, dict) and data.get("session_hash") is not None:
        return str(data["session_hash"])
    return None


def event_id_of(route: str, method: str, data: object) -> str | None:
    """The event a request acts on: ``/cancel``'s body, ``GET call/<api>/<event>``, ``POST stream/<event>[/close]``."""
    if route.rstrip("/") == "cancel":
        return str(data.get("event_id")) if isinstance(data, dict) else ""
    match = EVENT_IN_PATH.match(route)
    if match is None:
        return None
    if match.group(1) is not None:
        return match.group(1) if method == "GET" else None
    return match.group(2) if method == "POST" else None


def starts_event(route: str, method: str) -> bool:
    """Whether Gradio answers this request with a new event's id (``{"event_id": ...}``)."""
    route = route.rstrip("/")
    return method == "POST" and (
        route == "queue/join" or (route.startswith("call/") and route.count("/") == 1 + route.startswith("call/v2/"))
    )
