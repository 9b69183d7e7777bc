"""The chat's per-client limits through a Redis outage, against a private redis-server that
the test kills and starts again: while Redis cannot be asked, this worker's own counts decide
(what Redis allowed before the outage still counts), and the fallback is logged once per
outage, not once per socket or message."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from slyker.chat.broker import RedisBroker
from slyker.chat.limits import NEW_CONVERSATION_WINDOW_SECONDS
from tests.live_servers import RedisProcess

CLIENT = "198.51.100.7"
FALLBACK_LOG = "Chat limits: Redis cannot be asked"


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum(FALLBACK_LOG in record.getMessage() for record in caplog.records)


async def connected(broker: RedisBroker) -> None:
    """The broker's listener is subscribed: the circuit is closed, Redis decides."""
    await asyncio.wait_for(broker._connected.wait(), 15)


async def test_limits_hold_through_a_redis_outage_and_the_fallback_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # New conversations are counted per clock window: keep the test inside one.
    into_window = time.time() % NEW_CONVERSATION_WINDOW_SECONDS
    if into_window > NEW_CONVERSATION_WINDOW_SECONDS - 20:
        await asyncio.sleep(NEW_CONVERSATION_WINDOW_SECONDS - into_window + 0.1)
    redis = RedisProcess(tmp_path)
    redis.start()
    broker = RedisBroker(redis.url)
    await broker.start()
    try:
        await connected(broker)
        assert await broker.take_socket_slot(CLIENT, "a", 2)
        assert await broker.take_socket_slot(CLIENT, "b", 2)
        assert not await broker.take_socket_slot(CLIENT, "c", 2)  # Redis's count
        assert await broker.take_new_conversation(CLIENT, 1)
        assert fallback_warnings(caplog) == 0

        redis.kill()
        # The first call finds Redis gone; this worker's counts decide from then on.
        for _ in range(5):
            assert not await broker.take_socket_slot(CLIENT, "c", 2)
            assert not await broker.take_new_conversation(CLIENT, 1)
        await broker.release_socket_slot(CLIENT, "a")
        assert await broker.take_socket_slot(CLIENT, "c", 2)
        assert not await broker.take_socket_slot(CLIENT, "d", 2)
        assert await broker.take_socket_slot("203.0.113.9", "e", 2)  # another client's count
        assert fallback_warnings(caplog) == 1

        redis.start()  # empty (no persistence): Redis decides again, from nothing
        await connected(broker)
        assert await broker.take_socket_slot(CLIENT, "f", 1)
        assert not await broker.take_socket_slot(CLIENT, "g", 1)
        assert fallback_warnings(caplog) == 1

        redis.kill()  # a second outage is logged again, once
        for slot in ("h", "i", "j"):
            assert not await broker.take_socket_slot(CLIENT, slot, 2)  # b, c, f held here
        assert fallback_warnings(caplog) == 2
    finally:
        await broker.stop()
        redis.stop()
