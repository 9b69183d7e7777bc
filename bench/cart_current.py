"""In-process measures of ``GET /api/billing/carts/current/`` (an anonymous cart of 3 lines:
hosting, domain, SSL; by its X-Cart-Token) on SQLite. No network, no load generator:
before/after figures for one view, not throughput claims (``python -m bench.run`` is that).

    PYTHONPATH=. python -m bench.cart_current stack [--requests N]   # default 2000
    PYTHONPATH=. python -m bench.cart_current view [--requests N]

``stack``: time and CPU per request over the test client, so through the whole stack, next to
``/health/`` (the stack's fixed cost) to show the view's own share; SQL statements per request
(counted from Tortoise's ``tortoise.db_client`` logger at DEBUG, in a separate pass so that
logging does not weigh on the timing), and for add_item and checkout.

``view``: the view function and ``make_response`` alone, timed inside a prepared request
context, so the middleware stack and the before_request hooks (the fixed cost of every
request) are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from quart import Quart
from quart.testing import QuartClient
from tortoise.context import TortoiseContext

from slyker import create_app
from slyker.database import EXTENSION_KEY
from slyker.services.accounts import create_user
from slyker.services.demo_catalog import load_demo_catalog

CARTS = "/api/billing/carts"
HOSTING = {
    "hosting_product": 1,
    "billing_cycle": "annual",
    "quantity": 1,
    "service_metadata": {"type": "shared"},
}
DOMAIN = {
    "domain_product": 1,
    "billing_cycle": "1yr",
    "quantity": 1,
    "service_metadata": {"action": "registration", "domain_name": "bench.com"},
}
SSL = {"service": 1, "quantity": 2}
CHECKOUT = {
    "billing_info": {"full_name": "Bench", "email": "bench@example.com"},
    "payment_method": "bank",
}
WARM_UP_REQUESTS = 300


class StatementCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


class counting:
    """Counts SQL statements sent while the block runs."""

    def __enter__(self) -> StatementCounter:
        self.logger = logging.getLogger("tortoise.db_client")
        self.level = self.logger.level
        self.handler = StatementCounter()
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        return self.handler

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


@dataclass
class SeededCart:
    """A served app on a fresh SQLite database with the demo catalog, and one anonymous cart
    of 3 lines."""

    app: Quart
    database: TortoiseContext
    client: QuartClient
    cart_id: int
    headers: dict[str, str]  # the cart token, as the storefront sends it back


@asynccontextmanager
async def seeded_cart() -> AsyncIterator[SeededCart]:
    with tempfile.TemporaryDirectory() as data:
        app = create_app(
            {
                "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
                "ALLOWED_HOSTS": "localhost",
                "DATA_DIR": data,
                "CART_CREATIONS_PER_MINUTE": "1000000",
                "CART_WRITES_PER_MINUTE": "1000000",
            }
        )
        async with app.test_app():
            database: TortoiseContext = app.extensions[EXTENSION_KEY]
            with database:
                await database.generate_schemas(safe=True)
                await load_demo_catalog()
            client = app.test_client(use_cookies=False)
            first = await client.get(f"{CARTS}/current/")
            cart_id = (await first.get_json())["id"]
            headers = {"X-Cart-Token": first.headers["X-Cart-Token"]}
            for line in (HOSTING, DOMAIN, SSL):
                added = await client.post(
                    f"{CARTS}/{cart_id}/add_item/", json=line, headers=headers
                )
                assert added.status_code == 201, await added.get_data()
            yield SeededCart(app, database, client, cart_id, headers)


def _ms(seconds: float) -> float:
    return seconds * 1000


async def measure_stack(requests: int) -> None:
    async with seeded_cart() as seeded:
        client, headers = seeded.client, seeded.headers

        async def one() -> None:
            reply = await client.get(f"{CARTS}/current/", headers=headers)
            assert reply.status_code == 200
            await reply.get_data()

        with counting() as counter:
            await one()
        current_statements = counter.count
        for _ in range(WARM_UP_REQUESTS):
            await one()
        times = []
        cpu_start = time.process_time()
        for _ in range(requests):
            start = time.perf_counter()
            await one()
            times.append(time.perf_counter() - start)
        current_cpu = _ms(time.process_time() - cpu_start) / requests
        health_times = []
        cpu_start = time.process_time()
        for _ in range(requests):  # the fixed cost of the stack, for reference
            start = time.perf_counter()
            reply = await client.get("/health/")
            await reply.get_data()
            health_times.append(time.perf_counter() - start)
        health_cpu = _ms(time.process_time() - cpu_start) / requests
        with counting() as counter:
            added = await client.post(
                f"{CARTS}/{seeded.cart_id}/add_item/", json=SSL, headers=headers
            )
            assert added.status_code == 201
        add_statements = counter.count
        body = await (await client.get(f"{CARTS}/current/", headers=headers)).get_data()
        checkout_statements = await _checkout_statements(seeded)

    mean = _ms(statistics.fmean(times))
    print(
        f"current/ (3 lines): {requests} requests, mean {mean:.3f} ms, "
        f"median {_ms(statistics.median(times)):.3f} ms, "
        f"p99 {_ms(sorted(times)[int(len(times) * 0.99)]):.3f} ms, "
        f"CPU {current_cpu:.3f} ms, {current_statements} SQL statements"
    )
    health = _ms(statistics.fmean(health_times))
    print(
        f"/health/ (reference: the stack's fixed cost): mean {health:.3f} ms, "
        f"median {_ms(statistics.median(health_times)):.3f} ms, CPU {health_cpu:.3f} ms"
    )
    print(
        f"current/ minus /health/ (the view's own cost): {mean - health:.3f} ms, "
        f"CPU {current_cpu - health_cpu:.3f} ms"
    )
    print(f"add_item (4th line): {add_statements} SQL statements")
    print(f"checkout (3 lines, bank): {checkout_statements} SQL statements")
    print(f"current/ body: {len(body)} bytes")


async def _checkout_statements(seeded: SeededCart) -> int:
    """Statements of one checkout of 3 lines by a signed-in client."""
    client = seeded.client
    with seeded.database:
        await create_user("bench@example.com", "correct horse battery", "client")
    login = await client.post(
        "/api/token/", json={"email": "bench@example.com", "password": "correct horse battery"}
    )
    bearer = {"Authorization": f"Bearer {(await login.get_json())['access']}"}
    own = await (await client.get(f"{CARTS}/current/", headers=bearer)).get_json()
    for line in (HOSTING, DOMAIN, SSL):
        await client.post(f"{CARTS}/{own['id']}/add_item/", json=line, headers=bearer)
    with counting() as counter:
        done = await client.post(f"{CARTS}/{own['id']}/checkout/", json=CHECKOUT, headers=bearer)
        assert done.status_code == 201, await done.get_data()
    return counter.count


async def measure_view(requests: int) -> None:
    async with seeded_cart() as seeded:
        app = seeded.app
        view = app.view_functions["carts.current_cart"]
        cpu_samples: list[float] = []
        wall_samples: list[float] = []
        with seeded.database:
            for number in range(requests + WARM_UP_REQUESTS):
                async with app.test_request_context(f"{CARTS}/current/", headers=seeded.headers):
                    await app.preprocess_request()
                    cpu_start, wall_start = time.process_time(), time.perf_counter()
                    response = await app.make_response(await view())
                    await response.get_data()
                    cpu_end, wall_end = time.process_time(), time.perf_counter()
                    assert response.status_code == 200
                if number >= WARM_UP_REQUESTS:
                    cpu_samples.append(cpu_end - cpu_start)
                    wall_samples.append(wall_end - wall_start)
    print(
        f"view+make_response: CPU mean {_ms(statistics.fmean(cpu_samples)):.3f} ms, "
        f"wall median {_ms(statistics.median(wall_samples)):.3f} ms, "
        f"wall mean {_ms(statistics.fmean(wall_samples)):.3f} ms"
    )


MODES: dict[str, Callable[[int], Awaitable[None]]] = {"stack": measure_stack, "view": measure_view}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "mode", choices=sorted(MODES), help="stack: the whole request; view: the view alone"
    )
    parser.add_argument("--requests", type=int, default=2000, help="timed requests (2000)")
    args = parser.parse_args(argv)
    asyncio.run(MODES[args.mode](args.requests))


if __name__ == "__main__":
    main()
