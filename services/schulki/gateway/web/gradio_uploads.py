"""Uploads through the web page (``/gradio_api/upload``): each user's own folder, a quota and a rate.

Gradio stores an upload at ``<cache>/<hash of its content>/<name>``: two
students who upload the same worksheet get one and the same path, and the
event that is done with one student's copy (which deletes it) deleted the
other's. Its upload route also takes any number of files at any rate. The
gateway therefore answers the upload route itself, with Gradio's own parser
(``route_utils.upload_fn``), into ``<cache>/users/<account id>/``:

- a user's uploads never share a path with another user's;
- a user holds at most ``gateway.ui_upload_mb_per_user`` there at once (413),
  counted on disk, so what an event has used and deleted no longer counts;
- a user makes at most ``gateway.ui_uploads_per_minute`` upload requests a
  minute (429 with Retry-After).

The folder stays inside Gradio's upload cache, so Gradio's own check that an
event's files were uploaded still holds, and the hourly purge of the cache
(retention.purge_uploads) empties it.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import time
from pathlib import Path

from gradio import route_utils
from gradio.routes import file_upload_statuses
from gradio.utils import get_upload_folder
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Receive, Scope

from schulki.config import GatewayConfig

MIB = 1024 * 1024
RATE_WINDOW_S = 60.0


class UploadRefused(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def user_upload_folder(account_id: int) -> Path:
    """The folder of the account's uploads, inside Gradio's upload cache."""
    return Path(get_upload_folder()) / "users" / str(account_id)


def bytes_held(folder: Path) -> int:
    """Bytes of the files in folder (an upload still arriving counts with what has arrived)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


def _mib(size: float) -> str:
    return f"{size / MIB:.0f}" if size >= 10 * MIB else f"{size / MIB:.1f}"


class Uploads:
    """Stores uploads per user, within the user's quota and rate (see the module's docstring)."""

    def __init__(self, config: GatewayConfig):
        self.config = config
        self._recent: dict[int, collections.deque[float]] = collections.defaultdict(collections.deque)

    def _admit(self, account_id: int) -> None:
        """Count one upload request against the account's rate, or refuse it with 429."""
        now = time.monotonic()
        recent = self._recent[account_id]
        while recent and now - recent[0] >= RATE_WINDOW_S:
            recent.popleft()
        limit = self.config.ui_uploads_per_minute
        if len(recent) >= limit:
            wait = max(1, math.ceil(RATE_WINDOW_S - (now - recent[0])))
            raise UploadRefused(
                429,
                f"Zu viele Uploads: höchstens {limit} pro Minute. Bitte warte {wait} Sekunden. "
                f"(Too many uploads: at most {limit} per minute; try again in {wait} s.)",
                retry_after=wait,
            )
        recent.append(now)

    def _quota_refusal(self, held: int) -> UploadRefused:
        quota = self.config.ui_upload_mb_per_user * MIB
        return UploadRefused(
            413,
            f"Du hast schon {_mib(held)} MiB hochgeladen, die noch nicht verarbeitet sind; höchstens {_mib(quota)} MiB auf einmal. "
            "Warte, bis sie verarbeitet sind, oder lade weniger hoch. "
            f"(Upload quota reached: {_mib(held)} of {_mib(quota)} MiB held; wait until your uploads are processed.)",
        )

    async def store(self, scope: Scope, receive: Receive, account_id: int) -> list[str]:
        """Parse the upload request into the account's folder; the paths of the stored files, or UploadRefused."""
        folder = user_upload_folder(account_id)
        quota = self.config.ui_upload_mb_per_user * MIB
        held = bytes_held(folder)
        announced = next((int(v) for k, v in scope.get("headers", []) if k == b"content-length" and v.isdigit()), 0)
        if held + announced > quota:  # refused before a byte of it is stored
            raise self._quota_refusal(held)
        self._admit(account_id)
        request = Request(scope, receive)
        upload_id = request.query_params.get("upload_id")
        try:
            paths, _later, _where = await route_utils.upload_fn(
                request,
                str(folder),
                self.config.max_upload_bytes,
                upload_id,
                force_move=True,
                upload_progress=file_upload_statuses if upload_id else None,
            )
        except route_utils.MultiPartException as error:
            raise UploadRefused(413 if "maximum allowed size" in error.message else 400, error.message) from None
        except HTTPException as error:
            raise UploadRefused(error.status_code, str(error.detail)) from None
        # two requests that arrive together both pass the first check: whichever ends over the quota is undone
        held = bytes_held(folder)
        if held > quota:
            for path in paths:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise self._quota_refusal(bytes_held(folder))
        return [str(path) for path in paths]
