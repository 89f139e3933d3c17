"""A backup's dated folder: its manifest (every file with size and sha256), the check before a restore, and retention.

A folder is complete when its ``manifest.json`` exists: it is written last,
so a run that stopped half-way leaves a folder without one, which the next
run removes. Only one run writes at a time (a lock file in the backup folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = 1
NAME = re.compile(r"^schulki-\d{8}-\d{6}$")
"""A dated folder's name, ``schulki-YYYYMMDD-HHMMSS`` (UTC): sorting by name sorts by age, and Weaviate takes it as a backup id."""


class BackupError(RuntimeError):
    """A backup or restore that cannot be done; the message is German first, then English, and names what to do."""


def new_name(now: float | None = None) -> str:
    return time.strftime("schulki-%Y%m%d-%H%M%S", time.gmtime(now))


def private_folder(path: Path) -> Path:
    """Backups hold every account and document: only the user who makes them may enter."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


@contextlib.contextmanager
def exclusive(backup_dir: Path) -> Iterator[None]:
    """One backup or restore at a time in this folder (a timer's run and an admin's by hand)."""
    with open(backup_dir / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"Eine andere Sicherung läuft gerade in {backup_dir}. (another backup or restore is running in this folder)"
            ) from None
        yield


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path, about: dict[str, Any]) -> dict[str, Any]:
    """List every file of the folder with its size and sha256, with ``about`` (what was saved and how), as the last write."""
    files: list[dict[str, Any]] = [
        {"path": name, "size": (folder / name).stat().st_size, "sha256": sha256(folder / name)} for name in _files(folder)
    ]
    manifest = {"format": FORMAT, **about, "files": files, "total_bytes": sum(int(f["size"]) for f in files)}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    os.replace(tmp, folder / MANIFEST)
    return manifest


def checked_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest once every file matches it (none missing, changed or added), else BackupError naming the first problem."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{folder} ist keine vollständige Sicherung: {MANIFEST} fehlt. (not a complete backup: no {MANIFEST})") from None
    except (ValueError, UnicodeDecodeError):
        raise BackupError(f"{folder / MANIFEST} ist beschädigt. (the manifest is not readable JSON)") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{folder}: unbekanntes Sicherungsformat {manifest.get('format')!r}. (unknown backup format)")
    listed = {entry["path"]: entry for entry in manifest["files"]}
    for name in _files(folder):
        if name not in listed:
            raise BackupError(f"{folder}: {name} steht nicht im Manifest. (a file the manifest does not list)")
    for name, entry in listed.items():
        path = folder / name
        if not path.is_file():
            raise BackupError(f"{folder}: {name} fehlt. (a file the manifest lists is missing)")
        if path.stat().st_size != entry["size"] or sha256(path) != entry["sha256"]:
            raise BackupError(f"{folder}: {name} wurde verändert (Größe oder sha256). (a file does not match the manifest)")
    return manifest


def expire(backup_dir: Path, keep: int, current: str) -> list[str]:
    """Delete all but the newest ``keep`` complete dated folders, and incomplete ones left by a stopped run; return the names."""
    dated = sorted(p for p in backup_dir.iterdir() if p.is_dir() and NAME.match(p.name))
    complete = [p for p in dated if (p / MANIFEST).is_file()]
    doomed = complete[:-keep] + [p for p in dated if p not in complete and p.name != current]
    for path in doomed:
        shutil.rmtree(path)
    return [p.name for p in doomed]
