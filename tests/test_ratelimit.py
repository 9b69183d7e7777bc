"""Rate limits under concurrency and while Redis is away (slyker/ratelimit.py).

quart-rate-limiter checked and counted a request in separate steps with awaits between them:
30 logins sent at once against 10 a minute all got through (30 x 401, no 429), and with
Redis gone every limited route answered 500. Redis here is a private redis-server the test
starts and kills (tests/live_servers.py), never a stand-in.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from slyker import ratelimit
from tests.api import API, FRONTEND_ORIGIN, Reply, make_user
from tests.blueprints.test_accounts import post_from
from tests.conftest import REDIS_URL, prepare_database
from tests.live_servers import RedisProcess

TOKEN = "/api/token/"
REGISTER = "/api/accounts/register/"
EMAIL = "limits@example.com"

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")


def fresh_address() -> str:
    """A client address of this run only (Redis outlives test runs)."""
    return f"198.18.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def limiter_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The rate limiter's own log records (the chat broker reports Redis outages too)."""
    return [record for record in caplog.records if record.name == "slyker.ratelimit"]


def statuses(replies: list[Reply]) -> Counter[int]:
    return Counter(reply.status for reply in replies)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
async def test_concurrent_logins_get_exactly_the_allowance(app_factory: Any, shared: bool) -> None:
    app = app_factory(**({"REDIS_URL": REDIS_URL} if shared else {}))
    async with app.test_app():
        await prepare_database(app)
        await make_user(app, EMAIL)
        address, api = fresh_address(), API(app)
        wrong = {"email": EMAIL, "password": "a wrong guess"}
        replies = await asyncio.gather(*(post_from(api, TOKEN, wrong, address) for _ in range(30)))
    counts = statuses(replies)
    assert counts == {401: 10, 429: 20}, counts
    for reply in replies:
        assert reply.headers.getlist("Access-Control-Allow-Origin") == [FRONTEND_ORIGIN]
        if reply.status == 429:
            assert 1 <= int(reply.headers["Retry-After"]) <= 60


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
async def test_concurrent_registrations_get_exactly_the_allowance(
    app_factory: Any, shared: bool
) -> None:
    app = app_factory(**({"REDIS_URL": REDIS_URL} if shared else {}))
    async with app.test_app():
        await prepare_database(app)
        address, api = fresh_address(), API(app)
        body = {"password": "a long password"}
        bodies = [{**body, "email": f"new{n}@example.com"} for n in range(30)]
        replies = await asyncio.gather(*(post_from(api, REGISTER, b, address) for b in bodies))
    assert statuses(replies) == {201: 5, 429: 25}


async def test_two_workers_share_one_allowance_at_once(app_factory: Any) -> None:
    """Two app instances (two workers) and 30 concurrent logins: 10 in total, not per worker."""
    first, second = app_factory(REDIS_URL=REDIS_URL), app_factory(REDIS_URL=REDIS_URL)
    async with first.test_app(), second.test_app():
        await prepare_database(first)
        address, apis = fresh_address(), [API(first), API(second)]
        bad = {"email": EMAIL}  # no password: a cheap 400 that still counts
        replies = await asyncio.gather(
            *(post_from(apis[n % 2], TOKEN, bad, address) for n in range(30))
        )
    assert statuses(replies) == {400: 10, 429: 20}


async def test_without_redis_limits_hold_per_process_and_recover(
    app_factory: Any,
    redis_server: RedisProcess,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ratelimit.FallbackStore, "RETRY_INTERVAL", 0.2)
    caplog.set_level(logging.WARNING, logger="slyker.ratelimit")
    app = app_factory(REDIS_URL=redis_server.url)
    bad = {"email": EMAIL}
    async with app.test_app():
        await prepare_database(app)
        api = API(app)
        before = await post_from(api, TOKEN, bad, fresh_address())
        assert before.status == 400, before.body

        redis_server.kill()
        address = fresh_address()
        during = [await post_from(api, TOKEN, bad, address) for _ in range(12)]
        # The per-process allowance: 10, then 429 with Retry-After; never a 500.
        assert [reply.status for reply in during] == [400] * 10 + [429] * 2
        assert 1 <= int(during[-1].headers["Retry-After"]) <= 60
        await asyncio.sleep(0.3)  # past the retry interval: Redis is tried (and refused) again
        again = await post_from(api, TOKEN, bad, address)
        assert again.status == 429, again.body
        went_away = [r for r in limiter_records(caplog) if "Redis unavailable" in r.getMessage()]
        assert len(went_away) == 1, [r.getMessage() for r in caplog.records]
        assert went_away[0].levelno == logging.WARNING

        redis_server.start()  # the same port: the clients' pooled connections are dead
        await asyncio.sleep(0.3)
        shared_address = fresh_address()
        after = [await post_from(api, TOKEN, bad, shared_address) for _ in range(10)]
        assert [reply.status for reply in after] == [400] * 10
        back = [r for r in limiter_records(caplog) if "Redis is back" in r.getMessage()]
        assert len(back) == 1, [r.getMessage() for r in caplog.records]

        # Counting is shared again: another worker sees this address's allowance used up.
        other = app_factory(REDIS_URL=redis_server.url)
        async with other.test_app():
            limited = await post_from(API(other), TOKEN, bad, shared_address)
        assert limited.status == 429, limited.body
