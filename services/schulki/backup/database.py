"""The gateway's database in a backup: SQLite through its online backup API, PostgreSQL through pg_dump.

Both copy one consistent state while the gateway keeps writing: SQLite's
backup API copies the pages of one read transaction (WAL readers do not
block the writer), pg_dump reads in one snapshot transaction.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from schulki.backup.folder import BackupError

SQLITE_FILE = "accounts.sqlite3"
PG_DUMP_FILE = "accounts.pgdump"


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError(f"Die Datenbank {url} liegt nicht in einer Datei. (an in-memory database cannot be backed up)")
    return Path(database)


def _postgres_tool(name: str) -> str:
    """pg_dump or pg_restore from PATH, else from Debian's versioned folder (the newest: it reads older servers)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise BackupError(f"{name} fehlt: installiere postgresql-client. ({name} is not installed: install postgresql-client)")
    return found


def _postgres_target(url: str) -> tuple[list[str], dict[str, str]]:
    """libpq's connection options for the SQLAlchemy URL, the password in the environment (not on the command line)."""
    parsed = make_url(url)
    options: dict[str, object] = {"dbname": parsed.database, "user": parsed.username, "host": parsed.host, "port": parsed.port}
    for key, value in parsed.query.items():  # ?host=/run/postgresql, sslmode=... are libpq's own
        options[key] = value if isinstance(value, str) else value[-1]
    conninfo = " ".join(f"{key}='{value}'" for key, value in options.items() if value not in (None, ""))
    env = {**os.environ, **({"PGPASSWORD": parsed.password} if parsed.password else {})}
    return ["--dbname", conninfo], env


def _run(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{Path(command[0]).name} ist gescheitert ({Path(command[0]).name} failed): {result.stderr.strip()[-800:]}")


def save_database(url: str, folder: Path) -> dict[str, str]:
    """Write the database into folder; returns what the manifest says about it."""
    if make_url(url).get_backend_name() == "postgresql":
        where, env = _postgres_target(url)
        _run([_postgres_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(folder / PG_DUMP_FILE), *where], env)
        return {"engine": "postgresql", "file": PG_DUMP_FILE}
    source_path = _sqlite_path(url)
    if not source_path.is_file():
        raise BackupError(f"Die Datenbank {source_path} fehlt. (the accounts database does not exist)")
    copy = folder / SQLITE_FILE
    with contextlib.closing(sqlite3.connect(source_path)) as source, contextlib.closing(sqlite3.connect(copy)) as target:
        source.execute("PRAGMA busy_timeout=5000")
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    copy.chmod(0o600)
    return {"engine": "sqlite", "file": SQLITE_FILE}


def restore_database(url: str, folder: Path, saved: dict[str, str]) -> None:
    """Put the saved database back in place of the current one (the gateway stopped)."""
    engine = "postgresql" if make_url(url).get_backend_name() == "postgresql" else "sqlite"
    if saved["engine"] != engine:
        raise BackupError(
            f"Die Sicherung enthält eine {saved['engine']}-Datenbank, eingestellt ist {engine}. "
            f"(the backup holds a {saved['engine']} database, gateway.database_url is {engine})"
        )
    if engine == "postgresql":
        where, env = _postgres_target(url)
        command = [_postgres_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction", *where]
        _run([*command, str(folder / saved["file"])], env)
        return
    path = _sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for suffix in ("-wal", "-shm"):  # a WAL of the replaced database must not be replayed into the restored one
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    tmp = path.with_name(f".{path.name}.restore")
    shutil.copyfile(folder / saved["file"], tmp)
    tmp.chmod(0o600)
    os.replace(tmp, path)
