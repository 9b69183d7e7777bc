"""The catalog lists are cached per process: a repeated list does not read the products
again, a staff write is visible on the next list in the same process, and with Redis in
another worker (a second app on the same database and Redis) within VERSION_CHECK_SECONDS.
Time is moved on with the cache's clock, never waited for."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from quart import Quart

from slyker.blueprints.billing.catalog import CACHE_KEY
from slyker.models.accounts import Role
from slyker.models.billing import HostingProduct
from slyker.redis_client import EXTENSION_KEY as REDIS_KEY
from slyker.services.catalog_cache import (
    MAX_AGE_SECONDS,
    VERSION_CHECK_SECONDS,
    CatalogCache,
    announce_change,
)
from tests.api import API, db, make_user, seed_catalog
from tests.blueprints.test_list_queries import counted_statements
from tests.conftest import REDIS_URL, prepare_database

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")

HOSTING = "/api/services/hosting-products"
DOMAINS = "/api/services/domain-products"
NEW_PLAN = {"name": "Cache Plan", "hosting_type": "shared", "monthly_price": "4.00"}
NEW_TLD = {
    "tld": ".cache",
    "registration_price_1yr": "9.00",
    "renewal_price": "9.00",
    "transfer_price": "9.00",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def use_clock(app: Quart, clock: Clock, version_key: str | None = None) -> CatalogCache:
    cache: CatalogCache = app.extensions[CACHE_KEY]
    cache.clock = clock
    if version_key is not None:  # this test's own key: other runs share the Redis database
        cache.version_key = version_key
    return cache


def product_reads(statements: list[str]) -> list[str]:
    return [s for s in statements if "billing_hosting_product" in s or "billing_domain" in s]


async def names(api: API, path: str, token: str | None = None, field: str = "name") -> list[Any]:
    reply = await api.get(f"{path}/?page_size=100", token=token)
    assert reply.status == 200, reply.body
    return [product[field] for product in reply.body["results"]]


@pytest.fixture
async def shop(app: Quart) -> Quart:
    await seed_catalog(app)
    await make_user(app, "staff@example.com", Role.STAFF)
    return app


async def test_a_repeated_list_does_not_read_the_products_again(shop: Quart) -> None:
    clock = Clock()
    use_clock(shop, clock)
    api = API(shop)
    first = await api.get(f"{HOSTING}/")
    with counted_statements() as counter:
        again = await api.get(f"{HOSTING}/")
        domains = await api.get(f"{DOMAINS}/")
        domains_again = await api.get(f"{DOMAINS}/")
    assert again.body == first.body
    assert domains.body == domains_again.body
    assert len(product_reads(counter.statements)) == 1, counter.statements  # the domains, once
    clock.now += MAX_AGE_SECONDS  # whatever happened, a list is read again after this
    with counted_statements() as counter:
        assert (await api.get(f"{HOSTING}/")).body == first.body
    assert len(product_reads(counter.statements)) == 1, counter.statements


async def test_staff_writes_are_visible_on_the_next_list(shop: Quart) -> None:
    use_clock(shop, Clock())  # time stands still: only the writes can refresh the lists
    api = API(shop)
    staff = await api.login("staff@example.com")
    assert "Cache Plan" not in await names(api, HOSTING)
    assert ".cache" not in await names(api, DOMAINS, field="tld")

    created = await api.post(f"{HOSTING}/", NEW_PLAN, token=staff)
    assert created.status == 201, created.body
    assert "Cache Plan" in await names(api, HOSTING)
    plan = f"{HOSTING}/{created.body['id']}/"
    renamed = await api.call("PUT", plan, {**NEW_PLAN, "name": "Cache Plan 2"}, token=staff)
    assert renamed.status == 200, renamed.body
    assert "Cache Plan 2" in await names(api, HOSTING)
    assert (await api.call("DELETE", plan, token=staff)).status == 204
    assert "Cache Plan 2" not in await names(api, HOSTING)  # withdrawn: public list
    assert "Cache Plan 2" in await names(api, HOSTING, staff)  # staff still see it

    tld = await api.post(f"{DOMAINS}/", NEW_TLD, token=staff)
    assert tld.status == 201, tld.body
    assert ".cache" in await names(api, DOMAINS, field="tld")
    tld_path = f"{DOMAINS}/{tld.body['id']}/"
    changed = await api.call("PUT", tld_path, {**NEW_TLD, "renewal_price": "11.00"}, token=staff)
    assert changed.status == 200, changed.body
    listed = (await api.get(f"{DOMAINS}/?page_size=100")).body["results"]
    assert [d["renewal_price"] for d in listed if d["tld"] == ".cache"] == ["11.00"]
    assert (await api.call("DELETE", tld_path, token=staff)).status == 204
    assert ".cache" not in await names(api, DOMAINS, field="tld")


@pytest.fixture
async def two_workers(
    app_factory: Callable[..., Quart],
) -> AsyncIterator[tuple[Quart, Quart]]:
    """Two apps on one database and one Redis, as two workers of a deployment."""
    first, second = app_factory(REDIS_URL=REDIS_URL), app_factory(REDIS_URL=REDIS_URL)
    async with first.test_app(), second.test_app():
        await prepare_database(first)
        await seed_catalog(first)
        await make_user(first, "staff@example.com", Role.STAFF)
        yield first, second


async def test_with_redis_a_write_reaches_another_worker_within_the_bound(
    two_workers: tuple[Quart, Quart],
) -> None:
    writer, reader = two_workers
    key = f"slyker:test:catalog:{uuid.uuid4().hex}"
    writer_clock, reader_clock = Clock(), Clock()
    use_clock(writer, writer_clock, key)
    use_clock(reader, reader_clock, key)
    writing, reading = API(writer), API(reader)
    staff = await writing.login("staff@example.com")
    before = await names(reading, HOSTING)
    assert "Cache Plan" not in before

    created = await writing.post(f"{HOSTING}/", NEW_PLAN, token=staff)
    assert created.status == 201, created.body
    assert "Cache Plan" in await names(writing, HOSTING)  # the writer's own: at once
    reader_clock.now += VERSION_CHECK_SECONDS / 2
    assert await names(reading, HOSTING) == before  # the other worker: cached, in the bound
    reader_clock.now += VERSION_CHECK_SECONDS / 2
    assert "Cache Plan" in await names(reading, HOSTING)  # ... and not past it

    # A withdrawal travels the same way (and the writer's clock never moved).
    plan = f"{HOSTING}/{created.body['id']}/"
    assert (await writing.call("DELETE", plan, token=staff)).status == 204
    assert "Cache Plan" not in await names(writing, HOSTING)
    reader_clock.now += VERSION_CHECK_SECONDS
    assert "Cache Plan" not in await names(reading, HOSTING)
    redis = writer.extensions[REDIS_KEY]
    await redis.delete(key)


async def test_a_change_announced_outside_the_api_reaches_the_workers(
    two_workers: tuple[Quart, Quart],
) -> None:
    """What ``load-demo-catalog`` does after loading: the workers drop their lists within
    the version check, not after the 60 s maximum age."""
    _, reader = two_workers
    key = f"slyker:test:catalog:{uuid.uuid4().hex}"
    reader_clock = Clock()
    use_clock(reader, reader_clock, key)
    reading = API(reader)
    before = await names(reading, HOSTING)
    with db(reader):
        await HostingProduct.filter(name=before[0]).update(name="Renamed by SQL")
    assert await names(reading, HOSTING) == before  # cached: nobody said anything

    await announce_change(REDIS_URL, key)
    reader_clock.now += VERSION_CHECK_SECONDS
    assert "Renamed by SQL" in await names(reading, HOSTING)
    await reader.extensions[REDIS_KEY].delete(key)
