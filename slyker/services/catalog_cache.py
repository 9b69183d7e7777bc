"""The catalog lists (hosting products, domain products), cached per process.

The storefront lists the catalog on every page; the rows change only when staff edit them.
Each process keeps the serialised rows of each list and drops them when staff write a
product (:meth:`CatalogCache.invalidate`, called by every write of the catalog's API).

Staleness bound:

- in the process that made the write: none (the next list reads the database);
- in other workers, with REDIS_URL: at most :data:`VERSION_CHECK_SECONDS` (1 s). A write
  increments a version number in Redis; each process reads it at most once per second,
  when it serves a list, and drops its lists when it changed. If Redis cannot be asked,
  lists are read from the database (never cached on a version nobody checked);
- without REDIS_URL (one process): none;
- ``load-demo-catalog`` announces its write through Redis (:func:`announce_change`), so with
  REDIS_URL running workers see it within 1 s too;
- for writes that bypass the API otherwise (SQL by hand): at most :data:`MAX_AGE_SECONDS`
  (60 s), after which every list is read again anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from slyker.errors import describe_exception

log = logging.getLogger(__name__)

VERSION_KEY = "slyker:catalog:version"
VERSION_CHECK_SECONDS = 1.0
MAX_AGE_SECONDS = 60.0


class CatalogCache:
    """One per app (``app.extensions``): lists by name (``"hosting"``, ``"domains"``)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, version_key: str = VERSION_KEY
    ) -> None:
        self.clock = clock  # tests move time on instead of waiting
        self.version_key = version_key
        self._lists: dict[str, tuple[float, list[Any]]] = {}
        # Bumped by every invalidation: a list read from the database while a write
        # happened is not kept (it may hold the old rows).
        self._generation = 0
        self._version: bytes | None = None
        self._checked_at: float | None = None

    async def get(
        self, name: str, load: Callable[[], Awaitable[list[Any]]], redis: Redis | None
    ) -> list[Any]:
        """The list ``name``, from the cache or from ``load()`` (then kept)."""
        if not await self._version_current(redis):
            return await load()
        now = self.clock()
        cached = self._lists.get(name)
        if cached is not None and now - cached[0] < MAX_AGE_SECONDS:
            return cached[1]
        generation = self._generation
        items = await load()
        if generation == self._generation:
            self._lists[name] = (now, items)
        return items

    async def invalidate(self, redis: Redis | None) -> None:
        """After a write of the catalog: this process's lists now, other processes' within
        VERSION_CHECK_SECONDS (through Redis)."""
        self._drop()
        if redis is None:
            return
        try:
            self._version = str(await redis.incr(self.version_key)).encode()
            self._checked_at = self.clock()
        except RedisError as error:
            # Other workers then keep their lists up to MAX_AGE_SECONDS; the write stands.
            log.warning("Catalog cache: could not publish a change: %s", describe_exception(error))
            self._checked_at = None

    def _drop(self) -> None:
        self._lists.clear()
        self._generation += 1

    async def _version_current(self, redis: Redis | None) -> bool:
        """Whether the cached lists may be used: with Redis, once the version has been
        read in the last VERSION_CHECK_SECONDS (a new version drops them)."""
        if redis is None:
            return True
        now = self.clock()
        if self._checked_at is not None and now - self._checked_at < VERSION_CHECK_SECONDS:
            return True
        try:
            version = await redis.get(self.version_key)
        except RedisError as error:
            log.warning("Catalog cache: version unknown: %s", describe_exception(error))
            self._drop()
            self._checked_at = None
            return False
        if version != self._version:
            self._drop()
            self._version = version
        self._checked_at = now
        return True


async def announce_change(redis_url: str, version_key: str = VERSION_KEY) -> None:
    """Tell running workers that the catalog changed outside the API (a CLI command)."""
    redis = Redis.from_url(redis_url)
    try:
        await redis.incr(version_key)
    except RedisError as error:
        log.warning(
            "Catalog cache: could not announce the change (workers see it within %d s): %s",
            MAX_AGE_SECONDS,
            describe_exception(error),
        )
    finally:
        await redis.aclose()
