"""Behind the trusted proxy (``TRUSTED_PROXY_HOPS=1``, nginx's X-Forwarded-* headers).

The outage: with ``X-Forwarded-Proto: https`` (nginx's TLS listener) Hypercorn's
ProxyFixMiddleware gave WebSocket scopes the scheme ``https``, and every chat handshake was
answered 400. The scope-level cases check the middleware on its own; the chat cases run the
whole app in-process with the headers nginx sends (``tests/test_nginx.py`` runs the same stack
through the real nginx).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from quart import Quart

from slyker.proxy import TrustedProxyMiddleware, asks_for_h2c
from tests.chat_client import chat_socket, open_visitor
from tests.conftest import prepare_database
from tests.h2c_client import H2Request, h2c_upgrade
from tests.live_servers import HOST, Hypercorn, LiveServer, slyker_env, start_hypercorns

API_HOST = "api.slykertech.co.zw"
STOREFRONT = "https://slykertech.co.zw"
FOREIGN = "https://evil.example"
UPSTREAM_HOST = "127.0.0.1:8000"  # what the app is addressed as by nginx's upstream


def nginx_headers(proto: str, host: str = API_HOST, client: str = "203.0.113.7") -> dict[str, str]:
    """The headers docker/nginx.conf sets on a proxied request (``$host`` has no port)."""
    return {
        "Host": host,
        "X-Forwarded-For": client,
        "X-Forwarded-Proto": proto,
        "X-Forwarded-Host": host,
    }


# --- the middleware on ASGI scopes -----------------------------------------------------------


async def scope_seen(scope: dict[str, Any], trusted_hops: int = 1) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(inner: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(inner)

    await TrustedProxyMiddleware(app, trusted_hops)(scope, None, None)  # type: ignore[arg-type]
    return seen


def make_scope(kind: str, scheme: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": kind,
        "scheme": scheme,
        "client": ("127.0.0.1", 50000),
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
    }


@pytest.mark.parametrize(
    ("kind", "connection", "forwarded", "expected"),
    [
        ("websocket", "ws", "https", "wss"),  # the outage: nginx's TLS listener
        ("websocket", "ws", "http", "ws"),
        ("websocket", "ws", "wss", "wss"),  # a proxy that already speaks ws/wss
        ("websocket", "ws", "ws", "ws"),
        ("websocket", "ws", "HTTPS", "wss"),
        ("websocket", "ws", None, "ws"),  # no header: the connection's own scheme
        ("websocket", "wss", None, "wss"),
        ("websocket", "wss", "gopher", "wss"),  # nonsense: the connection's own scheme
        ("websocket", "ws", "", "ws"),
        ("http", "http", "https", "https"),
        ("http", "http", "http", "http"),
        ("http", "http", "wss", "https"),
        ("http", "https", None, "https"),
        ("http", "http", "javascript", "http"),
    ],
)
async def test_the_scope_scheme_fits_the_scope_type(
    kind: str, connection: str, forwarded: str | None, expected: str
) -> None:
    headers = {"Host": UPSTREAM_HOST}
    if forwarded is not None:
        headers["X-Forwarded-Proto"] = forwarded
    scope = make_scope(kind, connection, headers)
    seen = await scope_seen(scope)
    assert seen["scheme"] == expected
    assert scope["scheme"] == connection  # the server's scope is left as it was


async def test_client_and_host_still_come_from_the_proxy() -> None:
    scope = make_scope(
        "websocket",
        "ws",
        {
            **nginx_headers("https"),
            "Host": UPSTREAM_HOST,
            "X-Forwarded-For": "1.2.3.4, 203.0.113.7",
        },
    )
    seen = await scope_seen(scope)
    assert seen["client"] == ("203.0.113.7", 0)  # one trusted hop: the proxy's own entry
    assert [value for name, value in seen["headers"] if name == b"host"] == [API_HOST.encode()]
    untrusted = await scope_seen(make_scope("websocket", "ws", nginx_headers("https")), 2)
    assert untrusted["client"] == ("127.0.0.1", 50000)  # fewer values than trusted hops
    assert untrusted["scheme"] == "ws"


async def test_lifespan_passes_through_untouched() -> None:
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    assert await scope_seen(scope) == scope


# --- the whole app: chat behind nginx's headers ------------------------------------------------


@pytest.fixture
async def proxied_app(app_factory: Callable[..., Quart]) -> Any:
    application = app_factory(
        TRUSTED_PROXY_HOPS=1,
        ALLOWED_HOSTS=API_HOST,
        CORS_ALLOWED_ORIGINS=STOREFRONT,
    )
    async with application.test_app():
        await prepare_database(application)
        yield application


@pytest.mark.parametrize("proto", ["https", "http"])  # nginx's TLS and plain listeners
@pytest.mark.parametrize("path", ["/ws/chat/sales/", "/livechat/ws/sales/"])
async def test_chat_greets_through_the_proxy(proxied_app: Quart, path: str, proto: str) -> None:
    async with chat_socket(
        proxied_app, path, origin=STOREFRONT, headers=nginx_headers(proto)
    ) as visitor:
        established, greeting = await visitor.receive_many(2)
    assert established["type"] == "connection_established", established
    assert established["room"] == "sales"
    assert greeting["type"] == "system", greeting


async def test_the_same_host_rule_holds_behind_the_proxy(proxied_app: Quart) -> None:
    """The API's own origin (``https://api...``) against the Host nginx forwards (``$host``,
    no port, i.e. 443 for an https origin)."""
    async with open_visitor(
        proxied_app, origin=f"https://{API_HOST}", headers=nginx_headers("https")
    ) as visitor:
        assert visitor.opening[0]["room"] == "sales"


@pytest.mark.parametrize(
    ("origin", "headers"),
    [
        (FOREIGN, nginx_headers("https")),
        (f"https://{API_HOST}:8443", nginx_headers("https")),  # another port than the Host's
        (f"http://{API_HOST}", nginx_headers("http")),  # plain http off loopback
        (None, nginx_headers("https")),
    ],
    ids=["foreign", "other-port", "plain-http", "missing"],
)
async def test_foreign_origins_are_still_refused_behind_the_proxy(
    proxied_app: Quart, origin: str | None, headers: dict[str, str]
) -> None:
    async with chat_socket(proxied_app, "/ws/chat/sales/", origin=origin, headers=headers) as ws:
        assert await ws.expect_refused() == 403


async def test_a_host_outside_allowed_hosts_is_refused_behind_the_proxy(
    proxied_app: Quart,
) -> None:
    """The forwarded host is checked (before the origin rule): a 400, not a handshake."""
    headers = nginx_headers("https", host="other.example")
    async with chat_socket(
        proxied_app, "/ws/chat/sales/", origin=f"https://{API_HOST}", headers=headers
    ) as ws:
        assert await ws.expect_refused() == 400


# --- h2c upgrades behind the proxy (a live Hypercorn: it answers the 101 itself) ---------------


@pytest.fixture(scope="module")
def h2c_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    """Two live Hypercorns: behind a proxy (``TRUSTED_PROXY_HOPS=1``) and exposed directly."""
    base = tmp_path_factory.mktemp("h2c")
    behind, direct = start_hypercorns(
        [
            Hypercorn("behind", slyker_env(DATA_DIR=str(base / "b"), TRUSTED_PROXY_HOPS="1")),
            Hypercorn("direct", slyker_env(DATA_DIR=str(base / "d"))),
        ],
        base,
    )
    try:
        yield {"behind": behind, "direct": direct}
    finally:
        behind.stop()
        direct.stop()


H2C_STREAMS = [H2Request("/ready/"), H2Request("/health/", {"x-forwarded-for": "9.9.9.9"})]


@pytest.mark.parametrize("pipelined", [False, True], ids=["after-101", "pipelined"])
def test_behind_a_proxy_every_request_of_an_h2c_tunnel_is_refused(
    h2c_servers: dict[str, LiveServer], pipelined: bool
) -> None:
    """Hypercorn answers 101 before the app is called; the app refuses the upgraded request
    and every later stream on that connection (even streams sent with the upgrade request,
    racing it), so a proxy that relays the upgrade opens no tunnel to the API."""
    server = h2c_servers["behind"]
    for _round in range(3):
        with socket.create_connection((HOST, server.port), timeout=5.0) as sock:
            result = h2c_upgrade(sock, HOST, "/health/", then=H2C_STREAMS, pipelined=pipelined)
        assert result.upgrade_status == 101, result.upgrade_head
        assert sorted(result.responses) == [1, 3, 5], server.log()
        for stream, response in result.responses.items():
            assert response.status == 400, (stream, response, server.log())
            assert json.loads(response.body)["code"] == "h2c_refused", server.log()


def test_an_h2c_upgrade_with_a_body_is_refused_behind_a_proxy(
    h2c_servers: dict[str, LiveServer],
) -> None:
    """With a body Hypercorn keeps HTTP/1.1 (no 101): the request itself is refused."""
    server = h2c_servers["behind"]
    connection = http.client.HTTPConnection(HOST, server.port, timeout=5.0)
    try:
        connection.request(
            "POST",
            "/api/token/",
            body=b"{}",
            headers={"Content-Type": "application/json", "Upgrade": "h2c", "Connection": "Upgrade"},
        )
        response = connection.getresponse()
        assert response.status == 400
        assert json.loads(response.read())["code"] == "h2c_refused"
    finally:
        connection.close()


def test_without_a_proxy_h2c_stays_available(h2c_servers: dict[str, LiveServer]) -> None:
    """Exposed directly, the client is who it says it is (X-Forwarded-For is not trusted):
    cleartext HTTP/2 by upgrade keeps working (README "Serving")."""
    server = h2c_servers["direct"]
    with socket.create_connection((HOST, server.port), timeout=5.0) as sock:
        result = h2c_upgrade(sock, HOST, "/health/", then=H2C_STREAMS)
    assert result.upgrade_status == 101
    assert [result.responses[stream].status for stream in (1, 3, 5)] == [200, 200, 200]


@pytest.mark.parametrize(
    ("headers", "asks"),
    [
        ([(b"upgrade", b"h2c")], True),
        ([(b"Upgrade", b"websocket, H2C")], True),
        ([(b"upgrade", b"websocket")], False),
        ([(b"http2-settings", b"AAMAAABkAAQAAP__")], False),
        ([], False),
    ],
)
def test_asks_for_h2c(headers: list[tuple[bytes, bytes]], asks: bool) -> None:
    assert asks_for_h2c(headers) is asks
