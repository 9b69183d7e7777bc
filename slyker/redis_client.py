"""The optional Redis connection (REDIS_URL): chat fan-out and shared rate limits use it."""

from __future__ import annotations

import asyncio

from quart import Quart, current_app
from redis.asyncio import Redis

EXTENSION_KEY = "slyker.redis"
PING_TIMEOUT_SECONDS = 2.0


def init_redis(app: Quart, url: str | None) -> None:
    app.extensions[EXTENSION_KEY] = None
    if url is None:
        return

    @app.before_serving
    async def connect_redis() -> None:
        app.extensions[EXTENSION_KEY] = Redis.from_url(
            url, socket_connect_timeout=PING_TIMEOUT_SECONDS, socket_timeout=PING_TIMEOUT_SECONDS
        )

    @app.after_serving
    async def close_redis() -> None:
        client = app.extensions.get(EXTENSION_KEY)
        if client is not None:
            await client.aclose()


def current_redis() -> Redis | None:
    return current_app.extensions.get(EXTENSION_KEY)  # type: ignore[no-any-return]


async def redis_is_ready() -> bool | None:
    """None when Redis is not configured, else whether it answers PING in time."""
    client = current_redis()
    if client is None:
        return None
    return bool(await asyncio.wait_for(client.ping(), PING_TIMEOUT_SECONDS))
