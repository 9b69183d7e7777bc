"""slyker's SQLite client (``slyker/sqlite.py``) against cancellation at every await point.

Quart cancels a request's task when its client disconnects. Tortoise's own SQLite client then
kept its one lock forever if that happened while the first query opened the connection (or
while a transaction sent BEGIN), and every later query of the worker hung. Each case here
starts the operation, cancels it after a delay, and checks that the next query answers within
a bound and that the connection is complete (its PRAGMAs ran) and outside any transaction. The
delays sweep from "before the first await" to "finished by itself", and each case asserts which
await points the cancellations actually hit, so the sweep cannot silently miss them. On a loaded
machine the sweep can step over a short await point, so each named point the sweep missed is then
targeted: the operation is watched every loop iteration and cancelled once it waits there.

Always SQLite (a file of the test's own), whichever database the suite runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import linecache
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tortoise.transactions import in_transaction

from slyker import sqlite
from tests.sqlite_clients import sqlite_client

ANSWER_WITHIN = 5.0  # a query after the cancelled one; it used to wait forever
STEP = 0.0003  # seconds between the sweep's cancellation points
MAX_STEPS = 200
TARGET_ATTEMPTS = 20  # runs that may finish before reaching a targeted await point


def suspended_at(task: asyncio.Task[Any]) -> list[str]:
    """Where a task is suspended: each frame of its await chain, outermost first, as
    ``function: source line``."""
    frames = []
    coroutine: Any = task.get_coro()
    while coroutine is not None and hasattr(coroutine, "cr_frame"):
        frame = coroutine.cr_frame
        if frame is not None:
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
            frames.append(f"{frame.f_code.co_name}: {line}")
        coroutine = coroutine.cr_await
    return frames


AWAIT_POINTS = (  # (a fragment of the awaiting source line, its name)
    ("aiosqlite.connect", "connect"),
    ("PRAGMA", "pragma"),
    ("cursor.close", "pragma-cursor-close"),
    ("self._connection.commit()", "begin-commit"),
    ('execute("BEGIN IMMEDIATE")', "begin"),  # slyker.sqlite: transactions take the write lock
    ("execute_insert(query", "insert"),
    ("execute_fetchall(query", "query"),
    ("lock.acquire", "lock"),
)


def classify(frames: list[str]) -> str:
    """The innermost frame that is one of the known await points, else "not started"."""
    for frame in reversed(frames):
        for fragment, name in AWAIT_POINTS:
            if fragment in frame:
                return name
    return "not started" if len(frames) <= 1 else " <- ".join(reversed(frames))


def sweep() -> Iterator[tuple[int, float]]:
    """Cancellation points: after 0..39 loop iterations, then every STEP seconds."""
    for spins in range(40):
        yield spins, 0.0
    for step in range(1, MAX_STEPS):
        yield 0, step * STEP


Cancel = Callable[
    [Callable[[], Awaitable[Any]], Callable[[], "asyncio.Task[Any] | None"]], Awaitable[str]
]


async def cancel_everywhere(
    required: set[str], case: Callable[[int, Cancel], Awaitable[str]]
) -> set[str]:
    """Run ``case(number, cancel)`` over the sweep until it reports "done", then target each
    ``required`` point the sweep missed; the points hit."""
    hit: set[str] = set()
    number = 0
    for spins, delay in sweep():
        number += 1
        where = await case(number, functools.partial(cancel_after, spins=spins, delay=delay))
        hit.add(where)
        if where == "done":
            break
    for target in sorted(required - hit):
        for _ in range(TARGET_ATTEMPTS):
            number += 1
            where = await case(number, functools.partial(cancel_at, target=target))
            hit.add(where)
            if where == target:
                break
    return hit


async def cancel_at(
    operation: Callable[[], Awaitable[Any]],
    opening: Callable[[], asyncio.Task[Any] | None],
    *,
    target: str,
) -> str:
    """Run ``operation`` and cancel it as soon as it waits at ``target`` (checked every loop
    iteration; an await on aiosqlite's thread lasts at least one), or "done"."""
    task = asyncio.ensure_future(operation())
    while not task.done():
        pending = opening()
        if classify(suspended_at(pending if pending is not None else task)) == target:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return target
        await asyncio.sleep(0)
    await task
    return "done"


async def cancel_after(
    operation: Callable[[], Awaitable[Any]],
    opening: Callable[[], asyncio.Task[Any] | None],
    *,
    spins: int,
    delay: float,
) -> str:
    """Run ``operation``, cancel it after ``spins`` loop iterations and ``delay`` seconds;
    where it was (in the connection opening when that is what it waits for), or "done"."""
    task = asyncio.ensure_future(operation())
    for _ in range(spins):
        await asyncio.sleep(0)
    if delay:
        await asyncio.sleep(delay)
    if task.done():
        await task
        return "done"
    pending = opening()
    where = classify(suspended_at(pending if pending is not None else task))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return where


async def assert_usable(client: sqlite.SqliteClient) -> None:
    """The next query answers in time, on a complete connection outside any transaction."""
    try:
        async with asyncio.timeout(ANSWER_WITHIN):
            _, rows = await client.execute_query("PRAGMA foreign_keys")
            _, journal = await client.execute_query("PRAGMA journal_mode")
    except TimeoutError:
        pytest.fail(f"the next query did not answer within {ANSWER_WITHIN} s (lock held)")
    assert rows[0][0] == 1 and journal[0][0] == "wal", "a half-configured connection"
    assert client._connection is not None
    assert not client._connection._conn.in_transaction, "left inside a transaction"


def opening_of(client: sqlite.SqliteClient) -> Callable[[], asyncio.Task[Any] | None]:
    """The client's connection opening while it runs (what a first query waits for)."""

    def pending() -> asyncio.Task[Any] | None:
        opening = client._opening
        return opening if opening is not None and not opening.done() else None

    return pending


async def test_a_cancelled_first_query_never_leaves_the_lock_held(tmp_path: Path) -> None:
    async def case(number: int, cancel: Cancel) -> str:
        async with sqlite_client(tmp_path / f"first-{number}.sqlite3") as client:
            where = await cancel(lambda: client.execute_query("SELECT 1"), opening_of(client))
            await assert_usable(client)
        return where

    required = {"connect", "pragma", "pragma-cursor-close", "done"}
    hit = await cancel_everywhere(required, case)
    assert required <= hit, hit


async def test_a_cancelled_first_transaction_never_leaves_the_lock_held(tmp_path: Path) -> None:
    async def transaction() -> None:
        async with in_transaction("default") as connection:
            await connection.execute_query("SELECT 1")

    async def case(number: int, cancel: Cancel) -> str:
        async with sqlite_client(tmp_path / f"first-tx-{number}.sqlite3") as client:
            where = await cancel(transaction, opening_of(client))
            await assert_usable(client)
        return where

    required = {"connect", "pragma", "pragma-cursor-close", "done"}
    hit = await cancel_everywhere(required, case)
    assert required <= hit, hit


async def test_a_cancelled_transaction_is_rolled_back_and_releases_the_lock(
    tmp_path: Path,
) -> None:
    """On an open connection: cancelled while sending BEGIN (or later), the transaction is
    rolled back and the lock released; what it wrote never lands; later writes commit."""
    path = tmp_path / "tx.sqlite3"
    required = {"begin-commit", "begin", "insert", "done"}
    async with sqlite_client(path) as client:
        await client.execute_script("CREATE TABLE item (step INTEGER NOT NULL)")

        async def case(number: int, cancel: Cancel) -> str:
            async def transaction() -> None:
                async with in_transaction("default") as connection:
                    await connection.execute_insert("INSERT INTO item VALUES (?)", [number])
                    await connection.execute_insert("INSERT INTO item VALUES (?)", [-number])

            where = await cancel(transaction, lambda: None)
            await assert_usable(client)
            return where

        hit = await cancel_everywhere(required, case)
        await client.execute_insert("INSERT INTO item VALUES (?)", [10_000])
    # Every transaction wrote both its rows or neither, and the last write is committed:
    # another connection sees it.
    with contextlib.closing(sqlite3.connect(path)) as other:
        values = [row[0] for row in other.execute("SELECT step FROM item")]
    assert 10_000 in values
    assert sorted(v for v in values if 0 < v < 10_000) == sorted(-v for v in values if v < 0)
    assert required <= hit, hit


async def test_concurrent_first_queries_share_one_connection(tmp_path: Path) -> None:
    """Ten requests arrive at once and half are cancelled: one connection is opened."""
    async with sqlite_client(tmp_path / "many.sqlite3") as client:
        tasks = [asyncio.ensure_future(client.execute_query("SELECT 1")) for _ in range(10)]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        results = await asyncio.wait_for(
            asyncio.gather(*tasks, return_exceptions=True), ANSWER_WITHIN
        )
        assert all(isinstance(r, asyncio.CancelledError) for r in results[::2]), results
        assert not any(isinstance(r, BaseException) for r in results[1::2]), results
        first = client._connection
        await assert_usable(client)
        assert client._connection is first


async def test_a_failed_opening_is_retried_not_kept_half_done(tmp_path: Path) -> None:
    """A file that cannot be opened fails the query and keeps nothing, lock included (Tortoise's
    own client kept the lock after any failed opening, not only a cancelled one); once the
    file can be opened, the next query opens it."""
    missing_dir = tmp_path / "not-yet"
    async with sqlite_client(missing_dir / "db.sqlite3") as client:
        with pytest.raises(Exception, match="unable to open"):
            await asyncio.wait_for(client.execute_query("SELECT 1"), ANSWER_WITHIN)
        assert client._connection is None
        missing_dir.mkdir()
        await assert_usable(client)
