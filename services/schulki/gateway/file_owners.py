"""Who owns which file in Gradio's cache: the only files a user may send to an event or download.

Gradio keeps every upload and every file an event hands out in one cache
folder shared by all users, and serves any of them to anyone who knows the
path. The gateway therefore notes, per file, the account it belongs to: an
upload belongs to the account that uploaded it, a transcript to the account
that made it. The note lives in memory (one gateway process serves a school,
and Gradio's cache is emptied within hours anyway); after a restart the old
files are simply no longer reachable.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

MAX_AGE_S = 24 * 3600.0
"""How long an ownership note is kept; Gradio deletes cached files after an hour (``delete_cache``)."""


def real_path(path: str | os.PathLike) -> str | None:
    """The absolute path of a plain file that no symbolic link leads to, or None.

    Devices (``/dev/zero``), folders, sockets and links are never user files.
    """
    try:
        absolute = os.path.abspath(path)
        resolved = os.path.realpath(absolute)
        if resolved != absolute or not Path(resolved).is_file() or Path(resolved).is_symlink():
            return None
        return resolved
    except (OSError, ValueError):
        return None


class FileOwners:
    """Maps a cached file's real path to the accounts it belongs to.

    Gradio names a cached copy by a hash of its content, so two users who get
    the same transcript share one cached file. (Uploads no longer do: each
    user's go to a folder of their own, gradio_uploads.)
    """

    def __init__(self) -> None:
        self._owners: dict[str, tuple[set[int], float]] = {}
        self._lock = threading.Lock()

    def add(self, path: str | os.PathLike, account_id: int) -> None:
        resolved = real_path(path)
        if resolved is None:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._owners) > 10_000:  # forget what Gradio has long deleted
                self._owners = {p: v for p, v in self._owners.items() if now - v[1] < MAX_AGE_S}
            owners = self._owners.get(resolved, (set(), now))[0]
            self._owners[resolved] = (owners | {account_id}, now)

    def owns(self, path: str | os.PathLike, account_id: int) -> bool:
        resolved = real_path(path)
        if resolved is None:
            return False
        with self._lock:
            found = self._owners.get(resolved)
        return found is not None and account_id in found[0]

    def forget_account(self, account_id: int) -> None:
        with self._lock:
            self._owners = {p: (owners - {account_id}, t) for p, (owners, t) in self._owners.items() if owners - {account_id}}
