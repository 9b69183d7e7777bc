"""In-process measure of ``GET /api/billing/carts/current/`` (an anonymous cart of 3 lines, by
its X-Cart-Token) on SQLite: time per request over the test client, and SQL statements per
request (counted from Tortoise's ``tortoise.db_client`` logger at DEBUG, in a separate pass so
that logging does not weigh on the timing). Also counts statements for add_item and checkout.

    PYTHONPATH=. python bench/cart_current_inprocess.py [requests]   # default 2000

No network, no load generator: a before/after figure for one view, not a throughput claim.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import tempfile
import time
from typing import Any

from slyker import create_app
from slyker.database import EXTENSION_KEY

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

    def __exit__(self, *exc: Any) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


async def main(requests: int) -> None:
    from slyker.cli import load_demo_catalog
    from slyker.services.accounts import create_user

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
            context = app.extensions[EXTENSION_KEY]
            with context:
                await context.generate_schemas(safe=True)
                await load_demo_catalog()
            client = app.test_client(use_cookies=False)
            first = await client.get(f"{CARTS}/current/")
            token = first.headers["X-Cart-Token"]
            cart_id = (await first.get_json())["id"]
            headers = {"X-Cart-Token": token}
            for line in (HOSTING, DOMAIN, SSL):
                added = await client.post(
                    f"{CARTS}/{cart_id}/add_item/", json=line, headers=headers
                )
                assert added.status_code == 201, await added.get_data()

            async def one() -> None:
                reply = await client.get(f"{CARTS}/current/", headers=headers)
                assert reply.status_code == 200
                await reply.get_data()

            with counting() as counter:
                await one()
            current_statements = counter.count
            for _ in range(200):  # warm-up
                await one()
            times = []
            cpu_start = time.process_time()
            for _ in range(requests):
                start = time.perf_counter()
                await one()
                times.append(time.perf_counter() - start)
            current_cpu = (time.process_time() - cpu_start) / requests * 1000
            health_times = []
            cpu_start = time.process_time()
            for _ in range(requests):  # the fixed cost of the stack, for reference
                start = time.perf_counter()
                reply = await client.get("/health/")
                await reply.get_data()
                health_times.append(time.perf_counter() - start)
            health_cpu = (time.process_time() - cpu_start) / requests * 1000
            with counting() as counter:
                added = await client.post(f"{CARTS}/{cart_id}/add_item/", json=SSL, headers=headers)
                assert added.status_code == 201
            add_statements = counter.count
            body = await (await client.get(f"{CARTS}/current/", headers=headers)).get_data()

            # Checkout needs a user: register one through the API, log in, fill a cart.
            with context:
                await create_user("bench@example.com", "correct horse battery", "client")
            login = await client.post(
                "/api/token/",
                json={"email": "bench@example.com", "password": "correct horse battery"},
            )
            bearer = {"Authorization": f"Bearer {(await login.get_json())['access']}"}
            own = await (await client.get(f"{CARTS}/current/", headers=bearer)).get_json()
            for line in (HOSTING, DOMAIN, SSL):
                await client.post(f"{CARTS}/{own['id']}/add_item/", json=line, headers=bearer)
            with counting() as counter:
                done = await client.post(
                    f"{CARTS}/{own['id']}/checkout/", json=CHECKOUT, headers=bearer
                )
                assert done.status_code == 201, await done.get_data()
            checkout_statements = counter.count

    mean = statistics.fmean(times) * 1000
    print(
        f"current/ (3 lines): {requests} requests, mean {mean:.3f} ms, "
        f"median {statistics.median(times) * 1000:.3f} ms, "
        f"p99 {sorted(times)[int(len(times) * 0.99)] * 1000:.3f} ms, "
        f"CPU {current_cpu:.3f} ms, {current_statements} SQL statements"
    )
    health = statistics.fmean(health_times) * 1000
    print(
        f"/health/ (reference: the stack's fixed cost): mean {health:.3f} ms, "
        f"median {statistics.median(health_times) * 1000:.3f} ms, CPU {health_cpu:.3f} ms"
    )
    print(
        f"current/ minus /health/ (the view's own cost): {mean - health:.3f} ms, "
        f"CPU {current_cpu - health_cpu:.3f} ms"
    )
    print(f"add_item (4th line): {add_statements} SQL statements")
    print(f"checkout (3 lines, bank): {checkout_statements} SQL statements")
    print(f"current/ body: {len(body)} bytes")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
