from __future__ import annotations

import logging
import socket

import pytest
from quart import Quart

from tests.conftest import POSTGRES_URL, REDIS_URL

ORIGIN = "http://localhost:3000"


async def test_health_says_healthy_and_nothing_else(app: Quart) -> None:
    response = await app.test_client().get("/health/", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert await response.get_json() == {"status": "healthy", "service": "slyker-api"}
    assert response.headers.getlist("Access-Control-Allow-Origin") == [ORIGIN]


async def test_ready_on_embedded_defaults(app: Quart) -> None:
    response = await app.test_client().get("/ready/")
    assert response.status_code == 200
    assert await response.get_json() == {
        "status": "ready",
        "checks": {"database": True, "redis": None},
    }


async def test_ready_with_real_redis_and_postgresql(app_factory) -> None:  # type: ignore[no-untyped-def]
    app = app_factory(DATABASE_URL=POSTGRES_URL, REDIS_URL=REDIS_URL)
    async with app.test_app():
        response = await app.test_client().get("/ready/")
    assert response.status_code == 200
    assert await response.get_json() == {
        "status": "ready",
        "checks": {"database": True, "redis": True},
    }


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_ready_names_the_failing_check_without_exception_text(
    app_factory, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    app = app_factory(REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0")
    with caplog.at_level(logging.WARNING, logger="slyker"):
        async with app.test_app():
            response = await app.test_client().get("/ready/", headers={"Origin": ORIGIN})
    assert response.status_code == 503
    assert await response.get_json() == {
        "status": "not_ready",
        "checks": {"database": True, "redis": False},
    }
    assert response.headers.getlist("Access-Control-Allow-Origin") == [ORIGIN]
    assert "Readiness check redis failed" in caplog.text


async def test_a_timed_out_check_that_fails_late_leaves_no_unretrieved_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A probe that turns its cancellation into an error (as asyncpg's pool release does
    while PostgreSQL is paused) must not reach asyncio's "exception was never retrieved"."""
    import asyncio
    import gc

    from slyker.blueprints import health

    monkeypatch.setattr(health, "READY_CHECK_TIMEOUT", 0.01)
    unhandled: list[dict] = []  # type: ignore[type-arg]
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    try:

        async def stuck_then_failing() -> bool:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise TimeoutError from None
            return True

        assert await health._check("database", stuck_then_failing) is False
        await asyncio.sleep(0.05)  # the probe's task ends, with its TimeoutError
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert unhandled == []
