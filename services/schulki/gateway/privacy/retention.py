"""Retention: every kind of user data has a period the admin sets, and one purge deletes what is past it.

| data | period (setting, Admin tab) | where it lives |
|---|---|---|
| stored chats | ``chat_retention_days`` | accounts database |
| documents (text and vectors) | ``document_retention_days`` | retrieval service, every workspace |
| transcripts (download files) | ``transcript_retention_days`` | ``<data>/gateway/files/<user id>/`` |
| Weaviate backups | ``backup_retention_days`` | ``gateway.backup_dir`` |
| uploads in the gateway's cache, admin exports | ``gateway.upload_retention_hours`` | ``<data>/gateway/uploads``, ``files/<id>/exports`` |
| uploads through ``/v1/files`` | ``gateway.upload_retention_hours`` | accounts database (each gateway's copy in its upload cache) |
| moderation flags | ``moderation.flag_retention_days`` | accounts database |
| tasks and their students' chats | ``lessons.task_retention_days`` after the task's end | accounts database |
| teachers' reads of task chats (the log) | ``lessons.read_log_retention_days`` | accounts database |

The purge also removes what belongs to no account any more: a private
workspace ``u-<id>`` (or ``u-<id>-<random>``, made through the API) or a files folder whose account is gone (left when the
retrieval service was down during a deletion, or brought back by restoring a
backup). The gateway runs it at start and every hour; each part goes on when
another fails, so a retrieval service that is down delays only the documents.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from schulki.gateway.context import Gateway

log = logging.getLogger(__name__)

PERIODS = ("chat_retention_days", "document_retention_days", "transcript_retention_days", "backup_retention_days")
"""The retention settings the admin changes; each is a GatewayConfig field and a key in the settings table."""
EXPORTS = "exports"
"""The folder under a user's files where the Admin tab leaves a data export for download."""


def period_days(gateway: Gateway, name: str) -> int:
    """The admin's setting, else the configured default."""
    return int(gateway.accounts.get_setting(name, str(getattr(gateway.config.gateway, name))))


def set_period_days(gateway: Gateway, name: str, days: int) -> None:
    if name not in PERIODS:
        raise ValueError(name)
    gateway.accounts.set_setting(name, str(max(0 if name == "chat_retention_days" else 1, int(days))))


def uploads_folder(gateway: Gateway) -> Path:
    """Gradio's upload cache of this gateway (create_app points GRADIO_TEMP_DIR here)."""
    return Path(gateway.config.data_dir) / "gateway" / "uploads"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_older(folder: Path, cutoff: float) -> int:
    """Remove the entries directly in ``folder`` last changed before ``cutoff``; return how many."""
    removed = 0
    if not folder.is_dir():
        return 0
    for entry in folder.iterdir():
        try:
            if entry.lstat().st_mtime < cutoff:
                _remove(entry)
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def purge_uploads(folder: Path, cutoff: float) -> int:
    """Files in the upload cache older than cutoff (Gradio keeps each in a folder of its own), and the emptied folders."""
    removed = 0
    if not folder.is_dir():
        return 0
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = Path(root) / name
            try:
                if path.lstat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        for name in dirs:
            with contextlib.suppress(OSError):  # rmdir removes only empty folders
                (Path(root) / name).rmdir()
    return removed


def account_gone(owner: str, user_ids: set[int]) -> bool:
    """Whether the account with this id (as text) was deleted.

    Account ids are never reused (SQLite AUTOINCREMENT, a PostgreSQL
    sequence), so an id above every id seen belongs to an account made since
    the ids were read, not to a deleted one.
    """
    if not owner.isdigit():
        return False
    return int(owner) not in user_ids and int(owner) < max(user_ids, default=0)


def purge_user_files(files_root: Path, transcript_cutoff: float, export_cutoff: float, user_ids: set[int]) -> tuple[int, int]:
    """Transcripts past their period, exports past theirs, and the folders of accounts that are gone."""
    transcripts = orphans = 0
    if not files_root.is_dir():
        return 0, 0
    for folder in files_root.iterdir():
        if account_gone(folder.name, user_ids):
            _remove(folder)
            orphans += 1
            continue
        if not folder.is_dir():
            continue
        remove_older(folder / EXPORTS, export_cutoff)
        for entry in folder.iterdir():
            if entry.name != EXPORTS and entry.lstat().st_mtime < transcript_cutoff:
                _remove(entry)
                transcripts += 1
    return transcripts, orphans


async def purge_documents(gateway: Gateway, cutoff: float, user_ids: set[int]) -> tuple[int, int]:
    """Documents uploaded before cutoff in every workspace, and private workspaces whose account is gone."""
    documents = workspaces = 0
    for workspace in await gateway.list_workspaces():
        # u-<id>, and u-<id>-<random> made through the API
        if workspace.startswith("u-") and account_gone(workspace[2:].split("-")[0], user_ids):
            await gateway.delete_workspace(workspace)
            workspaces += 1
            continue
        for document in await gateway.stored_documents(workspace):
            if document.created_at < cutoff:
                await gateway.purge_document(workspace, document.document_id)
                documents += 1
    return documents, workspaces


async def purge_expired(gateway: Gateway, now: float | None = None) -> dict[str, int]:
    """Delete everything past its retention period; return how many of each kind (for the log and tests)."""
    now = time.time() if now is None else now
    days = {name: period_days(gateway, name) for name in PERIODS}
    upload_cutoff = now - gateway.config.gateway.upload_retention_hours * 3600
    counts: dict[str, int] = {}
    user_ids = await run_in_threadpool(gateway.accounts.user_ids)

    async def part(name: str, action: Callable[[], Awaitable[int | tuple[int, ...]]]) -> None:
        try:
            result = await action()
        except Exception:
            log.warning("purging %s failed; it is tried again at the next purge", name, exc_info=True)
            return
        if isinstance(result, tuple):
            counts.update(zip(name.split("+"), result, strict=True))
        else:
            counts[name] = result

    await part("chats", lambda: run_in_threadpool(gateway.accounts.purge_chats, days["chat_retention_days"]))
    await part(
        "transcripts+user_folders",
        lambda: run_in_threadpool(
            purge_user_files, gateway.files_root, now - days["transcript_retention_days"] * 86400, upload_cutoff, user_ids
        ),
    )
    await part("uploads", lambda: run_in_threadpool(purge_uploads, uploads_folder(gateway), upload_cutoff))
    flag_days = gateway.config.moderation.flag_retention_days
    await part("flags", lambda: run_in_threadpool(gateway.moderation.flags.purge, flag_days, now))
    await part("api_files", lambda: run_in_threadpool(gateway.file_records.purge, upload_cutoff))  # what /v1/files keeps in the database
    await part("task_chats+task_reads", lambda: run_in_threadpool(gateway.oversight.purge, now))
    backups = gateway.config.gateway.backup_dir
    if backups is not None:
        await part("backups", lambda: run_in_threadpool(remove_older, Path(backups), now - days["backup_retention_days"] * 86400))
    if gateway.available("retrieval"):
        await part("documents+workspaces", lambda: purge_documents(gateway, now - days["document_retention_days"] * 86400, user_ids))
    if any(counts.values()):
        log.info("retention purge: %s", ", ".join(f"{count} {name}" for name, count in counts.items() if count))
    return counts
