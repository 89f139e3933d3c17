"""``schulki backup`` and ``schulki restore``: the gateway's state and the retrieval store in one dated folder.

A backup is made while the stack runs, into ``gateway.backup_dir`` (else
``<data_dir>/backups``), as ``schulki-YYYYMMDD-HHMMSS/``::

    manifest.json           what was saved, and every file with its size and sha256 (written last)
    database/               accounts.sqlite3 (SQLite's backup API) or accounts.pgdump (pg_dump)
    data/gateway/secret     the pseudonym secret (services know users only by it)
    data/gateway/files/     transcripts and other files the gateway keeps for users
    data/tls/               the gateway's own HTTPS certificate and CA (when it made them)
    retrieval/              the embedded store: each workspace's manifest and chunks (Arrow)
    backup_config.json, …   Weaviate's own backup of both collections (store = weaviate)

The upload cache is left out (it holds files for an hour at most). After a
backup that succeeded, all but the newest ``gateway.backup_keep`` are deleted.
A restore (the gateway and retrieval stopped, Weaviate running) first checks
every file against the manifest and refuses a folder that does not match.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schulki.backup import stores
from schulki.backup.database import restore_database, save_database
from schulki.backup.folder import BackupError, checked_manifest, exclusive, expire, new_name, private_folder, write_manifest
from schulki.config import Config

__all__ = ["BackupError", "Done", "backup_dir", "find_backup", "make_backup", "restore_backup"]

DATA_PARTS = ("gateway/secret", "gateway/files", "tls")
"""What of the data folder a backup copies as files (the database and the store have their own ways)."""


@dataclass(frozen=True)
class Done:
    folder: Path
    manifest: dict[str, Any]
    seconds: float
    expired: tuple[str, ...] = ()


def backup_dir(config: Config) -> Path:
    return Path(config.gateway.backup_dir or Path(config.data_dir) / "backups")


def _database_url(config: Config) -> str:
    from schulki.gateway.accounts.database import database_url

    return database_url(config.gateway.database_url, Path(config.data_dir))


def _copy_data(data_dir: Path, target: Path) -> list[str]:
    copied = []
    for part in DATA_PARTS:
        source = data_dir / part
        if source.is_dir():
            shutil.copytree(source, target / part, symlinks=True)
        elif source.is_file():
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / part)
        else:
            continue
        copied.append(part)
    return copied


def make_backup(config: Config) -> Done:
    """Save the database, the gateway's files and the retrieval store into a new dated folder; then expire old ones."""
    started = time.monotonic()
    root = private_folder(backup_dir(config))
    with exclusive(root):
        folder = root / new_name()
        while folder.exists():  # two runs within one second
            time.sleep(1)
            folder = root / new_name()
        private_folder(folder)
        private_folder(folder / "database")
        about: dict[str, Any] = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        about["database"] = save_database(_database_url(config), folder / "database")
        about["data"] = _copy_data(Path(config.data_dir), folder / "data")
        if config.retrieval.store == "weaviate":
            about["store"] = stores.save_weaviate(config, folder)
        else:
            about["store"] = stores.save_embedded(config, folder)
        manifest = write_manifest(folder, about)
        expired = expire(root, config.gateway.backup_keep, folder.name)
    return Done(folder, manifest, time.monotonic() - started, tuple(expired))


def find_backup(config: Config, name: str) -> Path:
    """A backup by its folder name in the backup folder, or by its path."""
    folder = backup_dir(config) / name if "/" not in name else Path(name)
    if not folder.is_dir():
        raise BackupError(f"Keine Sicherung {name} (in {backup_dir(config)}). (no such backup)")
    return folder.resolve()


def restore_backup(config: Config, folder: Path) -> Done:
    """Put everything of a checked backup back, in place of what is there now (the gateway and retrieval stopped)."""
    started = time.monotonic()
    manifest = checked_manifest(folder)
    store = manifest["store"]["engine"]
    if store != config.retrieval.store:
        raise BackupError(
            f"Die Sicherung enthält den Speicher {store}, eingestellt ist {config.retrieval.store}. "
            f"(the backup holds the {store} store, retrieval.store is {config.retrieval.store})"
        )
    data_dir = Path(config.data_dir)
    restore_database(_database_url(config), folder / "database", manifest["database"])
    for part in DATA_PARTS:  # what the backup had comes back; what it did not have goes
        current = data_dir / part
        if current.is_dir():
            shutil.rmtree(current)
        elif current.exists():
            current.unlink()
    private_folder(data_dir / "gateway")
    _copy_data(folder / "data", data_dir)
    if store == "weaviate":
        stores.restore_weaviate(config, manifest["store"])
    else:
        stores.restore_embedded(config, folder)
    return Done(folder, manifest, time.monotonic() - started)
