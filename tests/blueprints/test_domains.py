"""Domain search (POST /api/services/whois/check/) as the storefront's server route calls it,
against registries the tests start on 127.0.0.1 (tests/fake_registries.py)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from quart import Quart

from tests.api import API, FRONTEND_ORIGIN, Reply, assert_error
from tests.conftest import REDIS_URL, prepare_database
from tests.fake_registries import HANG, REGISTERED, FakeHTTPRegistry, FakeWhois

CHECK = "/api/services/whois/check/"
# What Node's fetch (undici) sends from the storefront's Next.js server route: no Origin,
# no Referer, no cookies.
NODE_FETCH_HEADERS = {
    "accept": "*/*",
    "accept-language": "*",
    "sec-fetch-mode": "cors",
    "user-agent": "node",
    "accept-encoding": "gzip, deflate",
}
TIMEOUT = 0.3  # WHOIS_TIMEOUT: what hangs is given up this soon; a fake registry answers in ms


def storefront_body(*domains: str) -> dict[str, Any]:
    """The body src/app/api/domain-search/route.ts sends."""
    return {"domains": list(domains), "parallel": True, "max_workers": 5}


@pytest.fixture
async def rdap() -> AsyncIterator[FakeHTTPRegistry]:
    behaviours = {"taken.com": REGISTERED, "slow.com": HANG}
    async with FakeHTTPRegistry(behaviours=behaviours) as server:
        yield server


@pytest.fixture
async def whois() -> AsyncIterator[FakeWhois]:
    async with FakeWhois(behaviours={"taken.co.zw": REGISTERED}) as server:
        yield server


@pytest.fixture
def registry_settings(rdap: FakeHTTPRegistry, whois: FakeWhois) -> dict[str, Any]:
    return {
        "WHOIS_RDAP_SERVERS": f"com={rdap.rdap_url},net={rdap.rdap_url}",
        "WHOIS_SERVERS": f"co.zw={whois.address}",
        "WHOIS_TIMEOUT": TIMEOUT,
    }


@pytest.fixture
def domain_app_factory(
    app_factory: Callable[..., Quart], registry_settings: dict[str, Any]
) -> Callable[..., Quart]:
    def build(**overrides: Any) -> Quart:
        return app_factory(**{**registry_settings, **overrides})

    return build


@pytest.fixture
async def app(domain_app_factory: Callable[..., Quart]) -> AsyncIterator[Quart]:
    application = domain_app_factory()
    async with application.test_app():
        await prepare_database(application)
        yield application


async def from_storefront_server(
    app: Quart, body: Any, address: str = "10.0.0.5", headers: dict[str, str] | None = None
) -> Reply:
    """The Next.js route's fetch: JSON, no Origin, from the storefront server's address."""
    response = await app.test_client().post(
        CHECK,
        json=body,
        headers={**NODE_FETCH_HEADERS, **(headers or {})},
        scope_base={"client": (address, 40000)},
    )
    return Reply(response.status_code, await response.get_json(), response.headers)


# --- the storefront's call -----------------------------------------------------------------


async def test_the_storefront_server_route_gets_its_results(
    app: Quart, rdap: FakeHTTPRegistry, whois: FakeWhois
) -> None:
    names = ("free.com", "taken.com", "free.co.zw", "taken.co.zw")
    reply = await from_storefront_server(app, storefront_body(*names))
    assert reply.status == 200, reply.body
    assert reply.body == {
        "results": [
            {"domain": "free.com", "available": True, "tld": "com",
             "whoisServer": f"127.0.0.1:{rdap.port}", "message": "free.com is available.",
             "error": None, "cached": False},
            {"domain": "taken.com", "available": False, "tld": "com",
             "whoisServer": f"127.0.0.1:{rdap.port}",
             "message": "taken.com is already registered.", "error": None, "cached": False},
            {"domain": "free.co.zw", "available": True, "tld": "co.zw",
             "whoisServer": whois.address, "message": "free.co.zw is available.",
             "error": None, "cached": False},
            {"domain": "taken.co.zw", "available": False, "tld": "co.zw",
             "whoisServer": whois.address, "message": "taken.co.zw is already registered.",
             "error": None, "cached": False},
        ]
    }  # fmt: skip
    # No Origin: the CSRF check lets the server-to-server call through; no CORS headers.
    names = {name.lower() for name, _value in reply.headers.items()}
    assert not {name for name in names if name.startswith("access-control-")}
    assert reply.headers.get("X-Request-ID")
    assert rdap.hits == {"free.com": 1, "taken.com": 1}
    assert whois.hits == {"free.co.zw": 1, "taken.co.zw": 1}


async def test_a_browser_on_the_storefront_origin_gets_cors_headers(app: Quart) -> None:
    reply = await API(app).post(CHECK, storefront_body("free.com"))
    assert reply.status == 200, reply.body
    assert reply.headers.getlist("Access-Control-Allow-Origin") == [FRONTEND_ORIGIN]
    assert reply.headers.get("Access-Control-Allow-Credentials") == "true"
    assert "origin" in reply.headers.get("Vary", "").lower()


async def test_a_foreign_page_is_refused_before_any_lookup(
    app: Quart, rdap: FakeHTTPRegistry
) -> None:
    reply = await API(app, origin="https://evil.example").post(CHECK, storefront_body("x.com"))
    assert_error(reply, 403, "csrf_failed")
    assert "Access-Control-Allow-Origin" not in reply.headers
    assert rdap.connections == 0


async def test_only_the_names_body_is_needed(app: Quart) -> None:
    reply = await from_storefront_server(app, {"domains": ["Free.COM."]})
    assert reply.status == 200, reply.body
    assert [(r["domain"], r["available"]) for r in reply.body["results"]] == [("free.com", True)]


async def test_unicode_names_are_checked_as_punycode(app: Quart, rdap: FakeHTTPRegistry) -> None:
    reply = await from_storefront_server(app, {"domains": ["bücher.com"]})
    assert reply.status == 200, reply.body
    assert reply.body["results"][0]["domain"] == "xn--bcher-kva.com"
    assert rdap.hits == {"xn--bcher-kva.com": 1}


# --- one registry's trouble is one name's error --------------------------------------------


async def test_a_registry_that_never_answers_is_that_names_error(
    app_factory: Callable[..., Quart], rdap: FakeHTTPRegistry, whois: FakeWhois
) -> None:
    hanging = FakeWhois(behaviours={"stuck.co.zw": HANG})
    async with hanging:
        app = app_factory(
            WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}",
            WHOIS_SERVERS=f"co.zw={hanging.address}",
            WHOIS_TIMEOUT=TIMEOUT,
        )
        async with app.test_app():
            started = time.monotonic()
            reply = await from_storefront_server(
                app, storefront_body("slow.com", "stuck.co.zw", "free.com")
            )
            elapsed = time.monotonic() - started
    assert reply.status == 200, reply.body
    slow, stuck, free = reply.body["results"]
    assert (slow["available"], slow["message"]) == (None, None)
    timed_out = "timed out after 0.3 s."
    assert slow["error"] == f"Could not check slow.com at 127.0.0.1:{rdap.port}: {timed_out}"
    assert stuck["available"] is None
    assert stuck["error"] == f"Could not check stuck.co.zw at {hanging.address}: {timed_out}"
    assert free["available"] is True and free["error"] is None
    assert elapsed < TIMEOUT + 1.5


async def test_an_extension_without_a_registry_is_that_names_error(app: Quart) -> None:
    reply = await from_storefront_server(app, storefront_body("free.com", "name.unknownext"))
    assert reply.status == 200, reply.body
    assert reply.body["results"][1] == {
        "domain": "name.unknownext", "available": None, "tld": "unknownext", "whoisServer": "",
        "message": None, "error": "No availability lookup for .unknownext.", "cached": False,
    }  # fmt: skip


# --- input ---------------------------------------------------------------------------------


async def test_names_that_are_not_domain_names_are_a_400(
    app: Quart, rdap: FakeHTTPRegistry
) -> None:
    reply = await from_storefront_server(
        app, storefront_body("free.com", "bad..com", "nul\x00.com", "a" * 70 + ".com")
    )
    assert_error(reply, 400, "invalid_domain", "domains.1: 'bad..com' is not a valid domain")
    assert set(reply.body["errors"]) == {"domains.1", "domains.2", "domains.3"}
    assert reply.body["errors"]["domains.2"] == [
        "'nul\\x00.com' is not a valid domain name: contains control characters"
    ]
    assert rdap.connections == 0  # nothing is looked up when the request is refused


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "domains"),
        ({"domains": "example.com"}, "domains"),
        ({"domains": [1, 2]}, "domains.0"),
        ({"domains": [None]}, "domains.0"),
        ({"domains": [["x.com"]]}, "domains.0"),
        ({"domains": ["x.com"], "max_workers": 0}, "max_workers"),
        ({"domains": ["x.com"], "max_workers": "many"}, "max_workers"),
        ({"domains": ["x.com"], "parallel": "sometimes"}, "parallel"),
        ([], "non_field_errors"),
    ],
)
async def test_malformed_bodies_are_a_400(app: Quart, body: Any, field: str) -> None:
    reply = await from_storefront_server(app, body)
    assert_error(reply, 400, "invalid")
    assert field in reply.body["errors"], reply.body


async def test_empty_and_huge_lists_are_a_400(app: Quart, rdap: FakeHTTPRegistry) -> None:
    assert_error(
        await from_storefront_server(app, {"domains": []}),
        400,
        "invalid",
        "domains: Give at least one domain name.",
    )
    for count in (21, 50_000):  # 50 000 names: about 500 KB, under MAX_CONTENT_LENGTH
        reply = await from_storefront_server(app, {"domains": [f"n{i}.com" for i in range(count)]})
        assert_error(reply, 400, "invalid", "domains: At most 20 domains per request.")
    assert rdap.connections == 0


async def test_a_body_over_the_size_limit_is_a_413(app: Quart) -> None:
    reply = await from_storefront_server(app, {"domains": ["x" * 2_000_000 + ".com"]})
    assert_error(reply, 413, "payload_too_large")


async def test_a_body_that_is_not_json_is_refused(app: Quart) -> None:
    client = app.test_client()
    text = {"Content-Type": "text/plain"}
    response = await client.post(CHECK, data="domains=x.com", headers=text)
    assert response.status_code == 415
    response = await client.post(
        CHECK, data='{"domains": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert (await response.get_json())["code"] == "invalid_json"


async def test_max_workers_is_capped_by_the_setting(
    domain_app_factory: Callable[..., Quart], rdap: FakeHTTPRegistry
) -> None:
    rdap.delay = 0.05
    app = domain_app_factory(WHOIS_MAX_PARALLEL=2)
    async with app.test_app():
        body = {"domains": [f"n{i}.com" for i in range(8)], "max_workers": 10**30}
        reply = await from_storefront_server(app, body)
    assert reply.status == 200, reply.body
    assert rdap.max_active == 2 and rdap.connections == 8


# --- cache ---------------------------------------------------------------------------------


async def test_a_repeated_search_is_answered_from_the_cache(
    app: Quart, rdap: FakeHTTPRegistry
) -> None:
    body = storefront_body("free.com", "taken.com")
    first = await from_storefront_server(app, body)
    second = await from_storefront_server(app, body)
    assert [r["cached"] for r in first.body["results"]] == [False, False]
    assert [r["cached"] for r in second.body["results"]] == [True, True]
    assert [r["available"] for r in second.body["results"]] == [True, False]
    assert rdap.hits == {"free.com": 1, "taken.com": 1}


async def test_with_redis_every_worker_shares_the_cache(
    domain_app_factory: Callable[..., Quart], rdap: FakeHTTPRegistry
) -> None:
    name = f"shared-{secrets.token_hex(6)}.com"  # fresh per run: the database outlives it
    first, second = (domain_app_factory(REDIS_URL=REDIS_URL) for _ in range(2))
    async with first.test_app(), second.test_app():
        one = await from_storefront_server(first, {"domains": [name]})
        two = await from_storefront_server(second, {"domains": [name]})
    assert (one.body["results"][0]["cached"], two.body["results"][0]["cached"]) == (False, True)
    assert rdap.hits[name] == 1


# --- rate limit ----------------------------------------------------------------------------


async def test_searches_are_rate_limited_per_client_address(
    domain_app_factory: Callable[..., Quart], rdap: FakeHTTPRegistry
) -> None:
    app = domain_app_factory(WHOIS_RATE_LIMIT=2)
    async with app.test_app():
        api = API(app)
        for _ in range(2):
            reply = await api.post(CHECK, storefront_body("free.com"))
            assert reply.status == 200, reply.body
        assert reply.headers.get("RateLimit-Limit") == "2"
        limited = await api.post(CHECK, storefront_body("free.com"))
        assert_error(limited, 429, "rate_limited")
        retry_after = limited.headers.get("Retry-After")
        assert retry_after is not None and 1 <= int(retry_after) <= 60
        assert limited.headers.getlist("Access-Control-Allow-Origin") == [FRONTEND_ORIGIN]
        # X-Forwarded-For is the client's to write: no new allowance (TRUSTED_PROXY_HOPS=0).
        spoofed = await api.post(
            CHECK, storefront_body("free.com"), headers={"X-Forwarded-For": "198.51.100.9"}
        )
        assert_error(spoofed, 429, "rate_limited")
        # The storefront's server has an address of its own, so its own allowance.
        other = await from_storefront_server(app, storefront_body("free.com"), "10.0.0.9")
        assert other.status == 200, other.body
    assert rdap.hits["free.com"] == 1  # the rest came from the cache or were refused


async def test_searches_share_one_registry_connection_closed_at_shutdown(
    domain_app_factory: Callable[..., Quart],
) -> None:
    """Two searches (uncached) reach an HTTP/1.1 registry over one pooled connection, and
    stopping the app closes it (the registry sees the client hang up)."""
    async with FakeHTTPRegistry(keep_alive=True) as registry:
        application = domain_app_factory(
            WHOIS_RDAP_SERVERS=f"com={registry.rdap_url}", WHOIS_CACHE_SECONDS="0"
        )
        async with application.test_app():
            await prepare_database(application)
            for name in ("first.com", "second.com"):
                reply = await from_storefront_server(application, storefront_body(name))
                assert reply.status == 200 and reply.body["results"][0]["available"] is True
            assert registry.hits == {"first.com": 1, "second.com": 1}
            assert registry.connections == 1 and registry.closed == 0
        async with asyncio.timeout(10):  # the registry's handler sees end of file
            await registry.idle.wait()
        assert registry.connections == registry.closed == 1
