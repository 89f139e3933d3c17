"""``schulki backup`` and ``schulki restore`` against the running one-machine stack, on each store engine.

The gateway, retrieval and embeddings run for real (tests/gateway_stack.py);
accounts are made, documents go in through /v1/vector_stores, and a file
lies in a user's folder. ``schulki backup`` runs as its own process while the
stack runs; then the stack stops, the data folder (and Weaviate's
collections) are wiped, ``schulki restore`` puts the backup back, and every
account row, file, manifest, chunk and vector must be what it was. The
restored stack then answers the old API key and finds the document.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from schulki.backup import backup_dir, make_backup, restore_backup
from schulki.backup.folder import BackupError, new_name
from schulki.config import Config
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy import table as sql_table

from tests.gateway_stack import running_stack, stack_config, write_pdf

VOLCANO_PAGES = [
    "Erdkunde, Klasse 7. Die Kontinente wandern langsam auf den Platten der Erdkruste.",
    "Vulkane entstehen, wo Magma aus dem Erdinneren durch Spalten in der Erdkruste an die Oberfläche steigt. "
    "Beim Ausbruch fließt Lava aus dem Krater, und Asche wird in die Luft geschleudert.",
]
PHOTOSYNTHESIS = "Photosynthese: Pflanzen bilden in ihren Blättern mit Licht, Wasser und Kohlendioxid Traubenzucker und Sauerstoff."


def run_cli(config: Config, settings: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``schulki ARGS`` as its own process, with the stack's settings as an admin's environment would give them."""
    env = {
        **os.environ,
        "SCHULKI_DATA_DIR": str(config.data_dir),
        "SCHULKI_GATEWAY__BACKUP_DIR": str(config.gateway.backup_dir),
        "SCHULKI_RETRIEVAL__STORE_PATH": str(config.retrieval.store_path),
        **settings,
    }
    return subprocess.run([sys.executable, "-m", "schulki.cli", *args], env=env, capture_output=True, text=True, timeout=600)


def database_rows(url: str) -> dict[str, list[tuple]]:
    """Every row of every table, sorted: the accounts, classes, sessions, chats, settings, file records."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            names = inspect(connection).get_table_names()
            return {
                name: sorted(tuple(row) for row in connection.execute(select(text("*")).select_from(sql_table(name)))) for name in names
            }
    finally:
        engine.dispose()


def data_files(data_dir: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(data_dir)): path.read_bytes()
        for part in ("gateway/secret", "gateway/files", "tls")
        for path in ([data_dir / part] if (data_dir / part).is_file() else sorted((data_dir / part).rglob("*")))
        if path.is_file()
    }


def embedded_contents(store: Path) -> dict[str, object]:
    import lancedb

    db = lancedb.connect(store / "lance")
    contents: dict[str, object] = {}
    for manifest in sorted((store / "manifests").glob("*.json")):
        try:
            rows = db.open_table(manifest.stem).to_arrow().to_pylist()
        except ValueError:  # a workspace without documents has no table
            rows = []
        contents[manifest.stem] = (json.loads(manifest.read_bytes()), sorted(rows, key=lambda r: (r["document_id"], r["chunk_index"])))
    return contents


def weaviate_contents(engine, collection: str) -> dict[str, object]:
    client = engine.server.client()
    try:
        contents: dict[str, object] = {}
        for name in (collection, f"{collection}Document"):
            if not client.collections.exists(name):
                continue
            handle = client.collections.get(name)
            for tenant in sorted(handle.tenants.get()):
                objects = handle.with_tenant(tenant).iterator(include_vector=True)
                contents[f"{name}/{tenant}"] = sorted(
                    (str(o.uuid), json.dumps(o.properties, sort_keys=True, default=str), json.dumps(o.vector, sort_keys=True))
                    for o in objects
                )
        return contents
    finally:
        client.close()


def vector_count(contents: dict[str, object]) -> int:
    """Chunks with a vector of more than one number in store_contents' answer (either engine)."""
    count = 0
    for value in contents.values():
        if isinstance(value, tuple):  # embedded: (manifest, rows)
            count += sum(len(row["vector"]) > 1 for row in value[1])
        else:  # Weaviate: (uuid, properties, vectors by name), manifest objects have none
            count += sum(any(len(v) > 1 for v in json.loads(vectors).values()) for _, _, vectors in value)
    return count


def store_contents(config: Config, engine) -> dict[str, object]:
    if config.retrieval.store == "weaviate":
        return weaviate_contents(engine, config.retrieval.weaviate_collection)
    return embedded_contents(Path(config.retrieval.store_path))


def state(config: Config, engine) -> dict[str, object]:
    from schulki.gateway.accounts.database import database_url

    url = database_url(config.gateway.database_url, Path(config.data_dir))
    return {"database": database_rows(url), "files": data_files(Path(config.data_dir)), "store": store_contents(config, engine)}


def wipe(config: Config, engine) -> None:
    shutil.rmtree(config.data_dir)
    Path(config.data_dir).mkdir()
    if config.retrieval.store == "weaviate":
        client = engine.server.client()
        try:
            client.collections.delete([config.retrieval.weaviate_collection, f"{config.retrieval.weaviate_collection}Document"])
        finally:
            client.close()


def fill(stack, documents: Path) -> dict[str, object]:
    """Accounts in a class, a teacher's document store with two documents, a file in a user's folder, a session and a chat."""
    teacher = stack.add_user("bk-lehrerin", "teacher", ("7a",))
    student = stack.add_user("bk-schueler", "student", ("7a",))
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=teacher.api_key, max_retries=0, timeout=120)
    store = client.vector_stores.create(name="Erdkunde")
    (documents / "photosynthese.txt").write_text(PHOTOSYNTHESIS, encoding="utf-8")
    for path in (write_pdf(documents / "vulkane.pdf", VOLCANO_PAGES), documents / "photosynthese.txt"):
        with open(path, "rb") as handle:
            uploaded = client.files.create(file=handle, purpose="assistants")
        assert client.vector_stores.files.create_and_poll(file_id=uploaded.id, vector_store_id=store.id).status == "completed"
    folder = stack.gateway.files_root / str(student.account.id)
    folder.mkdir(mode=0o700, exist_ok=True)
    (folder / "transkript-biologie.txt").write_text("Die Zelle ist die kleinste Einheit des Lebens.", encoding="utf-8")
    stack.gateway.accounts.open_session(student.account.id, hours=1)
    stack.gateway.accounts.save_chat(student.account.id, None, [{"role": "user", "content": "Was ist eine Zelle?"}])
    return {"teacher": teacher, "student": student, "store": store.id}


@pytest.fixture
def stack_settings(tmp_path, store_engine):
    """The stack's config and the same settings as SCHULKI_* variables for the CLI, the backups where the engine needs them."""
    config = stack_config(tmp_path / "data")
    settings = store_engine.settings()
    store_engine.configure(config.retrieval, settings)
    config.retrieval.store_path = tmp_path / "data" / "retrieval"
    config.gateway.requests_per_minute = {"student": 1000, "teacher": 1000, "admin": 1000}
    if store_engine.server is not None:
        if store_engine.server.backup_path is None:
            pytest.skip("WEAVIATE_URL's server: set WEAVIATE_BACKUP_PATH to its BACKUP_FILESYSTEM_PATH as this machine sees it")
        config.gateway.backup_dir = store_engine.server.backup_path  # as compose.yaml mounts one folder into both
    else:
        config.gateway.backup_dir = tmp_path / "backups"
    return config, store_engine.environment(settings)


def test_a_backup_of_the_running_stack_restores_every_account_file_document_and_vector(stack_settings, store_engine, tmp_path):
    config, settings = stack_settings
    (tmp_path / "documents").mkdir()
    with running_stack(Path(config.data_dir), services=("embeddings", "retrieval"), config=config) as stack:
        made = fill(stack, tmp_path / "documents")
        before = state(config, store_engine)
        started = time.monotonic()
        backed_up = run_cli(config, settings, "backup")  # while the gateway and retrieval run
        backup_seconds = time.monotonic() - started
        assert backed_up.returncode == 0, backed_up.stderr
        # After the backup: a new account and a deleted document, which the restore must undo.
        stack.add_user("bk-spaeter", "student")
        teacher_client = openai.OpenAI(base_url=stack.url + "/v1", api_key=made["teacher"].api_key, max_retries=0, timeout=120)
        first = teacher_client.vector_stores.files.list(made["store"]).data[0]
        teacher_client.vector_stores.files.delete(first.id, vector_store_id=made["store"])
        assert state(config, store_engine) != before
    (folder,) = [p for p in backup_dir(config).iterdir() if p.name.startswith("schulki-") and p.name in backed_up.stdout]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["database"]["engine"] == "sqlite"
    assert manifest["store"]["engine"] == config.retrieval.store
    assert folder.stat().st_mode & 0o077 == 0  # accounts and documents: only the backup's owner may read

    wipe(config, store_engine)
    started = time.monotonic()
    restored = run_cli(config, settings, "restore", folder.name)
    restore_seconds = time.monotonic() - started
    assert restored.returncode == 0, restored.stderr
    after = state(config, store_engine)
    assert after["database"] == before["database"]
    assert after["files"] == before["files"]
    assert after["store"] == before["store"]
    assert vector_count(after["store"]) == 3  # a chunk of the text, two of the PDF: the comparison saw real vectors

    with running_stack(Path(config.data_dir), services=("embeddings", "retrieval"), config=config) as stack:
        client = openai.OpenAI(base_url=stack.url + "/v1", api_key=made["teacher"].api_key, max_retries=0, timeout=120)
        hits = client.vector_stores.search(made["store"], query="Wie entsteht ein Vulkan?", max_num_results=3).data
        assert any("Magma" in part.text for hit in hits for part in hit.content)
        assert len(client.vector_stores.files.list(made["store"]).data) == 2
    print(
        f"\n{store_engine.name}: backup {manifest['total_bytes'] / 1e6:.2f} MB in {len(manifest['files'])} files, "
        f"{backup_seconds:.1f} s; restore {restore_seconds:.1f} s"
    )


def test_a_backup_whose_files_do_not_match_its_manifest_is_refused_and_nothing_changes(tmp_path):
    config = Config(data_dir=tmp_path / "data")
    config.gateway.backup_dir = tmp_path / "backups"
    from schulki.gateway.accounts.database import Accounts, database_url

    Accounts(database_url(None, tmp_path / "data")).add_user("bk-anna", "student")
    folder = make_backup(config).folder
    accounts = database_rows(database_url(None, tmp_path / "data"))
    database = folder / "database" / "accounts.sqlite3"

    tampered = bytearray(database.read_bytes())
    tampered[-1] ^= 0xFF
    database.write_bytes(bytes(tampered))
    with pytest.raises(BackupError, match=r"accounts\.sqlite3 wurde verändert"):
        restore_backup(config, folder)
    (folder / "database" / "extra.sql").write_text("DROP TABLE users;")
    with pytest.raises(BackupError, match=r"extra\.sql steht nicht im Manifest"):
        restore_backup(config, folder)
    (folder / "database" / "extra.sql").unlink()
    database.unlink()
    result = run_cli(config, {}, "restore", folder.name)
    assert result.returncode == 2 and "fehlt" in result.stderr
    assert database_rows(database_url(None, tmp_path / "data")) == accounts


def test_each_backup_keeps_the_newest_n_and_removes_a_half_written_one(tmp_path, monkeypatch):
    config = Config(data_dir=tmp_path / "data")
    config.gateway.backup_dir = tmp_path / "backups"
    config.gateway.backup_keep = 2
    from schulki.gateway.accounts.database import Accounts, database_url

    Accounts(database_url(None, tmp_path / "data"))
    (tmp_path / "backups").mkdir()
    stopped = tmp_path / "backups" / new_name(time.time() - 7200)  # a run that stopped half-way: no manifest
    stopped.mkdir()
    clock = iter(range(int(time.time()) - 3600, int(time.time()), 60))
    monkeypatch.setattr("schulki.backup.new_name", lambda: new_name(next(clock)))
    names = [make_backup(config).folder.name for _ in range(3)]
    assert sorted(p.name for p in (tmp_path / "backups").iterdir() if p.is_dir()) == names[1:]


POSTGRES_URL = os.environ.get("SCHULKI_TEST_POSTGRES_URL")


@pytest.mark.skipif(
    not POSTGRES_URL,
    reason="no PostgreSQL server here: ./dev test starts one, or set SCHULKI_TEST_POSTGRES_URL to a server of your own",
)
def test_a_postgresql_database_is_saved_with_pg_dump_and_put_back_with_pg_restore(tmp_path):
    from schulki.gateway.accounts.database import Accounts

    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:  # every table of every module, whatever an earlier test made
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    config = Config(data_dir=tmp_path / "data", gateway={"database_url": POSTGRES_URL, "backup_dir": tmp_path / "backups"})
    accounts = Accounts(POSTGRES_URL)
    anna = accounts.add_user("bk-pg-anna", "student", ["7a"])
    teacher = accounts.add_user("bk-pg-lehrer", "teacher", ["7a"])
    accounts.open_session(anna.account.id, hours=1)
    accounts.save_chat(anna.account.id, None, [{"role": "user", "content": "Was ist ein Vulkan?"}])
    before = database_rows(POSTGRES_URL)

    done = make_backup(config)
    assert done.manifest["database"] == {"engine": "postgresql", "file": "accounts.pgdump"}
    accounts.add_user("bk-pg-spaeter", "student")
    accounts.delete_user(teacher.account.id)
    accounts.engine.dispose()
    restore_backup(config, done.folder)

    assert database_rows(POSTGRES_URL) == before
    restored = Accounts(POSTGRES_URL)
    assert restored.check_password("bk-pg-lehrer", teacher.password) == teacher.account
    restored.add_user("bk-pg-neu", "student")  # the id sequence came back too: no clash with the restored ids
    restored.engine.dispose()


def test_a_weaviate_that_writes_its_backups_elsewhere_fails_the_backup_naming_the_folder(weaviate_server, tmp_path):
    from schulki.retrieval.weaviate_store import WeaviateStore

    from tests.weaviate_support import StoreEngine

    engine = StoreEngine("weaviate", weaviate_server)
    config = Config(data_dir=tmp_path / "data")
    engine.configure(config.retrieval)
    config.gateway.backup_dir = tmp_path / "backups"  # not the server's BACKUP_FILESYSTEM_PATH
    from schulki.gateway.accounts.database import Accounts, database_url

    Accounts(database_url(None, tmp_path / "data"))
    WeaviateStore(config.retrieval).client.close()  # the collections, as the retrieval service makes them at start
    try:
        with pytest.raises(BackupError, match=r"BACKUP_FILESYSTEM_PATH muss derselbe Ordner sein wie gateway\.backup_dir"):
            make_backup(config)
    finally:
        engine.clean_up()
    assert not any((tmp_path / "backups").glob("*/manifest.json"))
