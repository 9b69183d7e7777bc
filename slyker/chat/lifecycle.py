"""The live sockets of a worker, and what happens to them over time: one task per worker (not
per socket) pings them, renews their slots and presence, re-checks their users, and closes them
all with 1001 as soon as the process starts to stop (draining: :mod:`slyker.lifecycle`).

Why one task: a socket used to run seven (a receiver, a sender, a pinger, a slot renewer and
three waiters), most of them asleep; per idle socket that was memory for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Protocol

from quart import abort, current_app

from slyker.lifecycle import DRAINING_KEY
from slyker.settings import current_settings

log = logging.getLogger(__name__)

SOCKETS_KEY = "slyker.chat.sockets"
# The resolution of pings, renewals and identity re-checks (finer when CHAT_PING_INTERVAL or
# CHAT_AUTH_RECHECK_SECONDS is shorter: the tests use tenths of a second).
TICK_SECONDS = 0.5
# Upkeep calls (slot renewals and presence on Redis, identity re-checks on the database) run
# at most this many at a time. Sockets opened together fall due together: a hundred renewals
# at once took more connections than the Redis client's pool (100) holds, the failure opened
# the broker's circuit, and every socket of the worker then resynced from the database.
UPKEEP_CONCURRENCY = 16


class LiveSocket(Protocol):
    def tick(self, now: float) -> list[Awaitable[None]]:
        """Periodic work due at ``now`` (monotonic): done at once, or returned to await."""

    def stop_for_draining(self) -> None: ...


def draining() -> asyncio.Event:
    return current_app.extensions[DRAINING_KEY]  # type: ignore[no-any-return]


def refuse_when_draining() -> None:
    """Before accept: a stopping worker takes no new socket (503; the client retries)."""
    if draining().is_set():
        abort(503)


class LiveSockets:
    """The sockets of one app on this worker, with the one task that looks after them; the
    task runs only while there are sockets."""

    def __init__(self, stopping: asyncio.Event, tick_seconds: float = TICK_SECONDS) -> None:
        self.stopping = stopping
        self.tick_seconds = tick_seconds
        self.sockets: set[LiveSocket] = set()
        self.task: asyncio.Task[None] | None = None

    def add(self, socket: LiveSocket) -> None:
        self.sockets.add(socket)
        if self.stopping.is_set():
            socket.stop_for_draining()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(
                self.look_after(), name="chat-sockets"
            )

    def discard(self, socket: LiveSocket) -> None:
        self.sockets.discard(socket)

    async def look_after(self) -> None:
        drained = False
        while self.sockets:
            if drained:
                await asyncio.sleep(self.tick_seconds)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.tick_seconds):
                        await self.stopping.wait()
            if self.stopping.is_set():
                drained = True
                for socket in list(self.sockets):
                    socket.stop_for_draining()
            now = time.monotonic()
            work: list[Awaitable[None]] = []
            for socket in list(self.sockets):
                try:
                    work.extend(socket.tick(now))
                except Exception:
                    log.exception("Chat socket tick failed")
            if work:
                gate = asyncio.Semaphore(UPKEEP_CONCURRENCY)
                results = await asyncio.gather(
                    *(_bounded(gate, upkeep) for upkeep in work), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, Exception):
                        log.warning("Chat socket upkeep failed: %r", result)


async def _bounded(gate: asyncio.Semaphore, upkeep: Awaitable[None]) -> None:
    async with gate:
        await upkeep


def live_sockets() -> LiveSockets:
    sockets = current_app.extensions.get(SOCKETS_KEY)
    if sockets is None:
        settings = current_settings()
        tick = min(TICK_SECONDS, settings.chat.ping_interval, settings.chat.auth_recheck_seconds)
        sockets = current_app.extensions[SOCKETS_KEY] = LiveSockets(draining(), tick)
    return sockets  # type: ignore[no-any-return]
