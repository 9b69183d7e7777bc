"""Tortoise's asyncpg client with every wait bounded (a Tortoise engine module).

With PostgreSQL paused (SIGSTOP, a stuck disk, a network partition) Tortoise's client waited
forever at three places: opening a connection, running a statement and waiting for a pooled
connection (once every pooled connection was stuck). Requests then hung for as long as the
client would wait (27 s and more) and ``/ready/`` never answered. Here:

* opening a connection is bounded by ``timeout`` (``DATABASE_CONNECT_TIMEOUT``, asyncpg's
  connect timeout);
* a statement by ``command_timeout`` on the client (``DATABASE_QUERY_TIMEOUT``), and by the
  server's ``statement_timeout`` (the same value), which also stops a slow query server-side;
* waiting for a pooled connection (and for its release, which may wait for a cancelled
  statement) by ``pool_timeout`` (``DATABASE_POOL_TIMEOUT``), through :class:`TimedPool`;
* while opening the pool keeps failing, other requests fail at once instead of queueing
  behind each other's connect timeout (:attr:`PostgresClient.RETRY_INTERVAL`).

Each of these raises (``TimeoutError``, asyncpg's connection errors, Tortoise's
``DBConnectionError``), and :mod:`slyker.errors` maps them, in one place, to 503 with
``Retry-After``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg
from tortoise.backends.asyncpg.client import AsyncpgDBClient
from tortoise.exceptions import DBConnectionError

ENGINE = __name__  # the ``engine`` of a Tortoise connection config


class _OneLine(logging.Filter):
    """asyncpg's pool logs a traceback each time it fails to reconnect its minimum size
    (backing off up to a minute); an outage is one line each time, the cause included."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record.args = ()
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_OneLine())


class TimedPool:
    """An asyncpg pool whose ``acquire`` (and so, by asyncpg's default, ``release``) waits
    at most ``timeout`` seconds; everything else is the pool's own."""

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self._pool = pool
        self.timeout = timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return self._pool.acquire(timeout=self.timeout if timeout is None else timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class PostgresClient(AsyncpgDBClient):
    """Tortoise's asyncpg client; ``pool_timeout`` bounds waiting for a pooled connection."""

    RETRY_INTERVAL = 1.0  # seconds after a failed pool opening in which others fail at once

    def __init__(self, *, pool_timeout: float = 5.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_timeout = float(pool_timeout)
        self._failed_at: float | None = None
        self._failure: BaseException | None = None

    async def create_pool(self, **kwargs: Any) -> TimedPool:  # type: ignore[override]
        return TimedPool(await asyncpg.create_pool(None, **kwargs), self.pool_timeout)

    async def create_connection(self, with_db: bool) -> None:
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() - failed_at < self.RETRY_INTERVAL:
            raise DBConnectionError("PostgreSQL unavailable (the last attempt failed)") from (
                self._failure
            )
        try:
            await super().create_connection(with_db)
        except Exception as error:
            self._failed_at, self._failure = time.monotonic(), error
            raise
        self._failed_at = self._failure = None


client_class = PostgresClient


def connection_config(
    credentials: dict[str, Any],
    *,
    connect_timeout: float,
    query_timeout: float,
    pool_timeout: float,
    pool_min: int,
    pool_max: int,
) -> dict[str, Any]:
    """A Tortoise connection config for this engine from ``expand_db_url``'s credentials
    (options in the URL's query string, as Tortoise reads them, win over the settings)."""
    options = dict(credentials)
    server_settings = dict(options.pop("server_settings", None) or {})
    server_settings.setdefault("statement_timeout", str(int(query_timeout * 1000)))
    options.setdefault("timeout", connect_timeout)
    options.setdefault("command_timeout", query_timeout)
    options.setdefault("minsize", pool_min)
    options.setdefault("maxsize", pool_max)
    options.setdefault("pool_timeout", pool_timeout)
    options["server_settings"] = server_settings
    return {"engine": ENGINE, "credentials": options}
