"""The production proxy, for real: Debian's nginx running the committed ``docker/nginx.conf``
(a test copy with ports, certificate, upstream and pid/log/temp paths rewritten by text
substitution — the table is in ``tests/live_nginx.py``) on loopback, over TLS, in front of a
live Hypercorn serving the contract app (the real app plus probe routes, also mounted under
``/api/_probe/`` because nginx only proxies the API's paths).

What the old deployment got wrong, checked on the raw header lines a client receives:

1. Proxied responses carry exactly the app's CORS headers — one ``Access-Control-Allow-Origin``
   on a 200, an app 404, an app 500 and an app 503 — and a preflight is the app's (nginx adds
   nothing); over HTTP/2 too.
2. Responses nginx makes itself — the API down (502), too slow (504), an unknown path (404), a
   body over ``client_max_body_size`` (413) — are slyker's JSON error with CORS headers for an
   allowed origin and none for any other.
3. WebSocket chat crosses the proxy (``/ws/chat/`` and ``/livechat/ws/``) with the app
   trusting nginx's X-Forwarded-* as in production (``TRUSTED_PROXY_HOPS=1``; the TLS
   listener's ``X-Forwarded-Proto: https`` once made every handshake a 400): the greeting
   arrives, the API's own origin passes the same-host rule on the Host nginx forwards, and a
   foreign origin is refused at the handshake with the app's 403.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from slyker.errors import SERVER_ERROR_MESSAGE
from tests.contract_app import ALLOWED_ORIGIN, SECRET_MARKER
from tests.cors_contract import ALLOWED_CLASSES, ORIGIN_CLASSES
from tests.h2c_client import H2Request, h2c_upgrade
from tests.live_nginx import (
    API_PROBE_PREFIX,
    HOST,
    PRODUCTION_PROXY_SETTINGS,
    Nginx,
    SilentUpstream,
    blocks,
    committed_config,
    free_port,
    make_certificate,
    nginx_map,
    start_nginx,
    start_upstream,
    unverified_context,
)
from tests.live_servers import RawResponse, assert_raw_cors_contract, fetch, send

ALLOWED = ALLOWED_ORIGIN
API_HOST = "api.slykertech.co.zw"  # the production server_name, sent as Host
DISALLOWED = "https://evil.example"
assert ORIGIN_CLASSES["disallowed"] == DISALLOWED
# Proxied responses come from the app, whose policy also has the regex entry.
APP_ORIGIN_CLASSES = ("allowed-exact", "allowed-regex", "disallowed", "missing")
# nginx's own errors use nginx's allow-list (exact production origins only).
NGINX_ORIGIN_CLASSES = ("allowed-exact", "disallowed", "missing")
SINGLE_HEADERS = (
    "Content-Type",
    "Content-Length",
    "X-Request-ID",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Expose-Headers",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Max-Age",
)
PREFLIGHT_HEADERS = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}
NGINX_MESSAGES = nginx_map(committed_config(), "$status", "$slyker_error_message")
FRAME_TIMEOUT = 5.0
AUTO_REPLY_MARK = "No sales agent is online"  # the default CHAT_AUTO_REPLY text
GREETING = "Connected to Slyker Tech Live Support"


# --- fixtures ----------------------------------------------------------------------------------


@dataclass
class Certificate:
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return Certificate(*make_certificate(tmp_path_factory.mktemp("nginx-cert")))


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, certificate: Certificate) -> Iterator[Nginx]:
    """nginx in front of a live Hypercorn that trusts it as production does
    (``TRUSTED_PROXY_HOPS=1``: scheme, client and host from nginx's X-Forwarded-*)."""
    base = tmp_path_factory.mktemp("nginx-proxy")
    upstream = start_upstream(base / "upstream", **PRODUCTION_PROXY_SETTINGS)
    try:
        server = start_nginx(
            "proxy",
            base,
            certificate.cert,
            certificate.key,
            upstream.port,
            upstream_log=upstream.log,
        )
        try:
            yield server
        finally:
            server.stop()
    finally:
        upstream.stop()


@pytest.fixture(scope="module")
def dead_proxy(
    tmp_path_factory: pytest.TempPathFactory, certificate: Certificate
) -> Iterator[Nginx]:
    """nginx whose upstream is a closed port: the API is down."""
    base = tmp_path_factory.mktemp("nginx-dead")
    server = start_nginx("dead", base, certificate.cert, certificate.key, free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def slow_proxy(
    tmp_path_factory: pytest.TempPathFactory, certificate: Certificate
) -> Iterator[Nginx]:
    """nginx whose upstream accepts nothing and answers nothing, with a 1 s read timeout."""
    base = tmp_path_factory.mktemp("nginx-slow")
    silent = SilentUpstream()
    try:
        server = start_nginx(
            "slow", base, certificate.cert, certificate.key, silent.port, slow_read_timeout=True
        )
        try:
            yield server
        finally:
            server.stop()
    finally:
        silent.close()


# --- raw HTTPS ---------------------------------------------------------------------------------


def describe(response: RawResponse, server: Nginx) -> str:
    return f"{response.describe()}\n{server.log()}"


def assert_contract(
    response: RawResponse, origin_class: str, server: Nginx, *, preflight: bool = False
) -> None:
    assert_raw_cors_contract(
        response,
        origin_class,
        SINGLE_HEADERS,
        lambda: describe(response, server),
        preflight=preflight,
    )


def assert_nginx_error(response: RawResponse, status: int, code: str, server: Nginx) -> None:
    """The JSON error nginx makes itself (not one the app sent)."""
    assert response.status == status, describe(response, server)
    assert response.values("Server") == ["nginx"], describe(response, server)
    payload = response.json()
    assert payload == {
        "error": NGINX_MESSAGES[str(status)],
        "detail": NGINX_MESSAGES[str(status)],
        "status": status,
        "code": code,
    }, describe(response, server)
    assert response.values("Cache-Control") == ["no-store"], describe(response, server)


# --- 1. proxied responses: the app's CORS headers, once ----------------------------------------


def expect_ok(response: RawResponse, server: Nginx) -> None:
    assert response.json() == {"ok": True}, describe(response, server)


def expect_app_not_found(response: RawResponse, server: Nginx) -> None:
    payload = response.json()
    assert payload["code"] == "not_found", describe(response, server)
    assert payload["error"] != NGINX_MESSAGES["404"], "nginx answered, not the app" + describe(
        response, server
    )


def expect_server_error(response: RawResponse, server: Nginx) -> None:
    payload = response.json()
    assert payload["error"] == SERVER_ERROR_MESSAGE, describe(response, server)
    for leak in (b"Traceback", b"RuntimeError", SECRET_MARKER.encode()):
        assert leak not in response.body, describe(response, server)


def expect_app_unavailable(response: RawResponse, server: Nginx) -> None:
    # proxy_intercept_errors is off: the app's own 503 passes through, not nginx's page.
    assert response.json()["error"] != NGINX_MESSAGES["503"], describe(response, server)


def expect_app_redirect(response: RawResponse, server: Nginx) -> None:
    # The app's strict-slash redirect (not nginx's 301 for a bare prefix location), its
    # http:// (the app is reached over plain http) turned into https:// by proxy_redirect.
    location = response.values("Location")
    assert location == [f"https://{API_HOST}/health/"], describe(response, server)


PROXIED_CASES = {
    "ok": ("GET", f"{API_PROBE_PREFIX}/ok/", 200, expect_ok),
    "app-redirect": ("GET", "/health", 308, expect_app_redirect),
    "app-404": ("GET", f"{API_PROBE_PREFIX}/nope/", 404, expect_app_not_found),
    "app-500": ("GET", f"{API_PROBE_PREFIX}/crash/", 500, expect_server_error),
    "app-503": ("GET", f"{API_PROBE_PREFIX}/status/503/", 503, expect_app_unavailable),
}


@pytest.mark.parametrize("origin_class", APP_ORIGIN_CLASSES)
@pytest.mark.parametrize("case", list(PROXIED_CASES))
def test_proxied_response_has_the_apps_cors_headers_once(
    proxy: Nginx, case: str, origin_class: str
) -> None:
    method, path, status, check = PROXIED_CASES[case]
    response = fetch(proxy, method, path, ORIGIN_CLASSES[origin_class], {"Host": API_HOST})
    assert response.status == status, describe(response, proxy)
    assert_contract(response, origin_class, proxy)
    if origin_class in ALLOWED_CLASSES:
        # The app's Expose-Headers (CORS_EXPOSE_HEADERS=X-Cart-Token), not nginx's.
        expose = response.values("Access-Control-Expose-Headers")[0].lower()
        assert "x-cart-token" in expose, describe(response, proxy)
    check(response, proxy)


@pytest.mark.parametrize("origin_class", ("allowed-exact", "allowed-regex", "disallowed"))
def test_preflight_through_the_proxy_is_the_apps(proxy: Nginx, origin_class: str) -> None:
    response = fetch(
        proxy, "OPTIONS", "/api/anything/", ORIGIN_CLASSES[origin_class], PREFLIGHT_HEADERS
    )
    assert_contract(response, origin_class, proxy, preflight=True)
    if origin_class in ALLOWED_CLASSES:
        assert response.status == 204, describe(response, proxy)
        methods = response.values("Access-Control-Allow-Methods")[0].upper()
        assert "POST" in methods, describe(response, proxy)
    else:
        assert response.status == 403, describe(response, proxy)


def test_keep_alive_connection_through_the_proxy(proxy: Nginx) -> None:
    """Many exchanges on one client connection (and nginx's upstream keep-alive pool): no
    header leaks from one response into the next."""
    connection = proxy.connect()
    try:
        for _round in range(3):
            for case in PROXIED_CASES.values():
                method, path, status, _check = case
                response = send(connection, method, path, ALLOWED)
                assert response.status == status, describe(response, proxy)
                assert_contract(response, "allowed-exact", proxy)
                response = send(connection, "OPTIONS", path, ALLOWED, PREFLIGHT_HEADERS)
                assert_contract(response, "allowed-exact", proxy, preflight=True)
    finally:
        connection.close()


def test_health_and_ready_are_proxied(proxy: Nginx) -> None:
    health = fetch(proxy, "GET", "/health/", None)
    assert health.status == 200, describe(health, proxy)
    assert health.json()["status"] == "healthy", describe(health, proxy)
    ready = fetch(proxy, "GET", "/ready/", ALLOWED)
    assert ready.status == 200, describe(ready, proxy)
    assert ready.json()["checks"]["database"] is True, describe(ready, proxy)
    assert_contract(ready, "allowed-exact", proxy)


def test_request_id_crosses_the_proxy(proxy: Nginx) -> None:
    response = fetch(proxy, "GET", f"{API_PROBE_PREFIX}/ok/", None, {"X-Request-ID": "rid-42.a"})
    assert response.values("X-Request-ID") == ["rid-42.a"], describe(response, proxy)


@pytest.mark.parametrize("path", [f"{API_PROBE_PREFIX}/ok/", f"{API_PROBE_PREFIX}/crash/"])
def test_http2_through_the_proxy(proxy: Nginx, path: str) -> None:
    with httpx.Client(
        http2=True, verify=unverified_context(), trust_env=False, timeout=5.0
    ) as client:
        response = client.get(proxy.base_url + path, headers={"Origin": ALLOWED})
    assert response.http_version == "HTTP/2"
    raw = RawResponse(
        "GET", path, response.status_code, response.headers.multi_items(), response.content
    )
    assert_contract(raw, "allowed-exact", proxy)


def test_plain_http_serves_the_health_check_and_redirects_to_https(proxy: Nginx) -> None:
    """Port 80: compose's nginx health check (``curl http://127.0.0.1/nginx-health``) and a
    redirect of everything else to https."""
    connection = http.client.HTTPConnection(HOST, proxy.ports.http, timeout=5.0)
    try:
        health = send(connection, "GET", "/nginx-health", None)
        assert (health.status, health.body) == (200, b"ok\n"), describe(health, proxy)
        moved = send(connection, "GET", "/api/x/?a=1", None, {"Host": API_HOST})
        assert moved.status == 308, describe(moved, proxy)
        assert moved.values("Location") == [f"https://{API_HOST}/api/x/?a=1"]
    finally:
        connection.close()


# --- 2. responses nginx makes itself: JSON, CORS for the allow-list only ------------------------


@pytest.mark.parametrize("origin_class", NGINX_ORIGIN_CLASSES)
@pytest.mark.parametrize("path", ["/api/_probe/ok/", "/health/", "/ws/chat/sales/"])
def test_api_down_is_a_json_502_with_cors_for_allowed_origins(
    dead_proxy: Nginx, path: str, origin_class: str
) -> None:
    response = fetch(dead_proxy, "GET", path, ORIGIN_CLASSES[origin_class])
    assert_nginx_error(response, 502, "bad_gateway", dead_proxy)
    assert_contract(response, origin_class, dead_proxy)


def test_api_down_502_keeps_the_request_id(dead_proxy: Nginx) -> None:
    response = fetch(dead_proxy, "GET", "/api/x/", ALLOWED, {"X-Request-ID": "rid-502"})
    assert response.values("X-Request-ID") == ["rid-502"], describe(response, dead_proxy)


def test_api_down_preflight_gets_the_502_with_cors(dead_proxy: Nginx) -> None:
    """Not a 204: nginx does not copy the app's preflight policy. The browser fails a preflight
    that is not 2xx, so a preflighted call still errors while the API is down (README)."""
    response = fetch(dead_proxy, "OPTIONS", "/api/x/", ALLOWED, PREFLIGHT_HEADERS)
    assert_nginx_error(response, 502, "bad_gateway", dead_proxy)
    assert response.values("Access-Control-Allow-Origin") == [ALLOWED]
    assert response.values("Access-Control-Allow-Methods") == []


@pytest.mark.parametrize("origin_class", NGINX_ORIGIN_CLASSES)
def test_api_too_slow_is_a_json_504(slow_proxy: Nginx, origin_class: str) -> None:
    response = fetch(slow_proxy, "GET", "/api/x/", ORIGIN_CLASSES[origin_class])
    assert_nginx_error(response, 504, "gateway_timeout", slow_proxy)
    assert_contract(response, origin_class, slow_proxy)


@pytest.mark.parametrize("origin_class", NGINX_ORIGIN_CLASSES)
@pytest.mark.parametrize(
    "path", ["/", "/_probe/ok/", "/apis/", "/livechat/", "/_slyker_nginx_error", "/nginx-health"]
)
def test_unknown_path_is_nginxs_json_404(proxy: Nginx, path: str, origin_class: str) -> None:
    response = fetch(proxy, "GET", path, ORIGIN_CLASSES[origin_class])
    assert_nginx_error(response, 404, "not_found", proxy)
    assert_contract(response, origin_class, proxy)


@pytest.mark.parametrize("origin_class", NGINX_ORIGIN_CLASSES)
def test_body_over_client_max_body_size_is_a_json_413(proxy: Nginx, origin_class: str) -> None:
    """Refused on the Content-Length alone, before any byte of the body (HTTP/1.1)."""
    connection = proxy.connect()
    try:
        connection.putrequest("POST", f"{API_PROBE_PREFIX}/items/")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(64 * 1024 * 1024))
        origin = ORIGIN_CLASSES[origin_class]
        if origin is not None:
            connection.putheader("Origin", origin)
        connection.endheaders()
        raw = connection.getresponse()
        response = RawResponse(
            "POST", "/api/_probe/items/", raw.status, raw.getheaders(), raw.read()
        )
    finally:
        connection.close()
    assert_nginx_error(response, 413, "payload_too_large", proxy)
    assert_contract(response, origin_class, proxy)


# --- 3. WebSocket chat through the proxy -------------------------------------------------------


async def _frame(ws: Any) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT)
    frame = json.loads(message)
    assert isinstance(frame, dict), frame
    return frame


def chat_connection(proxy: Nginx, path: str, origin: str, *, as_api_host: bool = False) -> Any:
    """A WebSocket client through nginx's TLS listener. ``as_api_host``: addressed as
    ``wss://api.slykertech.co.zw/...`` (``Host: api.slykertech.co.zw``, what a browser sends to
    the production port 443) while the TCP connection goes to the test's nginx port."""
    if as_api_host:
        return connect(
            f"wss://{API_HOST}{path}",
            host=HOST,
            port=proxy.ports.tls,
            origin=Origin(origin),
            ssl=unverified_context(),
            proxy=None,
            open_timeout=FRAME_TIMEOUT,
            close_timeout=2,
        )
    return connect(
        proxy.ws_url + path,
        origin=Origin(origin),
        ssl=unverified_context(),
        proxy=None,
        open_timeout=FRAME_TIMEOUT,
        close_timeout=2,
    )


async def assert_greeted(ws: Any, proxy: Nginx) -> None:
    """The two opening frames of a visitor socket: connection_established, the greeting."""
    first = await _frame(ws)
    assert first["type"] == "connection_established", f"{first}\n{proxy.log()}"
    assert first["room"] == "sales", f"{first}\n{proxy.log()}"
    greeting = await _frame(ws)
    assert greeting == {"type": "system", "message": first["message"]}, proxy.log()
    assert greeting["message"] == GREETING, proxy.log()


@pytest.mark.parametrize("path", ["/ws/chat/sales/", "/livechat/ws/sales/"])
async def test_websocket_chat_through_the_proxy(proxy: Nginx, path: str) -> None:
    """nginx's TLS listener sends X-Forwarded-Proto: https; the app trusts it (one hop) and
    the handshake's scope is wss (it was https, and every handshake got 400)."""
    async with chat_connection(proxy, path, ALLOWED) as ws:
        await assert_greeted(ws, proxy)
        await ws.send(json.dumps({"type": "message", "message": "Hello through nginx"}))
        seen = []
        async with asyncio.timeout(FRAME_TIMEOUT * 2):
            while True:
                frame = await _frame(ws)
                seen.append(frame)
                if AUTO_REPLY_MARK in json.dumps(frame):
                    break
        assert seen, proxy.log()


async def test_websocket_from_the_api_host_itself_through_the_proxy(proxy: Nginx) -> None:
    """The same-host rule behind nginx: origin ``https://api.slykertech.co.zw`` against the
    Host nginx forwards (``$host``, in X-Forwarded-Host too: no port, i.e. 443 for https)."""
    async with chat_connection(
        proxy, "/ws/chat/sales/", f"https://{API_HOST}", as_api_host=True
    ) as ws:
        await assert_greeted(ws, proxy)


@pytest.mark.parametrize(
    ("origin", "as_api_host"),
    [
        (DISALLOWED, False),
        (DISALLOWED, True),
        (f"https://{API_HOST}:8443", True),  # the API's host on another port
        (f"http://{API_HOST}", True),  # the API's host over plain http
    ],
    ids=["foreign", "foreign-as-api-host", "api-host-other-port", "api-host-plain-http"],
)
async def test_websocket_from_a_foreign_origin_is_refused_through_the_proxy(
    proxy: Nginx, origin: str, as_api_host: bool
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with chat_connection(proxy, "/ws/chat/sales/", origin, as_api_host=as_api_host):
            pass
    response = refused.value.response
    assert response.status_code == 403, proxy.log()
    assert "Access-Control-Allow-Origin" not in response.headers, proxy.log()


# --- 4. the edge: no h2c tunnel, no foreign Host, no secret in the access log -------------------


def tls_socket(proxy: Nginx) -> ssl.SSLSocket:
    sock = socket.create_connection((HOST, proxy.ports.tls), timeout=FRAME_TIMEOUT)
    return unverified_context().wrap_socket(sock, server_hostname="localhost")


def proxy_header_lines(location_body: str) -> dict[str, str]:
    return dict(re.findall(r"proxy_set_header\s+(\S+)\s+([^;]+);", location_body))


def test_only_the_websocket_location_forwards_upgrade_and_only_websocket() -> None:
    text = committed_config()
    (server,) = [body for body in blocks(text, "server") if "listen 443" in body]
    server_level = proxy_header_lines(re.sub(r"location[^{]*\{[^}]*\}", "", server))
    assert "Upgrade" not in server_level
    assert server_level["Connection"] == '""'
    (websocket,) = blocks(text, "location ~ ^/(ws|livechat/ws)(/|$)")
    in_websocket = proxy_header_lines(websocket)
    # A location with its own proxy_set_header loses the server's: it repeats every one.
    assert in_websocket == {
        **server_level,
        "Upgrade": "$slyker_websocket_upgrade",
        "Connection": "$slyker_websocket_connection",
    }
    assert nginx_map(text, "$http_upgrade", "$slyker_websocket_upgrade") == {
        "default": "",
        "~*^websocket$": "websocket",
    }
    for location, body in (("api", blocks(text, "location ~ ^/(api|health|ready)(/|$)")[0]),):
        assert "proxy_set_header" not in body, location


@pytest.mark.parametrize("path", ["/health/", f"{API_PROBE_PREFIX}/ok/", "/ws/chat/sales/"])
def test_an_h2c_upgrade_is_not_relayed(proxy: Nginx, path: str) -> None:
    """The attack: ``Upgrade: h2c`` made Hypercorn answer 101 and nginx a raw tunnel, through
    which /openapi.json (blocked by nginx) answered. Now nginx never forwards it."""
    with tls_socket(proxy) as sock:
        result = h2c_upgrade(
            sock, API_HOST, path, then=[H2Request("/openapi.json"), H2Request("/docs")]
        )
    assert result.upgrade_status != 101, f"{result.upgrade_head!r}\n{proxy.log()}"
    assert result.responses == {}, proxy.log()
    for blocked in ("/openapi.json", "/docs", "/redocs"):
        response = fetch(proxy, "GET", blocked, None)
        assert_nginx_error(response, 404, "not_found", proxy)


def login_attempt(proxy: Nginx, email: str, password: str, forwarded_for: str) -> int:
    """The attacker's login attempt: through an h2c tunnel if nginx relays one (the app then
    trusts the client's own X-Forwarded-For), else as a plain request through nginx."""
    body = json.dumps({"email": email, "password": password}).encode()
    headers = {"Content-Type": "application/json", "X-Forwarded-For": forwarded_for}
    with tls_socket(proxy) as sock:
        tunnel = h2c_upgrade(
            sock, API_HOST, "/health/", then=[H2Request("/api/token/", headers, "POST", body)]
        )
    if tunnel.upgrade_status == 101:
        return tunnel.responses[3].status
    return fetch(proxy, "POST", "/api/token/", None, headers, body).status


def test_forwarded_for_from_the_client_does_not_defeat_the_login_limit(proxy: Nginx) -> None:
    """15 wrong passwords, each with a new X-Forwarded-For: the limit (10 a minute per
    address) applies to nginx's peer address, and the right password afterwards is refused
    too. Through the old h2c tunnel every attempt counted for a new address: no 429, then 200."""
    email, password = "edge-login@example.com", "Tunnel-proof-passw0rd"
    registered = fetch(
        proxy,
        "POST",
        "/api/accounts/register/",
        None,
        {"Content-Type": "application/json"},
        json.dumps({"email": email, "password": password}).encode(),
    )
    assert registered.status == 201, describe(registered, proxy)
    statuses = [
        login_attempt(proxy, email, f"wrong-{attempt}", f"198.51.100.{attempt + 1}")
        for attempt in range(15)
    ]
    assert statuses[-1] == 429, f"{statuses}\n{proxy.log()}"
    assert login_attempt(proxy, email, password, "192.0.2.200") == 429, proxy.log()


@pytest.mark.parametrize("path", ["/health", f"{API_PROBE_PREFIX}/ok/", "/api/billing/services/"])
def test_a_foreign_host_is_refused_through_the_proxy(proxy: Nginx, path: str) -> None:
    response = fetch(proxy, "GET", path, ALLOWED, {"Host": "evil.example"})
    assert response.status == 400, describe(response, proxy)
    assert response.json()["code"] == "host_not_allowed", describe(response, proxy)
    assert not response.values("Location"), describe(response, proxy)
    assert b"evil.example" not in response.body, describe(response, proxy)
    assert_contract(response, "allowed-exact", proxy)


def test_the_access_log_has_the_path_without_the_query(proxy: Nginx) -> None:
    secret = "staff-token-that-must-not-be-logged"
    fetch(proxy, "GET", f"/ws/chat/agents/?token={secret}", None)
    fetch(proxy, "GET", f"{API_PROBE_PREFIX}/ok/?token={secret}", None)
    deadline = time.monotonic() + FRAME_TIMEOUT
    access = proxy.directory / "access.log"
    while time.monotonic() < deadline and f"{API_PROBE_PREFIX}/ok/ " not in access.read_text():
        time.sleep(0.05)
    text = access.read_text()
    assert f'"GET {API_PROBE_PREFIX}/ok/ HTTP/1.1"' in text, proxy.log()
    assert '"GET /ws/chat/agents/ HTTP/1.1"' in text, proxy.log()
    assert secret not in text, proxy.log()
