"""Tortoise's SQLite client, made safe against cancelled callers (a Tortoise engine module).

Quart cancels a request's task when its client disconnects, at whatever ``await`` it is in.
Tortoise's SQLite client shares one connection behind one ``asyncio.Lock`` and has two places
where such a cancellation left that shared state broken for every later request on the worker
(each request waited for the lock forever: the outage of one abandoned first request):

* ``ConnectionWrapper.__aenter__`` takes the lock, then opens the connection lazily (the first
  query of the process); cancelled (or failing) while opening, ``__aexit__`` never runs and the
  lock is never released. The connection was published before its PRAGMAs (WAL, foreign keys)
  ran, so a failed set-up also left a half-configured connection in place.
* ``SqliteTransactionContext.__aenter__`` takes the same lock, then sends ``BEGIN``; cancelled
  there, the lock is never released and the ``BEGIN`` (which aiosqlite's thread runs anyway)
  leaves the connection inside a transaction that nobody commits.

Here the connection is opened by one task of its own that callers only wait for (shielded), and
published once it is complete; a caller that fails between taking the lock and holding a usable
connection or transaction releases the lock, after rolling back a ``BEGIN`` it may have sent.
``slyker.database`` uses this engine for ``sqlite://`` URLs and also opens the connection when
serving starts, so requests never open it at all.

**Reads on the event loop** (:meth:`SqliteClient.read_now`, issue 12). Every query through
aiosqlite is a hop to its thread and back: a queue, a thread wake-up, the GIL handed over
twice and the loop woken through its self-pipe, 50-80 µs for a read that SQLite answers in
a few (and under load the thread also waits for the GIL, behind whatever the loop runs). A
hot read that is one indexed look-up (the cart of ``GET /api/billing/carts/current/``) may
instead run directly on the event loop, on a second, read-only connection of the client
(``PRAGMA query_only``, busy timeout 0). Why this is safe:

* bounded: one indexed statement returning a handful of rows, from pages the writer just
  touched (the OS page cache); microseconds, less than the hop it replaces;
* never waiting: in WAL mode readers do not block on the writer nor it on them, and a
  reader that would have to wait (SQLITE_BUSY: a WAL recovery, a file in another journal
  mode) fails at once instead of sleeping on the loop: ``read_now`` then answers None and
  the caller takes the normal path (the same on any other ``sqlite3`` error, after which the
  reader is reopened on the next read);
* current: each statement is its own read transaction (autocommit), so it sees every
  transaction committed before it started, whichever connection or worker committed it
  (a write awaited by the same request has committed before the read starts);
* never inside a transaction: callers use it only on the plain client, not a
  transaction's connection (whose uncommitted writes only that connection sees);
* only a file database in WAL mode (an in-memory database is private to its connection);
  anything else answers None for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from tortoise.backends.base.client import ConnectionWrapper, TransactionalDBClient
from tortoise.backends.sqlite.client import SqliteClient as TortoiseSqliteClient
from tortoise.backends.sqlite.client import (
    SqliteTransactionContext,
    SqliteTransactionWrapper,
)
from tortoise.connection import get_connections
from tortoise.exceptions import TransactionManagementError

log = logging.getLogger(__name__)

ENGINE = __name__  # the ``engine`` of a Tortoise connection config


def is_in_memory(file_path: str) -> bool:
    """Whether a SQLite client's database is in memory: private to its one connection, no
    other connection (a reader, the chat writer's) can open it."""
    return file_path == ":memory:" or "mode=memory" in file_path


def file_client(connection: object) -> SqliteClient | None:
    """``connection`` if it is this client on a SQLite database file, else None. A
    transaction's connection is never this class (Tortoise's transaction wrapper is), so a
    client returned here is always outside any transaction; an in-memory database is private
    to its one connection, so it is left out too. What may use another connection of its own
    (the on-loop reader, the chat writer) asks this."""
    if isinstance(connection, SqliteClient) and not is_in_memory(connection.filename):
        return connection
    return None


class SqliteClient(TortoiseSqliteClient):
    """One connection per database, opened once, whoever is cancelled meanwhile."""

    def __init__(self, file_path: str, **kwargs: Any) -> None:
        super().__init__(file_path, **kwargs)
        self._opening: asyncio.Task[None] | None = None
        # read_now's connection: opened at its first read, None again after an error.
        self._reader: sqlite3.Connection | None = None
        # False for good once the database cannot be read that way (memory, not WAL).
        self._reader_usable = not is_in_memory(file_path)

    @property
    def is_open(self) -> bool:
        """The connection exists and its set-up (PRAGMAs) has finished."""
        return self._connection is not None and (self._opening is None or self._opening.done())

    async def create_connection(self, with_db: bool) -> None:
        if self.is_open:
            return
        if self._opening is None or self._opening.done():  # the first, or the last one failed
            self._opening = asyncio.ensure_future(self._open(with_db))
        # A cancelled caller stops waiting; the opening goes on and completes for the next one.
        await asyncio.shield(self._opening)

    async def _open(self, with_db: bool) -> None:
        try:
            await super().create_connection(with_db)
        except BaseException:
            # Tortoise set _connection before its PRAGMAs: never leave a half-configured one.
            connection, self._connection = self._connection, None
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()
            raise

    async def close(self) -> None:
        if self._opening is not None:
            await asyncio.wait([self._opening])  # an opening under way ends first (no raise)
        self._opening = None
        self._close_reader()
        await super().close()

    def read_now(self, sql: str, values: Sequence[Any]) -> list[dict[str, Any]] | None:
        """The rows of one read-only statement, run here on the event loop (see the module's
        docstring), as ``execute_query_dict`` gives them; None when it cannot be read that
        way now (then use ``execute_query_dict``). Only for a short indexed read outside any
        transaction: the caller holds the plain client, not a transaction's connection."""
        reader = self._reader
        if reader is None:
            if not self._reader_usable or not self.is_open:  # the main connection sets WAL
                return None
            reader = self._open_reader()
            if reader is None:
                return None
        self.log.debug("%s: %s", sql, values)  # as Tortoise logs every statement
        try:
            return list(map(dict, reader.execute(sql, values).fetchall()))
        except sqlite3.Error as error:  # busy (never waited for), or anything else
            log.debug("Read on the event loop failed (%s): the normal path answers", error)
            self._close_reader()
            return None

    def _open_reader(self) -> sqlite3.Connection | None:
        try:
            # timeout=0: a reader that would have to wait fails at once instead (SQLITE_BUSY).
            reader = sqlite3.connect(
                self.filename, timeout=0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error:
            return None
        try:
            reader.row_factory = sqlite3.Row  # as Tortoise's connection (dict(row) per row)
            mode = reader.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":  # readers would wait for writers: never here
                self._reader_usable = False
                reader.close()
                return None
            reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error:
            reader.close()
            return None
        self._reader = reader
        return reader

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(sqlite3.Error):
                reader.close()

    def acquire_connection(self) -> ConnectionWrapper:
        return _ConnectionWrapper(self._lock, self)

    def _in_transaction(self) -> SqliteTransactionContext:
        return _TransactionContext(_ImmediateTransactionWrapper(self), self._lock)


class _ImmediateTransactionWrapper(SqliteTransactionWrapper):
    """Transactions take SQLite's write lock when they begin (``BEGIN IMMEDIATE``).

    Within a worker the client's lock already serialises transactions. Across workers (or a
    CLI command next to the server) a plain ``BEGIN`` reads first and upgrades to writing
    later, and an upgrade after another process wrote fails at once with "database is
    locked" (the busy timeout does not apply to it). ``BEGIN IMMEDIATE`` instead waits for
    the lock (up to the connection's busy timeout, 5 s), and what the transaction reads
    (a cart's status, a coupon's count) cannot change under it before it commits.
    """

    async def begin(self) -> None:
        try:
            await self._connection.commit()
            await self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise TransactionManagementError(exc) from exc


class _ConnectionWrapper(ConnectionWrapper):
    """Tortoise's lock-and-connection context; the lock is released when opening fails."""

    async def __aenter__(self) -> Any:
        await self._lock.acquire()
        try:
            if not self.client.is_open:  # type: ignore[attr-defined]
                await self.client.create_connection(with_db=True)
            self.connection = self.client._connection
        except BaseException:
            self._lock.release()
            raise
        return self.connection


class _TransactionContext(SqliteTransactionContext):
    """Tortoise's SQLite transaction; a failed or cancelled start leaves nothing behind."""

    async def ensure_connection(self) -> None:
        parent = self.connection._parent
        if not parent.is_open:
            await parent.create_connection(with_db=True)
        self.connection._connection = parent._connection

    async def __aenter__(self) -> TransactionalDBClient:
        await self._trxlock.acquire()
        began = False
        try:
            await self.ensure_connection()
            self.token = get_connections().set(self.connection_name, self.connection)
            began = True  # from here BEGIN may have been sent, whatever happens to this task
            await self.connection.begin()
        except BaseException:
            if began:
                get_connections().reset(self.token)
                # Roll back in a task of its own (a cancelled task cannot await), then release
                # the lock: nothing else runs on the connection until the BEGIN is undone.
                rollback = asyncio.ensure_future(self._roll_back_and_release())
                _keep_alive(rollback)
            else:
                self._trxlock.release()
            raise
        return self.connection

    async def _roll_back_and_release(self) -> None:
        try:
            # sqlite3's rollback() is a no-op when no transaction is open.
            await self.connection._connection.rollback()
        except Exception:
            log.exception("Rolling back an abandoned SQLite transaction failed")
        finally:
            self._trxlock.release()


_background: set[asyncio.Task[None]] = set()


def _keep_alive(task: asyncio.Task[None]) -> None:
    """Hold a reference until the task is done (the loop keeps only weak ones)."""
    _background.add(task)
    task.add_done_callback(_background.discard)


client_class = SqliteClient
