"""Outages of the database and Redis against the production shape: ``python -m slyker serve``
with 2 workers, a private PostgreSQL cluster and a private redis-server, both started here.

PostgreSQL is paused with SIGSTOP (every process of the cluster: a hung host, disk or
network), Redis is killed and restarted on the same port. Before: with PostgreSQL paused
requests waited 27 s and more, ``/ready/`` never answered and ``/health/`` stayed 200; with
Redis gone every rate-limited route answered 500, and after its restart the first login of
each worker did too. Each test prints its numbers (``-s``): requests sent, failed, time to
recover.
"""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.live_servers import (
    HOST,
    Hypercorn,
    LiveServer,
    PostgresProcess,
    RedisProcess,
    migrate,
    postgres_bin_dir,
    slyker_env,
    start_hypercorn,
)

ORIGIN = "http://localhost:3000"
PRODUCTS = "/api/services/hosting-products/"  # served from the per-process catalog cache
# A public read that always goes to the database (the catalog lists may come from the cache).
PROMOTIONS = "/api/billing/promotions/active/"
TOKEN = "/api/token/"
# The server's bounds for this test (seconds): a request waits at most about connect or pool
# (1) + statement (2) + release (1); 10 s leaves room for a loaded 2-core machine.
TIMEOUTS = {"DATABASE_CONNECT_TIMEOUT": "1", "DATABASE_QUERY_TIMEOUT": "2"}
TIMEOUTS["DATABASE_POOL_TIMEOUT"] = "1"
ANSWER_WITHIN = 10.0
READY_WITHIN = 4.0  # /ready/ gives each check 2 s
RECOVER_WITHIN = 20.0

pytestmark = pytest.mark.skipif(postgres_bin_dir() is None, reason="needs PostgreSQL binaries")


@dataclass
class Answer:
    path: str
    status: int  # 0: no answer (connection failed or timed out)
    seconds: float
    headers: dict[str, str]
    body: Any


def call(
    server: LiveServer, method: str, path: str, body: Any = None, timeout: float = 30.0
) -> Answer:
    """One request on a fresh connection (so the kernel spreads them over the workers)."""
    headers = {"Origin": ORIGIN}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    started = time.monotonic()
    connection = http.client.HTTPConnection(HOST, server.port, timeout=timeout)
    try:
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        status, found = response.status, {k.lower(): v for k, v in response.getheaders()}
    except (OSError, http.client.HTTPException) as error:
        return Answer(path, 0, time.monotonic() - started, {}, repr(error))
    finally:
        connection.close()
    try:
        decoded = json.loads(raw)
    except ValueError:
        decoded = raw
    return Answer(path, status, time.monotonic() - started, found, decoded)


def at_once(server: LiveServer, requests: list[tuple[str, str, Any]]) -> list[Answer]:
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(call, server, method, path, body) for method, path, body in requests]
        return [future.result() for future in futures]


def wait_until(server: LiveServer, path: str, status: int, within: float) -> float | None:
    """Seconds until 10 concurrent requests for ``path`` (so: both workers) all answer
    ``status``, polling; None if they did not in time."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if {a.status for a in at_once(server, [("GET", path, None)] * 10)} == {status}:
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def report(what: str, answers: list[Answer], recovered: float | None) -> None:
    failed = [a for a in answers if a.status == 0 or a.status == 500]
    slowest = max(a.seconds for a in answers)
    print(
        f"\n{what}: sent {len(answers)}, statuses {dict(Counter(a.status for a in answers))}, "
        f"failed (500 or no answer) {len(failed)}, slowest {slowest:.2f} s, "
        f"recovered in {recovered if recovered is None else round(recovered, 2)} s"
    )


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresProcess]:
    cluster = PostgresProcess()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(
    postgres: PostgresProcess, redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    env = slyker_env(DATABASE_URL=postgres.url, REDIS_URL=redis_server.url, **TIMEOUTS)
    migrate(env)
    logs: Path = tmp_path_factory.mktemp("served")
    server = start_hypercorn(Hypercorn("outages", env, supervised=True, workers=2), logs)
    try:
        yield server
    finally:
        server.stop()


def assert_unavailable(answer: Answer, log: str) -> None:
    assert answer.status == 503, f"{answer}\n{log}"
    assert answer.body["code"] == "unavailable", answer.body
    assert "database" in answer.body["error"], answer.body
    assert answer.headers.get("retry-after") == "5", answer.headers
    assert answer.headers.get("access-control-allow-origin") == ORIGIN, answer.headers
    assert answer.seconds < ANSWER_WITHIN, f"{answer.seconds:.2f} s"


def test_a_paused_database_answers_503_in_bounded_time_and_recovers(
    served: LiveServer, postgres: PostgresProcess
) -> None:
    warm = at_once(served, [("GET", PROMOTIONS, None)] * 10 + [("GET", PRODUCTS, None)] * 10)
    assert {a.status for a in warm} == {200}, [a.body for a in warm]

    postgres.pause()
    try:
        answers = at_once(
            served,
            [("GET", PROMOTIONS, None)] * 20
            + [("GET", PRODUCTS, None)] * 4
            + [("GET", "/ready/", None), ("GET", "/health/", None)],
        )
        # A second wave: the pool's connections are now stuck or being cancelled.
        answers += at_once(served, [("GET", PROMOTIONS, None)] * 10)
    finally:
        postgres.resume()
    recovered = wait_until(served, PROMOTIONS, 200, RECOVER_WITHIN)
    report("PostgreSQL paused", answers, recovered)

    log = served.log(6000)
    ready = next(a for a in answers if a.path == "/ready/")
    health = next(a for a in answers if a.path == "/health/")
    assert ready.status == 503 and ready.seconds < READY_WITHIN, f"{ready}\n{log}"
    assert ready.body["checks"]["database"] is False, ready.body
    assert ready.body["checks"]["redis"] is True, ready.body
    # Liveness: the process still answers (restarting it would not bring the database back).
    assert health.status == 200 and health.seconds < READY_WITHIN, health
    for answer in answers:
        if answer.path == PROMOTIONS:
            assert_unavailable(answer, log)
        elif answer.path == PRODUCTS and answer.status != 200:
            # A worker whose catalog cache the warm-up filled answers from it; another one
            # reads the database and must say it is unavailable like any other read.
            assert_unavailable(answer, log)
    assert recovered is not None, f"not serving {RECOVER_WITHIN} s after the resume\n{log}"
    after = at_once(
        served,
        [("GET", PROMOTIONS, None)] * 10
        + [("GET", PRODUCTS, None)] * 5
        + [("GET", "/ready/", None)],
    )
    assert {a.status for a in after} == {200}, [a.body for a in after]
    # An outage is one WARNING line per request, not a traceback.
    assert "Traceback" not in served.log(200_000), log


def test_redis_killed_and_restarted_never_answers_500(
    served: LiveServer, redis_server: RedisProcess
) -> None:
    bad_login = {"email": "nobody@example.com"}  # a cheap 400 that counts against the limit
    redis_server.kill()
    try:
        ready = call(served, "GET", "/ready/")
        during = [call(served, "POST", TOKEN, bad_login) for _ in range(30)]
        products = call(served, "GET", PRODUCTS)
    finally:
        redis_server.start()
    recovered = wait_until(served, "/ready/", 200, RECOVER_WITHIN)
    # Right after the restart, then past the store's retry interval (5 s): each worker's
    # pooled Redis connections are dead, and none of this may be a 500.
    after = [call(served, "POST", TOKEN, bad_login) for _ in range(10)]
    time.sleep(5.5)
    after += [call(served, "POST", TOKEN, bad_login) for _ in range(10)]
    report("Redis killed", [ready, *during, products], None)
    report("Redis restarted", after, recovered)

    log = served.log(6000)
    assert ready.status == 503 and ready.body["checks"]["redis"] is False, f"{ready}\n{log}"
    assert products.status == 200, products.body  # the database needs no Redis
    statuses = Counter(answer.status for answer in during)
    # Per process while Redis is away: each of the 2 workers lets 10 through.
    assert set(statuses) <= {400, 429} and 10 <= statuses[400] <= 20, statuses
    for answer in during + after:
        assert answer.status in (400, 429), f"{answer}\n{log}"
        assert answer.headers.get("access-control-allow-origin") == ORIGIN
    assert recovered is not None, log
    assert log.count("Rate limits: Redis unavailable") <= 2, log  # once per worker
