"""Gateways that start at the same moment on one PostgreSQL all come up: creating the tables is not a race.

Each start creates the tables it misses (accounts, rate windows, file records, vector stores, file owners). Without
a lock, two starts both find a table missing and the second CREATE TABLE fails with a duplicate key in pg_type,
which stops that gateway: a school whose two gateway hosts boot together after a power cut would have lost one.
"""

from __future__ import annotations

import os
import secrets
import threading
from urllib.parse import quote

import pytest
from schulki.gateway.accounts.database import Accounts
from schulki.gateway.accounts.rate_windows import SharedWindow
from schulki.gateway.documents.file_records import FileRecords
from schulki.gateway.documents.stores import Stores
from schulki.gateway.web.file_owners import FileOwners
from sqlalchemy import create_engine, inspect, text

POSTGRES_URL = os.environ.get("SCHULKI_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(
    not POSTGRES_URL,
    reason="no PostgreSQL server here: ./dev test starts one, or set SCHULKI_TEST_POSTGRES_URL to a server of your own",
)
GATEWAYS = 6
ROUNDS = 3


def in_schema(url: str, schema: str) -> str:
    """The same database with ``schema`` first on the search path, so the race runs on empty tables of its own."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-csearch_path={schema}')}"


def start_like_a_gateway(url: str) -> None:
    """What a gateway's start does to the database: every module creates its tables."""
    accounts = Accounts(url)
    SharedWindow(accounts.engine, "logins", 60.0)
    FileRecords(accounts.engine)
    Stores(accounts.engine)
    FileOwners(accounts.engine)
    accounts.engine.dispose()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_gateways_starting_at_once_on_one_postgresql_all_come_up(round_: int) -> None:
    assert POSTGRES_URL
    schema = f"start_race_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = in_schema(POSTGRES_URL, schema)
        together = threading.Barrier(GATEWAYS)
        failures: list[BaseException] = []

        def gateway() -> None:
            together.wait()
            try:
                start_like_a_gateway(url)
            except BaseException as error:  # each start's failure, not just the first
                failures.append(error)

        threads = [threading.Thread(target=gateway) for _ in range(GATEWAYS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, f"{len(failures)} of {GATEWAYS} starts failed: {failures[0]!r}"
        tables = set(inspect(admin).get_table_names(schema=schema))
        assert {"users", "rate_events", "api_files", "vector_stores", "file_owners"} <= tables, tables
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
