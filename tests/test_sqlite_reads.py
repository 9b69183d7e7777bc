"""``SqliteClient.read_now`` (slyker/sqlite.py): a read on the event loop, on a read-only
connection of its own, that sees every committed write whoever made it, never waits for a
lock, and answers None (the caller then takes the normal path) whenever it cannot read.

Always SQLite (a file of the test's own), whichever database the suite runs on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tortoise.transactions import in_transaction

from slyker import sqlite
from tests.sqlite_clients import sqlite_client

SELECT = "SELECT id, name FROM thing WHERE name = ? ORDER BY id"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[sqlite.SqliteClient]:
    """The served app's client for a ``sqlite://`` URL, connected, with one table."""
    async with sqlite_client(tmp_path / "db.sqlite3") as client:
        await client.execute_script(
            "CREATE TABLE thing (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
            "INSERT INTO thing (name) VALUES ('a'), ('a'), ('b');"
        )
        yield client


def other_worker(client: sqlite.SqliteClient) -> sqlite3.Connection:
    """A connection of its own to the same file, as another worker (or a CLI) has."""
    return sqlite3.connect(client.filename, isolation_level=None, timeout=5)


async def test_rows_are_those_of_the_normal_path(client: sqlite.SqliteClient) -> None:
    expected = await client.execute_query_dict(SELECT, ["a"])
    assert expected == [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]
    assert client.read_now(SELECT, ("a",)) == expected
    assert client.read_now(SELECT, ("none",)) == []


async def test_nothing_is_read_before_the_connection_is_open(tmp_path: Path) -> None:
    async with sqlite_client(tmp_path / "new.sqlite3") as client:
        assert client.read_now("SELECT 1 AS one", ()) is None  # not opened: WAL not set
        await client.execute_query("SELECT 1")
        assert client.read_now("SELECT 1 AS one", ()) == [{"one": 1}]


async def test_a_write_committed_elsewhere_is_seen_at_once(client: sqlite.SqliteClient) -> None:
    assert client.read_now(SELECT, ("c",)) == []  # the reader is open, and has read
    worker = other_worker(client)
    try:
        worker.execute("INSERT INTO thing (name) VALUES ('c')")
        assert client.read_now(SELECT, ("c",)) == [{"id": 4, "name": "c"}]
        worker.execute("UPDATE thing SET name = 'd' WHERE id = 4")
        assert client.read_now(SELECT, ("c",)) == []
    finally:
        worker.close()
    # And one committed by the client itself (this worker), once its await returned.
    await client.execute_query("UPDATE thing SET name = 'c' WHERE id = 4")
    assert client.read_now(SELECT, ("c",)) == [{"id": 4, "name": "c"}]


async def test_an_open_write_transaction_is_neither_seen_nor_waited_for(
    client: sqlite.SqliteClient,
) -> None:
    worker = other_worker(client)
    try:
        worker.execute("BEGIN IMMEDIATE")
        worker.execute("INSERT INTO thing (name) VALUES ('a')")
        # WAL: the reader reads the last commit instead of waiting for the writer.
        assert client.read_now(SELECT, ("a",)) == [{"id": 1, "name": "a"}, {"id": 2, "name": "a"}]
        worker.execute("COMMIT")
        assert len(client.read_now(SELECT, ("a",)) or []) == 3
    finally:
        worker.close()


async def test_a_reader_never_sleeps_on_a_lock(client: sqlite.SqliteClient) -> None:
    # Busy timeout 0: a read that would have to wait (SQLITE_BUSY) fails at once and answers
    # None (the error path below) instead of sleeping on the event loop.
    assert client.read_now("PRAGMA busy_timeout", ()) == [{"timeout": 0}]
    assert client.read_now("PRAGMA query_only", ()) == [{"query_only": 1}]


async def test_an_error_answers_none_and_the_next_read_works(client: sqlite.SqliteClient) -> None:
    assert client.read_now("SELECT nothing FROM nowhere", ()) is None
    assert client.read_now(SELECT, ("b",)) == [{"id": 3, "name": "b"}]


async def test_the_reader_cannot_write(client: sqlite.SqliteClient) -> None:
    assert client.read_now("DELETE FROM thing", ()) is None  # query_only
    assert len(await client.execute_query_dict("SELECT id FROM thing")) == 3


@pytest.mark.parametrize("journal_mode", ["DELETE", None])
async def test_only_a_file_database_in_wal_mode_is_read_so(
    tmp_path: Path, journal_mode: str | None
) -> None:
    if journal_mode is None:  # in memory: private to its connection
        client = sqlite.SqliteClient(":memory:", connection_name="memory")
    else:  # a rollback journal: readers would wait for writers
        path = str(tmp_path / "journal.sqlite3")
        client = sqlite.SqliteClient(path, connection_name="journal", journal_mode=journal_mode)
    await client.create_connection(with_db=True)
    try:
        await client.execute_query("CREATE TABLE thing (id INTEGER PRIMARY KEY, name TEXT)")
        await client.execute_query("INSERT INTO thing (name) VALUES ('a')")
        assert client.read_now(SELECT, ("a",)) is None
        assert await client.execute_query_dict(SELECT, ["a"]) == [{"id": 1, "name": "a"}]
    finally:
        await client.close()


async def test_file_client_is_the_plain_client_of_a_database_file(
    client: sqlite.SqliteClient,
) -> None:
    """What may use a connection of its own asks file_client: never a transaction's
    connection (whose uncommitted writes only it sees), never an in-memory database."""
    assert sqlite.file_client(client) is client
    async with in_transaction("default") as connection:
        assert sqlite.file_client(connection) is None
    in_memory = sqlite.SqliteClient(":memory:", connection_name="memory")
    assert sqlite.file_client(in_memory) is None
    assert sqlite.file_client(object()) is None
