"""SQLite with 2 workers (``python -m slyker serve --workers 2``): concurrent writes from both
workers wait for SQLite's write lock instead of failing.

Before, a transaction began with a plain ``BEGIN``, read, then upgraded to writing; an upgrade
after the other worker had written failed at once with "database is locked" (a 500). Now
transactions begin with ``BEGIN IMMEDIATE`` (slyker/sqlite.py) and wait up to the busy timeout.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.live_servers import (
    APP_PATH,
    Hypercorn,
    LiveServer,
    migrate,
    run_command,
    slyker_env,
    start_hypercorn,
    venv_tool,
)

ORIGIN = "http://localhost:3000"
CARTS = "/api/billing/carts"
HOSTING = {"hosting_product": 1, "quantity": 1, "billing_cycle": "annual"}  # demo catalog


@pytest.fixture(scope="module")
def served() -> Iterator[LiveServer]:
    root = Path(tempfile.mkdtemp(prefix="slyker-sqlite-workers-"))
    # 21 new anonymous carts from one address in this test: above the default creation limit.
    env = slyker_env(DATA_DIR=str(root / "data"), CART_CREATIONS_PER_MINUTE="100")
    migrate(env)
    run_command([*venv_tool("quart", "quart"), "--app", APP_PATH, "load-demo-catalog"], env)
    server = start_hypercorn(Hypercorn("sqlite2", env, supervised=True, workers=2), root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def cart_call(
    server: LiveServer, path: str, token: str | None, body: Mapping[str, Any] | None = None
) -> tuple[int, Any]:
    """One cart request on a fresh connection (the kernel spreads them over both workers)."""
    headers = {"Origin": ORIGIN}
    if token is not None:
        headers["X-Cart-Token"] = token
    return server.request("POST" if body else "GET", path, body, headers=headers)


def new_cart(server: LiveServer) -> tuple[int, str]:
    """A new anonymous cart: its id and the cart token slyker issued for it."""
    connection = server.connect()
    try:
        connection.request("GET", f"{CARTS}/current/", headers={"Origin": ORIGIN})
        response = connection.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        return int(body["id"]), str(response.getheader("X-Cart-Token"))
    finally:
        connection.close()


def test_two_workers_write_concurrently_without_database_is_locked(served: LiveServer) -> None:
    cart_id, token = new_cart(served)
    # 60 writes at once over both workers: 40 lines into one cart, and 20 new carts.
    calls = [(f"{CARTS}/{cart_id}/add_item/", token, HOSTING) for _ in range(40)]
    calls += [(f"{CARTS}/current/", None, None) for _ in range(20)]
    with ThreadPoolExecutor(len(calls)) as pool:
        answers = list(pool.map(lambda call: cart_call(served, *call), calls))
    counts = Counter(status for status, _body in answers)
    assert counts == {201: 40, 200: 20}, (counts, served.log(4000))
    status, final = cart_call(served, f"{CARTS}/current/", token)
    assert (status, final["item_count"]) == (200, 40), final
    log = served.log(500_000)
    assert "database is locked" not in log and " ERROR " not in log, log[-4000:]
