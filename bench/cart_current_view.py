"""The view alone: ``GET /api/billing/carts/current/`` (3 lines, by cart token), timed around
the view function and ``make_response`` inside a prepared request context, so the middleware
stack and the before_request hooks (the fixed cost of every request) are left out.

    PYTHONPATH=. python bench/cart_current_view.py [requests]   # default 2000
"""

import asyncio
import statistics
import sys
import tempfile
import time

from slyker import create_app
from slyker.database import EXTENSION_KEY

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


async def main(n):
    from slyker.cli import load_demo_catalog

    with tempfile.TemporaryDirectory() as data:
        app = create_app(
            {
                "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
                "ALLOWED_HOSTS": "localhost",
                "DATA_DIR": data,
            }
        )
        async with app.test_app():
            ctx = app.extensions[EXTENSION_KEY]
            with ctx:
                await ctx.generate_schemas(safe=True)
                await load_demo_catalog()
            client = app.test_client(use_cookies=False)
            first = await client.get("/api/billing/carts/current/")
            token = first.headers["X-Cart-Token"]
            cart_id = (await first.get_json())["id"]
            h = {"X-Cart-Token": token}
            for line in (HOSTING, DOMAIN, SSL):
                await client.post(f"/api/billing/carts/{cart_id}/add_item/", json=line, headers=h)
            view = app.view_functions["carts.current_cart"]
            with ctx:
                samples_cpu, samples_wall = [], []
                for i in range(n + 300):
                    async with app.test_request_context("/api/billing/carts/current/", headers=h):
                        await app.preprocess_request()
                        c0, w0 = time.process_time(), time.perf_counter()
                        rv = await view()
                        resp = await app.make_response(rv)
                        await resp.get_data()
                        c1, w1 = time.process_time(), time.perf_counter()
                        assert resp.status_code == 200
                    if i >= 300:
                        samples_cpu.append(c1 - c0)
                        samples_wall.append(w1 - w0)
            cpu = statistics.fmean(samples_cpu) * 1e3
            median = statistics.median(samples_wall) * 1e3
            mean = statistics.fmean(samples_wall) * 1e3
            print(
                f"view+make_response: CPU mean {cpu:.3f} ms, "
                f"wall median {median:.3f} ms, wall mean {mean:.3f} ms"
            )


asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
