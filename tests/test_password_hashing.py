"""Argon2 runs off the event loop, in a bounded pool (slyker/auth.py PasswordHashing).

Hashing on the event loop cost 114 ms per login, during which the worker answered nothing
else: ten concurrent logins held every other request of the worker for up to 570 ms. These
tests use the production Argon2 parameters.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from typing import Any

import pytest

from slyker import auth
from tests.api import API, FRONTEND_ORIGIN, PASSWORD, Reply, make_user
from tests.blueprints.test_accounts import post_from
from tests.conftest import prepare_database

TOKEN = "/api/token/"
EMAIL = "hasher@example.com"

pytestmark = pytest.mark.production_password_hashing


def address(number: int) -> str:
    # One address per login: the login rate limit (10 a minute per address) stays out of it.
    return f"198.19.{number // 250}.{number % 250 + 1}"


async def max_loop_stall(work: Any, tick: float = 0.005) -> float:
    """The longest the event loop was late for a ``tick``-second sleep while ``work`` ran."""
    stall = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal stall
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(tick)
            stall = max(stall, time.perf_counter() - started - tick)

    ticking = asyncio.ensure_future(ticker())
    try:
        await work
    finally:
        done.set()
        await ticking
    return stall


async def test_concurrent_logins_leave_the_event_loop_free(app_factory: Any) -> None:
    hashed = auth._password_hasher.hash(PASSWORD)
    started = time.perf_counter()
    auth._password_hasher.verify(hashed, PASSWORD)
    one_verify = time.perf_counter() - started  # ~0.1 s; slower on a loaded machine

    app = app_factory()
    async with app.test_app():
        await prepare_database(app)
        await make_user(app, EMAIL)
        api = API(app)
        body = {"email": EMAIL, "password": PASSWORD}
        stalls = []
        # A loaded 2-core machine can pause any process now and then: the best of three
        # rounds. On the event loop, every round stalls for at least one whole verify.
        for round_number in range(3):
            logins = asyncio.gather(
                *(post_from(api, TOKEN, body, address(100 * round_number + n)) for n in range(10))
            )
            stalls.append(await max_loop_stall(logins))
            replies: list[Reply] = logins.result()
            assert [reply.status for reply in replies] == [200] * 10
    assert min(stalls) < one_verify / 2, (stalls, one_verify)


async def test_too_many_waiting_hashes_answer_503_with_retry_after(app_factory: Any) -> None:
    app = app_factory(PASSWORD_HASH_THREADS=1, PASSWORD_HASH_MAX_WAITING=1)
    async with app.test_app():
        await prepare_database(app)
        await make_user(app, EMAIL)
        api = API(app)
        body = {"email": EMAIL, "password": PASSWORD}
        replies = await asyncio.gather(
            *(post_from(api, TOKEN, body, address(n)) for n in range(12))
        )
        counts = Counter(reply.status for reply in replies)
        assert set(counts) == {200, 503} and counts[200] >= 2, counts
        for reply in replies:
            assert reply.headers.getlist("Access-Control-Allow-Origin") == [FRONTEND_ORIGIN]
            if reply.status == 503:
                assert reply.body["code"] == "unavailable", reply.body
                assert reply.headers["Retry-After"] == "2"
        # Once the burst has passed, logins are answered again.
        after = await post_from(api, TOKEN, body, address(50 + secrets.randbelow(100)))
        assert after.status == 200, after.body
        assert app.extensions[auth.HASHING_KEY].in_use == 0
