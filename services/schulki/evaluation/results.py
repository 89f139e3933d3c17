"""The results store: one JSON file per host and model file, next to the models.

Layout: ``<results_dir>/<host>/<model file name>.json``. A new run of the same
file on the same host replaces its result; results of other hosts stay, so one
folder on the mirror can collect the measurements of every kind of machine of
a school, and ``schulki plan`` and the Admin tab read them from there.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from pathlib import Path

SCHEMA = 1
RESULTS_FOLDER = "eval-results"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def this_host() -> str:
    """The name results of this machine are stored under."""
    return socket.gethostname() or "localhost"


def default_results_dir(model_file: Path) -> Path:
    """``eval-results`` beside a model file: results live next to the models."""
    return Path(model_file).resolve().parent / RESULTS_FOLDER


def result_path(results_dir: Path, host: str, file_name: str) -> Path:
    return Path(results_dir) / _SAFE.sub("_", host) / f"{_SAFE.sub('_', file_name)}.json"


def save_result(results_dir: Path, record: dict) -> Path:
    """Write one record atomically (a reader never sees half a file)."""
    path = result_path(results_dir, record["host"], record["file"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".partial", delete=False, encoding="utf-8") as tmp:
        json.dump(record, tmp, indent=2, ensure_ascii=False)
    os.replace(tmp.name, path)
    return path


def load_results(results_dir: Path | None) -> list[dict]:
    """Every stored record under results_dir (none when it does not exist); unreadable files are skipped."""
    if results_dir is None or not Path(results_dir).is_dir():
        return []
    records = []
    for path in sorted(Path(results_dir).glob("*/*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("schema") == SCHEMA and "file" in record:
            records.append(record)
    return records
