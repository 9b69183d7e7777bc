"""Storing chat messages with group commit: every message of a worker goes through one writer,
which stores whatever is waiting in one transaction (one commit, one fsync on SQLite) and then,
in storage order, runs each message's ``on_stored`` (its publishes).

Why: one socket used to wait for an insert, an update and their commits per message, and an
agent answering 200 visitors queued its replies behind each other's round trips. Here a socket
hands over all the messages it has and waits once; a busy worker writes tens of messages per
commit instead of one.

A conversation's first message used to wait for its conversation's own transaction first (a
look-up, then get-or-create: five SQLite hops and a commit of its own, under the same lock the
writer needs): 300 new visitors in one second queued every message behind them for over a
second. On SQLite a new conversation is now created by the writer too (:meth:`open`), in the
same transaction as whatever else is waiting.

Guarantees: a message is either stored (its future gets the stored row, and its ``on_stored``
has run: it is published) or not stored at all (its future gets the error: the sender is
told). Ids grow in the order messages were handed over, so per-conversation order holds. The
flush runs in a task of its own: a sender that goes away meanwhile cannot leave a message
stored but unpublished, nor the others' futures unanswered.

On a SQLite file the writer has a connection of its own (:class:`WriterConnection`), used
only on a thread of its own: each batch is one hop to that thread and back, whatever it
holds (:meth:`MessageWriter._write_sqlite` says why that matters). SQLite's own locking
serialises it with the Tortoise connection (WAL, ``BEGIN IMMEDIATE``, a busy timeout: any
waiting happens on the writer's thread, never on the event loop), as it does the connections
of several workers. An in-memory database is private to its connection: there the writer goes
through Tortoise's transactions (more hops), and conversations are opened by the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from quart import current_app
from tortoise import connections
from tortoise.transactions import in_transaction

from slyker.database import CONNECTION
from slyker.models.chat import ChatMessage, Conversation, ConversationStatus, SenderType
from slyker.sqlite import SqliteClient, file_client

log = logging.getLogger(__name__)

WRITER_KEY = "slyker.chat.writer"
MAX_BATCH = 200  # messages per transaction
MESSAGES_TABLE = "chat_message"  # ChatMessage's table (slyker/models/chat.py)
CONVERSATIONS_TABLE = "chat_conversation"  # Conversation's
SLOW_WRITE_SECONDS = 0.1  # a transaction slower than this is logged
# How long the writer's connection waits for SQLite's write lock (held by the Tortoise
# connection, another worker, a CLI command): the Tortoise connection's own, sqlite3's default
# (aiosqlite and Tortoise keep it). Waited for on the writer's thread.
BUSY_TIMEOUT_SECONDS = 5.0


@dataclass(slots=True)
class NewMessage:
    conversation: Conversation
    sender_type: SenderType
    sender_name: str
    text: str
    notice: bool = False
    reopen: bool = False  # a visitor writing reopens its closed conversation
    on_stored: Callable[[ChatMessage], None] | None = None  # runs after the commit, in order


Waiting = tuple[NewMessage, "asyncio.Future[ChatMessage]"]
# A conversation to create, and its future: the conversation, or None if its session id is
# taken already (nothing was created).
Opening = tuple[Conversation, list[Any], "asyncio.Future[Conversation | None]"]


def sqlite_client() -> SqliteClient | None:
    """The SQLite client whose database file the writer writes to on its own connection (one
    hop per transaction), if any: not inside a transaction, not an in-memory database."""
    return file_client(connections.get(CONNECTION))  # a transaction's own client inside one


class MessageWriter:
    def __init__(self) -> None:
        self._waiting: list[Waiting] = []
        self._openings: list[Opening] = []
        self._flushing: asyncio.Task[None] | None = None
        self._connection = WriterConnection()

    @staticmethod
    def can_open() -> bool:
        """Whether :meth:`open` is available (a SQLite file, outside any transaction)."""
        return sqlite_client() is not None

    async def close(self) -> None:
        """Store what is waiting (every sender is answered), then close the writer's
        connection and its thread. The writer stays usable: a later message opens them
        again."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.wait([self._flushing])  # never cancels it, never raises
        await self._connection.close()

    async def open(self, conversation: Conversation) -> Conversation | None:
        """Create the unsaved ``conversation`` with whatever else is waiting (a SQLite file
        only: :meth:`can_open`): the conversation, now with its id, or None if a conversation
        with its session id exists already (then nothing was created). Raises if not
        stored."""
        database = sqlite_client()
        if database is None:
            raise RuntimeError("Conversations are opened by the writer only on a SQLite file")
        # Converted (and validated) here: a bad conversation fails for its own caller only,
        # not for everyone in its batch.
        columns, _ = _conversation_insert(database)
        values = _conversation_values(conversation, columns, datetime.now(UTC))
        future: asyncio.Future[Conversation | None] = asyncio.get_running_loop().create_future()
        self._openings.append((conversation, values, future))
        self._start_flushing()
        return await future

    async def store(self, message: NewMessage) -> ChatMessage:
        """Store ``message`` (with whatever else is waiting); raises if it was not stored."""
        return await self.submit([message])[0]

    def submit(self, messages: list[NewMessage]) -> list[asyncio.Future[ChatMessage]]:
        """Queue ``messages`` in this order: a future per message, its row or its error."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[ChatMessage]] = []
        for message in messages:
            future: asyncio.Future[ChatMessage] = loop.create_future()
            self._waiting.append((message, future))
            futures.append(future)
        self._start_flushing()
        return futures

    def _start_flushing(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(
                self._flush(), name="chat-message-writer"
            )

    async def _flush(self) -> None:
        while self._waiting or self._openings:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            openings, self._openings = self._openings[:MAX_BATCH], self._openings[MAX_BATCH:]
            started = time.monotonic()
            try:
                stored, opened = await self._write(
                    [message for message, _ in batch],
                    [(draft, values) for draft, values, _ in openings],
                )
            except Exception as error:  # nothing of the batch was stored: tell every sender
                for future in [*(f for _, f in batch), *(f for _, _, f in openings)]:
                    if not future.done():
                        future.set_exception(error)
                        future.exception()  # retrieved here too: a sender may have gone
                continue
            took = time.monotonic() - started
            if took > SLOW_WRITE_SECONDS:
                log.warning(
                    "Chat: storing %d messages and %d conversations took %.0f ms",
                    len(batch),
                    len(openings),
                    took * 1000,
                )
            for (_, _, opening), conversation in zip(openings, opened, strict=True):
                if not opening.done():
                    opening.set_result(conversation)
            for (message, future), row in zip(batch, stored, strict=True):
                if message.on_stored is not None:
                    try:
                        message.on_stored(row)
                    except Exception:
                        log.exception("Chat: publishing stored message %s failed", row.id)
                if not future.done():
                    future.set_result(row)

    async def _write(
        self, batch: list[NewMessage], openings: list[tuple[Conversation, list[Any]]]
    ) -> tuple[list[ChatMessage], list[Conversation | None]]:
        now = datetime.now(UTC)
        rows = [
            ChatMessage(
                conversation=message.conversation,
                sender_type=message.sender_type,
                sender_name=message.sender_name,
                text=message.text,
                is_notice=message.notice,
                created_at=now,
            )
            for message in batch
        ]
        database = sqlite_client()
        opened: list[Conversation | None] = []
        if database is not None:
            opened = await self._write_sqlite(batch, rows, openings, database, now)
        elif openings:  # only while the database changed under a running writer (tests)
            raise RuntimeError("Conversations are opened by the writer only on a SQLite file")
        elif batch:
            await self._write_transaction(batch, rows, now)
        for message in batch:
            message.conversation.last_active_at = now
            if message.reopen:
                message.conversation.status = ConversationStatus.ACTIVE
                message.conversation.closed_at = None
        return rows, opened

    async def _write_sqlite(
        self,
        batch: list[NewMessage],
        rows: list[ChatMessage],
        openings: list[tuple[Conversation, list[Any]]],
        database: SqliteClient,
        now: datetime,
    ) -> list[Conversation | None]:
        """The whole transaction in one call on the writer's own thread, on its own
        connection. Every SQLite call through aiosqlite is a hop to its thread and back, and
        under load each hop waits for the GIL (a switch interval, 5 ms, when the event loop is
        busy): six hops per batch (commit, BEGIN, insert, read the ids, update, COMMIT) made a
        reply wait tens of milliseconds. One hop is also atomic whatever happens to the
        awaiting task: the thread runs it to its COMMIT or ROLLBACK.

        Its own connection, not the Tortoise client's: aiosqlite 0.22 has no public call that
        runs a function on its thread (its public calls are one statement a hop), and a plain
        ``sqlite3`` connection on a single-worker executor is that call with public APIs only.
        It needs no lock of the event loop's: ``BEGIN IMMEDIATE`` takes SQLite's write lock, so
        the Tortoise connection's transactions and writes (and other workers') come before or
        after it, never between its statements, and ids grow in commit order.

        New conversations go first (``ON CONFLICT DO NOTHING``: a taken session id creates
        nothing and answers None); no message of the batch can belong to one of them (its
        first message waits for its opening)."""
        transaction = _SqliteTransaction.of(batch, openings, database, now)
        ids, conversation_ids = await self._connection.run(database, transaction)
        for row, row_id in zip(rows, ids, strict=True):
            row.id = row_id
        return _opened_conversations(openings, conversation_ids)

    async def _write_transaction(
        self, batch: list[NewMessage], rows: list[ChatMessage], now: datetime
    ) -> None:
        async with in_transaction() as connection:
            if connection.capabilities.dialect == "sqlite":
                await self._insert_sqlite(rows, connection)
            else:
                await self._insert_postgres(rows, connection)
            touched = {message.conversation.id for message in batch}
            await (
                Conversation.filter(id__in=touched).using_db(connection).update(last_active_at=now)
            )
            reopened = {message.conversation.id for message in batch if message.reopen}
            if reopened:
                await (
                    Conversation.filter(id__in=reopened, status=ConversationStatus.CLOSED)
                    .using_db(connection)
                    .update(status=ConversationStatus.ACTIVE, closed_at=None)
                )

    @staticmethod
    async def _insert_postgres(rows: list[ChatMessage], connection: Any) -> None:
        """Two round trips whatever the batch: the ids first (from the table's sequence, in
        ascending order), then every row in one pipelined ``executemany``. One round trip per
        row made an agent's batch of a hundred replies wait for a hundred loop turns."""
        _, drawn = await connection.execute_query(
            f"SELECT nextval(pg_get_serial_sequence('{MESSAGES_TABLE}', 'id'))"
            " AS id FROM generate_series(1, $1)",
            [len(rows)],
        )
        for row, row_id in zip(rows, sorted(record["id"] for record in drawn), strict=True):
            row.id = row_id
        await connection.execute_many(
            f'INSERT INTO "{MESSAGES_TABLE}" ("id", "conversation_id", "sender_type",'
            ' "sender_name", "text", "is_notice", "created_at")'
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                [
                    row.id,
                    row.conversation_id,  # type: ignore[attr-defined]
                    str(row.sender_type),
                    row.sender_name,
                    row.text,
                    row.is_notice,
                    row.created_at,
                ]
                for row in rows
            ],
        )

    @staticmethod
    async def _insert_sqlite(rows: list[ChatMessage], connection: Any) -> None:
        """All rows in one statement: every SQLite call is a hop to aiosqlite's thread, and
        under load each hop waits for the GIL (milliseconds), so per-row inserts made a batch
        of a few messages take a hundred milliseconds and more. The ids are read back: inside
        this write transaction nobody else inserts, and new rowids are the largest, in order."""
        await ChatMessage.bulk_create(rows, using_db=connection)
        newest = (
            await ChatMessage.all()
            .using_db(connection)
            .order_by("-id")
            .limit(len(rows))
            .values_list("id", flat=True)
        )
        for row, row_id in zip(rows, sorted(newest), strict=True):
            row.id = row_id


class WriterConnection:
    """The writer's own ``sqlite3`` connection to the database file, used only on its own
    thread (a single-worker executor): opened there at the first transaction with the
    Tortoise connection's PRAGMAs (WAL, foreign keys, journal size, any of ``DATABASE_URL``)
    and busy timeout; closed there after an error (a disk I/O error, "database is locked")
    and opened again for the next transaction; :meth:`close` ends both (a later transaction
    starts a new thread)."""

    def __init__(self) -> None:
        self._thread: _WriterThread | None = None

    async def run(
        self, database: SqliteClient, transaction: _SqliteTransaction
    ) -> tuple[list[int], list[int | None]]:
        """``transaction`` run on the database file of ``database``, in one hop."""
        if self._thread is None:
            self._thread = _WriterThread()
        opened_for = (database.filename, tuple(database.pragmas.items()))
        return await self._thread.call(self._thread.run, opened_for, transaction)

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            await thread.close()


Database = tuple[str, tuple[tuple[str, Any], ...]]  # a file and its PRAGMAs


class _WriterThread:
    """A single-worker executor and the connection only its thread touches."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-writer")
        self.connection: sqlite3.Connection | None = None
        self.database: Database | None = None  # what the connection was opened for

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def close(self) -> None:
        try:
            await self.call(self.disconnect)
        finally:
            # Its thread is idle now: it ends at once (a join of microseconds, when serving
            # ends), so nothing of the writer outlives the app.
            self.executor.shutdown(wait=True)

    def run(
        self, database: Database, transaction: _SqliteTransaction
    ) -> tuple[list[int], list[int | None]]:
        if self.connection is None or self.database != database:  # or another database
            self.disconnect()
            self.connection, self.database = _connect(*database), database
        try:
            return transaction.run(self.connection)
        except sqlite3.Error:
            self.disconnect()  # whatever state it is in; the next transaction reopens it
            raise

    def disconnect(self) -> None:
        connection, self.connection, self.database = self.connection, None, None
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()  # rolls back a transaction left open


def _connect(filename: str, pragmas: tuple[tuple[str, Any], ...]) -> sqlite3.Connection:
    """A connection set up as Tortoise sets up its own (``SqliteClient.create_connection``):
    autocommit (the transaction sends its own BEGIN), then the client's PRAGMAs."""
    connection = sqlite3.connect(filename, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        for pragma, value in pragmas:
            connection.execute(f"PRAGMA {pragma}={value}").close()
    except BaseException:
        connection.close()
        raise
    return connection


async def closing_writer() -> AsyncGenerator[None, None]:
    """A ``while_serving`` hook: when serving ends (SIGTERM, after the sockets are closed),
    the app's writer stores what is waiting, then closes its connection and thread. Such
    hooks end before the ``after_serving`` ones, so before the database closes."""
    yield
    writer = current_app.extensions.get(WRITER_KEY)
    if writer is not None:
        await writer.close()


@dataclass(slots=True)
class _SqliteTransaction:
    """One batch's writes on SQLite, prepared on the event loop, then run in one call on the
    writer's thread (:meth:`MessageWriter._write_sqlite` says why)."""

    create_conversation: str  # the INSERT of a conversation (``ON CONFLICT DO NOTHING``)
    new_conversations: list[list[Any]]  # its parameters, one list per opening
    messages: list[tuple[Any, ...]]  # one INSERT's parameters per message
    touched: list[int]  # conversations with a new message: last_active_at = now
    reopened: list[int]  # conversations a visitor wrote to: closed → active
    now: datetime

    @classmethod
    def of(
        cls,
        batch: list[NewMessage],
        openings: list[tuple[Conversation, list[Any]]],
        database: SqliteClient,
        now: datetime,
    ) -> _SqliteTransaction:
        _, create_conversation = _conversation_insert(database)
        return cls(
            create_conversation=create_conversation,
            new_conversations=[values for _, values in openings],
            touched=sorted({message.conversation.id for message in batch}),
            reopened=sorted({message.conversation.id for message in batch if message.reopen}),
            messages=[
                (
                    message.conversation.id,
                    message.sender_type.value,
                    message.sender_name,
                    message.text,
                    message.notice,
                    now,
                )
                for message in batch
            ],
            now=now,
        )

    def run(self, connection: sqlite3.Connection) -> tuple[list[int], list[int | None]]:
        """All of it or nothing (on the writer's thread): the messages' ids and the new
        conversations' ids (None where the session id was taken)."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            conversation_ids = self._insert_conversations(connection)
            ids = self._insert_messages(connection)
            self._update_conversations(connection)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return ids, conversation_ids

    def _insert_conversations(self, connection: sqlite3.Connection) -> list[int | None]:
        conversation_ids: list[int | None] = []
        for values in self.new_conversations:
            cursor = connection.execute(self.create_conversation, values)
            conversation_ids.append(cursor.lastrowid if cursor.rowcount == 1 else None)
        return conversation_ids

    def _insert_messages(self, connection: sqlite3.Connection) -> list[int]:
        return [
            connection.execute(
                f'INSERT INTO "{MESSAGES_TABLE}" ("conversation_id", "sender_type",'
                ' "sender_name", "text", "is_notice", "created_at")'
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            ).lastrowid
            or 0
            for row in self.messages
        ]

    def _update_conversations(self, connection: sqlite3.Connection) -> None:
        """The touched conversations' last activity, and the reopened ones' status."""
        if self.touched:
            marks = ", ".join("?" * len(self.touched))
            connection.execute(
                f'UPDATE "{CONVERSATIONS_TABLE}" SET "last_active_at" = ? WHERE "id" IN ({marks})',
                [self.now, *self.touched],
            )
        if self.reopened:
            marks = ", ".join("?" * len(self.reopened))
            connection.execute(
                f'UPDATE "{CONVERSATIONS_TABLE}" SET "status" = ?, "closed_at" = NULL'
                f' WHERE "status" = ? AND "id" IN ({marks})',
                [
                    ConversationStatus.ACTIVE.value,
                    ConversationStatus.CLOSED.value,
                    *self.reopened,
                ],
            )


def _opened_conversations(
    openings: list[tuple[Conversation, list[Any]]], conversation_ids: list[int | None]
) -> list[Conversation | None]:
    """Each opening's conversation, now saved with its id, or None where nothing was created."""
    opened: list[Conversation | None] = []
    for (draft, _), conversation_id in zip(openings, conversation_ids, strict=True):
        if conversation_id is None:
            opened.append(None)
            continue
        opened.append(_stored(draft, conversation_id))
    return opened


def _stored(draft: Conversation, conversation_id: int) -> Conversation:
    """``draft`` as stored under ``conversation_id``, through Tortoise's public ``construct``
    with its documented ``_saved_in_db`` flag: the caller's messages refer to it (Tortoise
    accepts only a saved conversation as a message's), and it refreshes and saves as a row
    that exists. Its values are the draft's own, already Python values; no extra query."""
    meta = Conversation._meta
    values = {name: getattr(draft, name) for name in meta.fields_db_projection}
    values.update({name: getattr(draft, name) for name in meta.fk_fields})  # the related rows
    values["id"] = conversation_id
    return Conversation.construct(_saved_in_db=True, **values)


def _conversation_insert(database: SqliteClient) -> tuple[list[str], str]:
    """Conversation's columns and Tortoise's own INSERT of them, made not to fail on a taken
    session id (made on first use: the models are complete only once Tortoise is set up)."""
    global _CONVERSATION_INSERT
    if _CONVERSATION_INSERT is None:
        executor = database.executor_class(model=Conversation, db=database)
        _CONVERSATION_INSERT = (
            list(executor.regular_columns),
            f'{executor.insert_query} ON CONFLICT ("session_id") DO NOTHING',
        )
    return _CONVERSATION_INSERT


_CONVERSATION_INSERT: tuple[list[str], str] | None = None


def _conversation_values(draft: Conversation, columns: list[str], now: datetime) -> list[Any]:
    """The row of an unsaved conversation, converted as Tortoise converts it."""
    draft.created_at = draft.last_active_at = now
    fields_map = Conversation._meta.fields_map
    return [fields_map[name].to_db_value(getattr(draft, name), draft) for name in columns]


def current_writer() -> MessageWriter:
    writer = current_app.extensions.get(WRITER_KEY)
    if writer is None:
        writer = current_app.extensions[WRITER_KEY] = MessageWriter()
    return writer  # type: ignore[no-any-return]
