"""Domain availability (slyker/services/whois.py) against registries the tests start on
127.0.0.1 (tests/fake_registries.py): RDAP over HTTP, WHOIS over TCP, a lookup page."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from slyker.services.errors import InvalidInput
from slyker.services.whois import (
    DEFAULT_RDAP_SERVERS,
    DEFAULT_WHOIS_SERVERS,
    DomainChecker,
    InvalidDomain,
    InvalidDomains,
    Lookup,
    MemoryCache,
    RedisCache,
    new_http_client,
    normalise_domain,
    read_answer,
    registries_from_settings,
)
from slyker.settings import SettingsError, load_settings
from tests.conftest import REDIS_URL, TEST_SECRET_KEY
from tests.fake_registries import (
    EMPTY,
    GARBAGE,
    HANG,
    HTML_404,
    HUGE,
    OTHER_NAME,
    REGISTERED,
    SERVER_ERROR,
    FakeHTTPRegistry,
    FakeWhois,
    closed_port,
)

TIMEOUT = 0.3  # WHOIS_TIMEOUT: what hangs is given up this soon; a fake registry answers in ms


def settings(**overrides: Any) -> Any:
    return load_settings(environ={}, overrides={"SECRET_KEY": TEST_SECRET_KEY, **overrides})


_clients: list[httpx.AsyncClient] = []  # made by checker(), closed after each test


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().aclose()


def checker(cache: Any = None, **overrides: Any) -> DomainChecker:
    """A checker with its own HTTP client, made as the app makes it."""
    overrides.setdefault("WHOIS_TIMEOUT", TIMEOUT)
    configured = settings(**overrides)
    client = new_http_client(configured)
    _clients.append(client)
    return DomainChecker.from_settings(configured, cache or MemoryCache(), client)


def fields(result: Any) -> tuple[Any, ...]:
    return (result.domain, result.available, result.tld, result.error is None)


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("  example.co.zw ", "example.co.zw"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("BÜCHER.de", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("例え。テスト", "xn--r8jz45g.xn--zckzah"),  # an ideographic full stop is a dot
        ("a" * 63 + ".com", "a" * 63 + ".com"),
        ("1-2.co.zw", "1-2.co.zw"),
    ],
)
def test_names_are_normalised(raw: str, expected: str) -> None:
    assert normalise_domain(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        (".", "empty"),
        ("com", "needs a name and an extension"),
        ("example..com", "empty label"),
        (".example.com", "empty label"),
        ("example.com..", "empty label"),
        ("-example.com", "letters, digits and inner hyphens"),
        ("example-.com", "letters, digits and inner hyphens"),
        ("ex_ample.com", "letters, digits and inner hyphens"),
        ("exa mple.com", "letters, digits and inner hyphens"),
        ("example.com/path", "letters, digits and inner hyphens"),
        ("a" * 64 + ".com", "longer than 63"),
        (".".join(["a" * 60] * 5), "longer than 253"),
        ("x" * 10_000, "longer than 253"),
        ("ab--cd.com", "third and fourth position"),
        ("xn--zz-zzzz.com", "not valid punycode"),
        ("192.168.0.1", "cannot be a number"),
        ("example.com\x00", "control characters"),
        ("exam\x00ple.com", "control characters"),
        ("example.com\r\nwhois.evil", "control characters"),
        ("example.com\n", "control characters"),
        ("\x85example.com", "control characters"),
        ("\ud800.com", "not a valid internationalised name"),
        ("☃️.com", "not a valid internationalised name"),
    ],
)
def test_what_is_not_a_domain_name(raw: str, reason: str) -> None:
    with pytest.raises(InvalidDomain) as raised:
        normalise_domain(raw)
    assert reason in str(raised.value)


async def test_a_bad_name_fails_the_request_naming_every_bad_one() -> None:
    with pytest.raises(InvalidDomains) as raised:
        await checker().check(["example.com", "bad..name.com", "ok.org", "x\x00.com"])
    assert raised.value.errors == {
        "domains.1": ["'bad..name.com' is not a valid domain name: has an empty label "
                      "(two dots in a row, or a leading dot)"],
        "domains.3": ["'x\\x00.com' is not a valid domain name: contains control characters"],
    }  # fmt: skip
    assert raised.value.message.startswith("domains.1: 'bad..name.com'")


async def test_list_size_is_bounded() -> None:
    with pytest.raises(InvalidInput, match="At most 3 domains"):
        await checker(WHOIS_MAX_DOMAINS=3).check([f"name{i}.com" for i in range(4)])
    with pytest.raises(InvalidInput, match="at least one"):
        await checker().check([])


# --- RDAP ----------------------------------------------------------------------------------


async def test_rdap_free_and_registered() -> None:
    async with FakeHTTPRegistry(behaviours={"taken.com": REGISTERED}) as rdap:
        results = await checker(WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}").check(
            ["free.com", "TAKEN.com."]
        )
    free, taken = results
    assert free.as_json() == {
        "domain": "free.com",
        "available": True,
        "tld": "com",
        "whoisServer": f"127.0.0.1:{rdap.port}",
        "message": "free.com is available.",
        "error": None,
        "cached": False,
    }
    assert taken.as_json() == {
        "domain": "taken.com",
        "available": False,
        "tld": "com",
        "whoisServer": f"127.0.0.1:{rdap.port}",
        "message": "taken.com is already registered.",
        "error": None,
        "cached": False,
    }
    assert rdap.hits == {"free.com": 1, "taken.com": 1}


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (GARBAGE, "the RDAP answer is not JSON"),
        (HTML_404, "HTTP 404 without an RDAP answer"),
        (SERVER_ERROR, "the RDAP server answered HTTP 503"),
        (OTHER_NAME, "the RDAP answer is about another name"),
        (HUGE, "the answer is larger than 262144 bytes"),
        (EMPTY, "the connection failed (RemoteProtocolError)"),
    ],
)
async def test_rdap_answers_that_are_not_answers(behaviour: str, reason: str) -> None:
    async with FakeHTTPRegistry(behaviours={"odd.com": behaviour}) as rdap:
        (result,) = await checker(WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}").check(["odd.com"])
    assert result.available is None
    assert result.message is None
    assert result.error == f"Could not check odd.com at 127.0.0.1:{rdap.port}: {reason}."


async def test_a_registry_that_never_answers_times_out_per_name() -> None:
    async with FakeHTTPRegistry(behaviours={"slow.com": HANG}) as rdap:
        started = time.monotonic()
        results = await checker(WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}").check(
            ["slow.com", "quick.com"]
        )
        elapsed = time.monotonic() - started
    assert fields(results[0]) == ("slow.com", None, "com", False)
    assert results[0].error.endswith("timed out after 0.3 s.")  # type: ignore[union-attr]
    assert fields(results[1]) == ("quick.com", True, "com", True)
    assert TIMEOUT <= elapsed < TIMEOUT + 1.0


async def test_a_registry_that_is_down() -> None:
    port = closed_port()
    (result,) = await checker(WHOIS_RDAP_SERVERS=f"com=http://127.0.0.1:{port}/").check(
        ["down.com"]
    )
    assert result.available is None
    assert result.error == (
        f"Could not check down.com at 127.0.0.1:{port}: could not connect (Connection refused)."
    )


# --- WHOIS ---------------------------------------------------------------------------------


async def test_whois_free_and_registered_including_co_zw() -> None:
    async with FakeWhois(behaviours={"taken.co.zw": REGISTERED, "taken.io": REGISTERED}) as w:
        results = await checker(
            WHOIS_SERVERS=f"co.zw={w.address},io={w.address}",
        ).check(["free.co.zw", "taken.co.zw", "free.io", "taken.io"])
    assert [fields(r) for r in results] == [
        ("free.co.zw", True, "co.zw", True),
        ("taken.co.zw", False, "co.zw", True),
        ("free.io", True, "io", True),
        ("taken.io", False, "io", True),
    ]
    assert {r.whois_server for r in results} == {w.address}
    # RFC 3912: the name, then CRLF, and nothing else.
    assert sorted(w.queries) == [b"free.co.zw\r\n", b"free.io\r\n", b"taken.co.zw\r\n",
                                 b"taken.io\r\n"]  # fmt: skip


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (GARBAGE, "the answer could not be read"),
        (EMPTY, "the answer was empty"),
        (HUGE, "the answer is larger than 262144 bytes"),
        (HANG, "timed out after 0.3 s"),
    ],
)
async def test_whois_answers_that_are_not_answers(behaviour: str, reason: str) -> None:
    async with FakeWhois(behaviours={"odd.co.zw": behaviour}) as whois:
        started = time.monotonic()
        (result,) = await checker(WHOIS_SERVERS=f"co.zw={whois.address}").check(["odd.co.zw"])
        assert time.monotonic() - started < TIMEOUT + 1.0
    assert (result.available, result.tld) == (None, "co.zw")
    assert result.error == f"Could not check odd.co.zw at {whois.address}: {reason}."


async def test_a_whois_server_that_is_down() -> None:
    port = closed_port()
    (result,) = await checker(WHOIS_SERVERS=f"co.zw=127.0.0.1:{port}").check(["x.co.zw"])
    assert result.error == (
        f"Could not check x.co.zw at 127.0.0.1:{port}: could not connect (Connection refused)."
    )


async def test_co_zw_through_the_registry_lookup_page() -> None:
    """The default for .co.zw is ZISPA's lookup page; here the fake's, same shape."""
    behaviours = {"taken.co.zw": REGISTERED, "broken.co.zw": GARBAGE}
    async with FakeHTTPRegistry(behaviours=behaviours) as web:
        results = await checker(WHOIS_SERVERS=f"co.zw={web.lookup_url}").check(
            ["free.co.zw", "taken.co.zw", "broken.co.zw"]
        )
    assert [fields(r) for r in results] == [
        ("free.co.zw", True, "co.zw", True),
        ("taken.co.zw", False, "co.zw", True),
        ("broken.co.zw", None, "co.zw", False),
    ]
    assert results[2].error == (
        f"Could not check broken.co.zw at 127.0.0.1:{web.port}: the answer could not be read."
    )


@pytest.mark.parametrize(
    ("answer", "available"),
    [
        ('No match for "EXAMPLE.COM".', True),
        ("Domain not found.", True),
        ("Status:\tAVAILABLE", True),
        ("example.nl is free", True),
        ("   Domain Name: EXAMPLE.COM\r\n   Registrar: X", False),
        ("Domain name:\r\n        example.com\r\n", False),
    ],
)
def test_reading_whois_text(answer: str, available: bool) -> None:
    domain = "example.nl" if "nl" in answer else "example.com"
    assert read_answer(answer, domain) is available


@pytest.mark.parametrize(
    "answer",
    [
        "Domain Name: NOTEXAMPLE.COM",  # another name that contains ours
        "Domain Name: EXAMPLE.COM.AU",
        "WHOIS LIMIT EXCEEDED - SEE WWW.PIR.ORG/WHOIS FOR DETAILS",
        "this service is free of charge",
    ],
)
def test_whois_text_that_says_nothing_about_the_name(answer: str) -> None:
    with pytest.raises(Exception, match="could not be read"):
        read_answer(answer, "example.com")


# --- which registry ------------------------------------------------------------------------


async def test_names_without_a_registry_or_under_a_name_are_not_looked_up() -> None:
    async with FakeHTTPRegistry() as rdap:
        results = await checker(WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}").check(
            ["example.unknownext", "www.example.com", "a.b.unknownext"]
        )
    assert [r.as_json() | {"whoisServer": "-"} for r in results] == [
        {"domain": "example.unknownext", "available": None, "tld": "unknownext",
         "whoisServer": "-", "message": None, "error": "No availability lookup for .unknownext.",
         "cached": False},
        {"domain": "www.example.com", "available": None, "tld": "com", "whoisServer": "-",
         "message": None, "cached": False,
         "error": "www.example.com is not a registrable name; check example.com instead."},
        {"domain": "a.b.unknownext", "available": None, "tld": "b.unknownext",
         "whoisServer": "-", "message": None, "cached": False,
         "error": "No availability lookup for .b.unknownext."},
    ]  # fmt: skip
    assert rdap.connections == 0


def test_built_in_tables_and_overrides() -> None:
    default = registries_from_settings(settings())
    assert (
        default["com"].address
        == DEFAULT_RDAP_SERVERS["com"]
        == ("https://rdap.verisign.com/com/v1/")
    )
    assert default["co.zw"].lookup is Lookup.WEB
    assert default["co.zw"].address == DEFAULT_WHOIS_SERVERS["co.zw"]
    assert default["co.zw"].server == "zispa.org.zw"
    assert default["io"].server == "whois.nic.io"
    assert "zw" not in default  # IANA lists no WHOIS server for .zw itself

    table = registries_from_settings(
        settings(
            WHOIS_SERVERS="com=127.0.0.1:4343,co.zw=,.ZW=whois.example.zw",
            WHOIS_RDAP_SERVERS="net=,io=https://rdap.example.io/v1",
        )
    )
    assert (table["com"].lookup, table["com"].address) == (Lookup.WHOIS, "127.0.0.1:4343")
    assert "co.zw" not in table and "net" not in table
    assert (table["zw"].lookup, table["zw"].address) == (Lookup.WHOIS, "whois.example.zw:43")
    assert (table["io"].lookup, table["io"].address) == (Lookup.RDAP, "https://rdap.example.io/v1/")
    # Both settings for one suffix: RDAP; an empty RDAP value then leaves the WHOIS entry.
    both = registries_from_settings(
        settings(WHOIS_SERVERS="com=h:43,org=h:43", WHOIS_RDAP_SERVERS="com=https://r/,org=")
    )
    assert both["com"].lookup is Lookup.RDAP and both["org"].lookup is Lookup.WHOIS


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WHOIS_RDAP_SERVERS", "com=http://rdap.example.com/"),  # plain http off loopback
        ("WHOIS_RDAP_SERVERS", "com=ftp://rdap.example.com/"),
        ("WHOIS_RDAP_SERVERS", "com=https://rdap.example.com/?x=1"),
        ("WHOIS_RDAP_SERVERS", "com=https://user@rdap.example.com/"),
        ("WHOIS_RDAP_SERVERS", "com"),
        ("WHOIS_RDAP_SERVERS", "com=https://a/,com=https://b/"),
        ("WHOIS_SERVERS", "co_zw=whois.example"),
        ("WHOIS_SERVERS", "zw=whois.example:0"),
        ("WHOIS_SERVERS", "zw=whois.example:65536"),
        ("WHOIS_SERVERS", "zw=whois example"),
        ("WHOIS_SERVERS", "zw=whois.example/path"),
        ("WHOIS_TIMEOUT", "0"),
        ("WHOIS_TIMEOUT", "31"),
        ("WHOIS_TIMEOUT", "nan"),
        ("WHOIS_TIMEOUT", "soon"),
        ("WHOIS_MAX_PARALLEL", "0"),
        ("WHOIS_MAX_PARALLEL", "51"),
        ("WHOIS_MAX_DOMAINS", "0"),
        ("WHOIS_MAX_DOMAINS", "101"),
        ("WHOIS_CACHE_SECONDS", "-1"),
        ("WHOIS_RATE_LIMIT", "0"),
    ],
)
def test_bad_settings_name_themselves(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        settings(**{name: value})
    assert raised.value.setting == name


# --- cache ---------------------------------------------------------------------------------


async def test_answers_are_cached_and_failures_are_not() -> None:
    cache = MemoryCache()
    behaviours = {"taken.com": REGISTERED, "broken.com": SERVER_ERROR}
    names = ["free.com", "taken.com", "broken.com"]
    async with FakeHTTPRegistry(behaviours=behaviours) as rdap:
        first = await checker(cache, WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}").check(names)
        second = await checker(cache, WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}").check(names)
    assert [(r.available, r.cached) for r in first] == [(True, False), (False, False),
                                                        (None, False)]  # fmt: skip
    assert [(r.available, r.cached) for r in second] == [(True, True), (False, True),
                                                         (None, False)]  # fmt: skip
    assert rdap.hits == {"free.com": 1, "taken.com": 1, "broken.com": 2}


async def test_the_cache_expires_and_can_be_turned_off() -> None:
    cache = MemoryCache()
    async with FakeHTTPRegistry() as rdap:
        for _ in range(2):
            await checker(
                cache, WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}", WHOIS_CACHE_SECONDS=0
            ).check(["free.com"])
        assert rdap.hits["free.com"] == 2
        await checker(cache, WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}").check(["free.com"])
        key = next(iter(cache.entries))
        cache.entries[key] = (time.monotonic() - 1, True)  # its time is up
        await checker(cache, WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}").check(["free.com"])
    assert rdap.hits["free.com"] == 4


async def test_another_server_is_asked_afresh() -> None:
    cache = MemoryCache()
    async with FakeHTTPRegistry() as first, FakeHTTPRegistry() as second:
        await checker(cache, WHOIS_RDAP_SERVERS=f"com={first.rdap_url}").check(["free.com"])
        await checker(cache, WHOIS_RDAP_SERVERS=f"com={second.rdap_url}").check(["free.com"])
    assert (first.hits["free.com"], second.hits["free.com"]) == (1, 1)


async def test_the_memory_cache_is_bounded() -> None:
    cache = MemoryCache(max_entries=3)
    for number in range(5):
        await cache.set(f"k{number}", True, 60)
    assert list(cache.entries) == ["k2", "k3", "k4"]


async def test_redis_cache_is_shared_between_workers() -> None:
    name = f"shared-{secrets.token_hex(6)}.com"  # fresh per run: the database outlives it
    first, second = Redis.from_url(REDIS_URL), Redis.from_url(REDIS_URL)
    try:
        async with FakeHTTPRegistry(behaviours={name: REGISTERED}) as rdap:
            server = f"com={rdap.rdap_url}"
            (one,) = await checker(RedisCache(first), WHOIS_RDAP_SERVERS=server).check([name])
            (two,) = await checker(RedisCache(second), WHOIS_RDAP_SERVERS=server).check([name])
        assert (one.available, one.cached, two.available, two.cached) == (False, False, False, True)
        assert rdap.hits[name] == 1
        keys = [key async for key in first.scan_iter(match=f"slyker:whois:v1:*:{name}")]
        assert len(keys) == 1
        assert 0 < await first.ttl(keys[0]) <= 300
        await first.delete(*keys)
    finally:
        await first.aclose()
        await second.aclose()


async def test_redis_down_costs_only_the_cache() -> None:
    broken = Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=0.5)
    try:
        async with FakeHTTPRegistry() as rdap:
            for _ in range(2):
                (result,) = await checker(
                    RedisCache(broken), WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}"
                ).check(["free.com"])
                assert (result.available, result.cached) == (True, False)
        assert rdap.hits["free.com"] == 2
    finally:
        await broken.aclose()


# --- parallelism ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_workers", "parallel", "max_parallel", "expected"),
    [(3, True, 5, 3), (50, True, 4, 4), (None, True, 2, 2), (5, False, 5, 1)],
)
async def test_parallelism_is_bounded(
    max_workers: int | None, parallel: bool, max_parallel: int, expected: int
) -> None:
    names = [f"name{number}.com" for number in range(10)]
    async with FakeHTTPRegistry(delay=0.05) as rdap:
        results = await checker(
            WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}", WHOIS_MAX_PARALLEL=max_parallel
        ).check(names, max_workers=max_workers, parallel=parallel)
    assert all(r.available for r in results)
    assert rdap.max_active == expected
    assert rdap.connections == 10


async def test_whois_parallelism_is_bounded_and_repeats_are_asked_once() -> None:
    names = [f"name{number}.co.zw" for number in range(8)] * 2
    async with FakeWhois(delay=0.05) as whois:
        results = await checker(WHOIS_SERVERS=f"co.zw={whois.address}", WHOIS_MAX_PARALLEL=3).check(
            names, max_workers=10
        )
    assert [r.domain for r in results] == names
    assert all(r.available for r in results)
    assert whois.max_active == 3
    assert whois.connections == 8


async def test_many_hanging_registries_still_finish_in_bounded_time() -> None:
    names = [f"name{number}.com" for number in range(6)]
    async with FakeHTTPRegistry(behaviours=dict.fromkeys(names, HANG)) as rdap:
        started = time.monotonic()
        results = await asyncio.wait_for(
            checker(WHOIS_RDAP_SERVERS=f"com={rdap.rdap_url}", WHOIS_MAX_PARALLEL=3).check(names),
            timeout=10,
        )
        elapsed = time.monotonic() - started
    assert all(r.available is None for r in results)
    assert 2 * TIMEOUT <= elapsed < 2 * TIMEOUT + 1.5  # two rounds of three
