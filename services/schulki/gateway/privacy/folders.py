"""Folders that hold students' data (accounts, uploads, transcripts): only the gateway's user may enter them."""

from __future__ import annotations

from pathlib import Path


def private_folder(path: Path) -> Path:
    """A folder only the gateway's user can enter (accounts, uploads and transcripts hold students' data)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path
