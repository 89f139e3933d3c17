"""The retrieval store in a backup: the embedded store copied table by table, Weaviate through its backup API.

The embedded store is read while the retrieval service writes it, without
its help. Its manifests are the truth (store.py): a document counts once its
record is in its workspace's manifest, and its chunks were written before.
So a workspace is saved as: read the manifest, read the table at its newest
version, read the manifest again; if it changed in between, read all again.
Rows of documents the manifest does not list (an ingest under way) are left
out. The rows go into an Arrow file, the manifest as it was read.

Weaviate writes its own backup of both collections (chunks and document
manifests, every tenant) into its BACKUP_FILESYSTEM_PATH under the backup's
id, which is the dated folder's name: compose.yaml mounts that path and the
gateway's backup_dir from one folder, so Weaviate's files land in the dated
folder itself.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa

from schulki.backup.folder import BackupError
from schulki.config import Config

MANIFEST_READS = 20
"""Tries at one consistent read of a workspace before the backup gives up (each retry follows a document added or deleted meanwhile)."""
WEAVIATE_DESCRIPTOR = "backup_config.json"
"""The file Weaviate's backup module writes at the top of each backup (what the backup holds)."""
WEAVIATE_WAIT_S = 3600.0
"""How long a Weaviate backup or restore may take."""


def store_path(config: Config) -> Path:
    return Path(config.retrieval.store_path or Path(config.data_dir) / "retrieval")


# The embedded store. ---------------------------------------------------------------------------


def _read_workspace(store: Path, db: Any, workspace: str) -> tuple[bytes, pa.Table] | None:
    manifest_file = store / "manifests" / f"{workspace}.json"
    for _ in range(MANIFEST_READS):
        try:
            before = manifest_file.read_bytes()
        except FileNotFoundError:
            return None  # deleted meanwhile
        try:
            rows = db.open_table(workspace).to_arrow()
        except (ValueError, FileNotFoundError):
            rows = None  # no document yet
        if manifest_file.exists() and manifest_file.read_bytes() == before:
            ids = [record["document_id"] for record in json.loads(before)["documents"]]
            if rows is None:
                return before, pa.table({})
            import pyarrow.compute as pc

            return before, rows.filter(pc.is_in(rows["document_id"], value_set=pa.array(ids, pa.string())))
    raise BackupError(f"Der Arbeitsbereich {workspace} ändert sich ständig; später erneut versuchen. (workspace {workspace} kept changing)")


def save_embedded(config: Config, folder: Path) -> dict[str, Any]:
    import lancedb

    store = store_path(config)
    target = folder / "retrieval"
    (target / "manifests").mkdir(parents=True)
    (target / "chunks").mkdir()
    workspaces, chunks = 0, 0
    if (store / "manifests").is_dir():
        db = lancedb.connect(store / "lance")
        for manifest_file in sorted((store / "manifests").glob("*.json")):
            read = _read_workspace(store, db, manifest_file.stem)
            if read is None:
                continue
            manifest, rows = read
            (target / "manifests" / manifest_file.name).write_bytes(manifest)
            if rows.num_rows:
                with (
                    pa.OSFile(str(target / "chunks" / f"{manifest_file.stem}.arrow"), "wb") as sink,
                    pa.ipc.new_file(sink, rows.schema) as writer,
                ):
                    writer.write_table(rows)
            workspaces, chunks = workspaces + 1, chunks + rows.num_rows
    return {"engine": "embedded", "workspaces": workspaces, "chunks": chunks}


def restore_embedded(config: Config, folder: Path) -> None:
    from schulki.retrieval.embedded_store import EmbeddedStore

    store = store_path(config)
    if store.exists():
        shutil.rmtree(store)
    embedded = EmbeddedStore(store, config.retrieval)
    try:
        for manifest_file in sorted((folder / "retrieval" / "manifests").glob("*.json")):
            chunks = folder / "retrieval" / "chunks" / f"{manifest_file.stem}.arrow"
            rows = pa.ipc.open_file(pa.memory_map(str(chunks))).read_all() if chunks.is_file() else None
            embedded.restore_workspace(manifest_file.stem, manifest_file.read_bytes(), rows)
    finally:
        embedded.close()


# Weaviate. -------------------------------------------------------------------------------------


def _weaviate(config: Config) -> httpx.Client:
    retrieval = config.retrieval
    if not retrieval.weaviate_url:
        raise BackupError("retrieval.store ist weaviate, aber retrieval.weaviate_url ist leer. (retrieval.weaviate_url is empty)")
    key = retrieval.weaviate_api_key.get_secret_value() if retrieval.weaviate_api_key else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=retrieval.weaviate_url.rstrip("/"), headers=headers, timeout=60)


def _collections(config: Config) -> list[str]:
    return [config.retrieval.weaviate_collection, f"{config.retrieval.weaviate_collection}Document"]


def _checked(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 300:
        raise BackupError(f"Weaviate: {what} abgelehnt ({what} refused, HTTP {response.status_code}): {response.text[:500]}")
    return response.json() if response.content else {}


def _wait(client: httpx.Client, path: str, what: str) -> None:
    deadline = time.monotonic() + WEAVIATE_WAIT_S
    while True:
        status = _checked(client.get(path), what)
        if status.get("status") == "SUCCESS":
            return
        if status.get("status") in ("FAILED", "CANCELED") or time.monotonic() > deadline:
            raise BackupError(f"Weaviate: {what} gescheitert ({what} failed): {status.get('status')} {status.get('error', '')}")
        time.sleep(0.5)


def save_weaviate(config: Config, folder: Path) -> dict[str, Any]:
    with _weaviate(config) as client:
        present = [name for name in _collections(config) if client.get(f"/v1/schema/{name}").status_code == 200]
        if not present:
            return {"engine": "weaviate", "collections": []}
        body = {"id": folder.name, "include": present}
        _checked(client.post("/v1/backups/filesystem", json=body), "backup")
        _wait(client, f"/v1/backups/filesystem/{folder.name}", "backup")
    if not (folder / WEAVIATE_DESCRIPTOR).is_file():
        raise BackupError(
            f"Weaviate hat die Sicherung {folder.name} nicht in {folder.parent} geschrieben: sein BACKUP_FILESYSTEM_PATH "
            f"muss derselbe Ordner sein wie gateway.backup_dir. (Weaviate's backup path is not gateway.backup_dir)"
        )
    return {"engine": "weaviate", "collections": present, "id": folder.name}


def restore_weaviate(config: Config, saved: dict[str, Any]) -> None:
    with _weaviate(config) as client:
        for name in _collections(config):  # Weaviate restores only into collections that do not exist
            response = client.delete(f"/v1/schema/{name}")
            if response.status_code not in (200, 404):
                _checked(response, f"delete {name}")
        if not saved["collections"]:
            return
        body = {"include": saved["collections"]}
        _checked(client.post(f"/v1/backups/filesystem/{saved['id']}/restore", json=body), "restore")
        _wait(client, f"/v1/backups/filesystem/{saved['id']}/restore", "restore")
