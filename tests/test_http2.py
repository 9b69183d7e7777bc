"""HTTP/2 against a real Hypercorn with TLS: the CORS contract is the same as over HTTP/1.1.

Hypercorn runs with ``hypercorn.toml`` (the committed file, only the binds overridden) and a
self-signed certificate made here, serving the contract app on two loopback sockets: TLS,
where ALPN picks ``h2`` or ``http/1.1``, and plain HTTP, where h2c with prior knowledge works
as a proxy in front would use it. Every case is sent over HTTP/2 and over HTTP/1.1 to the same
server and must give the same status, the same CORS headers and the same body. WebSockets
over HTTP/2 (RFC 8441, extended CONNECT) are driven with ``h2`` and ``wsproto`` directly,
since httpx and websockets only speak them over HTTP/1.1.

The certificate and the processes come from ``tests/live_servers.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
import websockets.exceptions
import websockets.sync.client
from hypercorn.config import Config
from websockets.typing import Origin
from wsproto.frame_protocol import FrameProtocol, Opcode

from tests.cors_contract import ORIGIN_CLASSES, assert_cors_contract, vary_items
from tests.live_servers import (
    HOST,
    REPO_ROOT,
    SOCKET_TIMEOUT,
    Hypercorn,
    LiveServer,
    child_env,
    make_certificate,
    migrate,
    start_hypercorn,
    unverified_tls,
)

CONFIG_PATH = REPO_ROOT / "hypercorn.toml"
CONTRACT_APP = "tests.contract_app:create_contract_app()"
LOG_WAIT = 5.0


# --- the server of this module ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("http2")
    env = child_env(DATA_DIR=str(base / "data"))
    migrate(env)
    spec = Hypercorn(
        "hypercorn",
        env,
        CONTRACT_APP,
        args=("--config", str(CONFIG_PATH)),
        tls=make_certificate(base),
    )
    hypercorn = start_hypercorn(spec, base)
    try:
        yield hypercorn
    finally:
        hypercorn.stop()


# --- the configuration --------------------------------------------------------------------


def test_hypercorn_toml_is_valid_for_development_and_production() -> None:
    """Hypercorn silently ignores an unknown key: every key must be a Config attribute."""
    raw = tomllib.loads(CONFIG_PATH.read_text())
    unknown = sorted(key for key in raw if not hasattr(Config, key))
    assert unknown == [], f"hypercorn.toml keys Hypercorn does not know: {unknown}"
    config = Config.from_toml(CONFIG_PATH)
    assert config.bind == ["127.0.0.1:8000"] and config.workers == 1  # ./dev run
    assert config.certfile is None and config.keyfile is None  # TLS is opted into
    assert config.alpn_protocols == ["h2", "http/1.1"]
    assert "%({x-request-id}o)s" in config.access_log_format
    assert config.accesslog == "-"
    # nginx's upstream keepalive_timeout (60 s) < keep-alive < read timeout: the proxy
    # always closes an idle upstream connection first.
    assert config.read_timeout is not None
    assert 60 < config.keep_alive_timeout < config.read_timeout
    assert config.graceful_timeout > 0


# --- TLS + ALPN ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "selected"),
    [(["h2", "http/1.1"], "h2"), (["http/1.1", "h2"], "h2"), (["http/1.1"], "http/1.1")],
)
def test_alpn_prefers_h2(server: LiveServer, offered: list[str], selected: str) -> None:
    with (
        socket.create_connection((HOST, server.port), timeout=SOCKET_TIMEOUT) as raw,
        unverified_tls(offered).wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        assert tls.selected_alpn_protocol() == selected


# --- the contract over HTTP/2 and HTTP/1.1 ------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    preflight: bool = False


PREFLIGHT = (
    ("Access-Control-Request-Method", "POST"),
    ("Access-Control-Request-Headers", "authorization, content-type"),
)
CASES = (
    Case("preflight", "OPTIONS", "/api/billing/carts/current/", PREFLIGHT, preflight=True),
    Case("ok", "GET", "/_probe/ok/"),
    Case("not-found", "GET", "/nope/"),
    Case("crash", "GET", "/_probe/crash/"),
)
EXPECTED_STATUS = {
    ("preflight", "allowed-exact"): 204,
    ("preflight", "disallowed"): 403,
    ("ok", "allowed-exact"): 200,
    ("ok", "disallowed"): 200,
    ("not-found", "allowed-exact"): 404,
    ("not-found", "disallowed"): 404,
    ("crash", "allowed-exact"): 500,
    ("crash", "disallowed"): 500,
}
ORIGINS = ("allowed-exact", "disallowed")


def request_headers(case: Case, origin_class: str) -> dict[str, str]:
    headers = dict(case.headers)
    origin = ORIGIN_CLASSES[origin_class]
    if origin is not None:
        headers["Origin"] = origin
    return headers


def cors_view(response: httpx.Response) -> dict[str, object]:
    """What the CORS contract depends on, comparable between protocols."""
    headers = list(response.headers.multi_items())
    return {
        "status": response.status_code,
        "cors": sorted(
            (name.lower(), value)
            for name, value in headers
            if name.lower().startswith("access-control-")
        ),
        "vary": sorted(vary_items(headers)),
        "request-id lines": sum(1 for name, _ in headers if name.lower() == "x-request-id"),
        "content-type": response.headers.get("content-type"),
        "body": response.content,
    }


def describe(response: httpx.Response, server: LiveServer) -> str:
    lines = "\n".join(f"    {name}: {value}" for name, value in response.headers.multi_items())
    return (
        f"\n{response.request.method} {response.request.url} -> {response.http_version} "
        f"{response.status_code}\n{lines}\n  body: {response.content[:400]!r}\n"
        f"  server log (tail):\n{server.log()}"
    )


def check_contract(
    response: httpx.Response, case: Case, origin_class: str, server: LiveServer
) -> None:
    assert response.status_code == EXPECTED_STATUS[case.id, origin_class], describe(
        response, server
    )
    try:
        assert_cors_contract(
            origin_class,
            response.status_code,
            list(response.headers.multi_items()),
            response.content,
            method=case.method,
            preflight=case.preflight,
        )
    except AssertionError as error:
        pytest.fail(f"{error}{describe(response, server)}", pytrace=False)


@pytest.mark.parametrize("origin_class", ORIGINS)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_http2_keeps_the_contract_of_http1(
    server: LiveServer, case: Case, origin_class: str
) -> None:
    headers = request_headers(case, origin_class)
    async with (
        httpx.AsyncClient(http2=True, verify=False, timeout=SOCKET_TIMEOUT) as h2_client,
        httpx.AsyncClient(http1=True, http2=False, verify=False, timeout=SOCKET_TIMEOUT) as h1,
    ):
        over_h2 = await h2_client.request(case.method, server.base_url + case.path, headers=headers)
        over_h1 = await h1.request(case.method, server.base_url + case.path, headers=headers)
    assert over_h2.http_version == "HTTP/2", describe(over_h2, server)
    assert over_h1.http_version == "HTTP/1.1", describe(over_h1, server)
    check_contract(over_h2, case, origin_class, server)
    check_contract(over_h1, case, origin_class, server)
    assert cors_view(over_h2) == cors_view(over_h1), describe(over_h2, server) + describe(
        over_h1, server
    )


async def test_concurrent_streams_keep_their_own_cors_headers(server: LiveServer) -> None:
    """Many requests from different origins multiplexed on one HTTP/2 connection: each
    response carries the headers of its own request, nothing leaks between streams."""
    work = [(case, origin_class) for case in CASES for origin_class in ORIGINS] * 3
    async with httpx.AsyncClient(http2=True, verify=False, timeout=SOCKET_TIMEOUT) as client:
        first = await client.get(server.base_url + "/health/")  # opens the connection
        responses = await asyncio.gather(
            *(
                client.request(
                    case.method,
                    server.base_url + case.path,
                    headers=request_headers(case, origin_class),
                )
                for case, origin_class in work
            )
        )
    assert first.http_version == "HTTP/2"
    for response, (case, origin_class) in zip(responses, work, strict=True):
        assert response.http_version == "HTTP/2", describe(response, server)
        check_contract(response, case, origin_class, server)
    connections = {id(r.extensions["network_stream"]) for r in [first, *responses]}
    streams = {r.extensions["stream_id"] for r in [first, *responses]}
    assert len(connections) == 1, "the requests were not multiplexed on one connection"
    assert len(streams) == len(responses) + 1


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_h2c_prior_knowledge_for_a_proxy(server: LiveServer, case: Case) -> None:
    """The plain socket speaks HTTP/2 without TLS (h2c), as a proxy in front would use it."""
    headers = request_headers(case, "allowed-exact")
    async with httpx.AsyncClient(http1=False, http2=True, timeout=SOCKET_TIMEOUT) as client:
        response = await client.request(case.method, server.plain_url + case.path, headers=headers)
    assert response.http_version == "HTTP/2", describe(response, server)
    check_contract(response, case, "allowed-exact", server)


async def test_access_log_names_protocol_and_request_id(server: LiveServer) -> None:
    origin = ORIGIN_CLASSES["allowed-exact"]
    assert origin is not None
    async with httpx.AsyncClient(http2=True, verify=False, timeout=SOCKET_TIMEOUT) as client:
        response = await client.get(server.base_url + "/nope/", headers={"Origin": origin})
    request_id = response.headers["x-request-id"]
    expected = '"GET /nope/ 2" 404 '
    deadline = time.monotonic() + LOG_WAIT
    while time.monotonic() < deadline:
        lines = [line for line in server.log(200_000).splitlines() if f"rid={request_id}" in line]
        if lines:
            assert expected in lines[0], lines[0]
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"no access log line with rid={request_id}:\n{server.log()}", pytrace=False)


# --- WebSockets: RFC 8441 over HTTP/2, compared with HTTP/1.1 -------------------------------


@dataclass
class H2WebSocket:
    settings: dict[int, int]
    status: int
    headers: list[tuple[str, str]]
    messages: list[str]
    body: bytes


def h2_websocket(port: int, path: str, origin: str, messages: int = 2) -> H2WebSocket:
    """An extended CONNECT (``:protocol: websocket``) on a TLS HTTP/2 connection; reads
    ``messages`` text frames once the server answers 200, then closes (1000)."""
    deadline = time.monotonic() + SOCKET_TIMEOUT
    with (
        socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT) as raw,
        unverified_tls(["h2"]).wrap_socket(raw, server_hostname=HOST) as sock,
    ):
        assert sock.selected_alpn_protocol() == "h2"
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        settings: dict[int, int] = {}
        frames = FrameProtocol(client=True, extensions=[])
        result: H2WebSocket | None = None
        stream_id: int | None = None
        finished = False
        while not finished:
            assert time.monotonic() < deadline, "the HTTP/2 WebSocket exchange timed out"
            data = sock.recv(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.RemoteSettingsChanged) and stream_id is None:
                    settings = {int(k): v.new_value for k, v in event.changed_settings.items()}
                    stream_id = connection.get_next_available_stream_id()
                    connection.send_headers(
                        stream_id,
                        [
                            (":method", "CONNECT"),
                            (":protocol", "websocket"),
                            (":scheme", "https"),
                            (":path", path),
                            (":authority", f"{HOST}:{port}"),
                            ("sec-websocket-version", "13"),
                            ("origin", origin),
                        ],
                    )
                elif isinstance(event, h2.events.ResponseReceived):
                    headers = [(str(k), str(v)) for k, v in event.headers]
                    status = int(dict(headers)[":status"])
                    result = H2WebSocket(settings, status, headers, [], b"")
                elif isinstance(event, h2.events.DataReceived):
                    assert result is not None
                    connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                    if result.status != 200:
                        result.body += event.data
                        continue
                    frames.receive_bytes(event.data)
                    for frame in frames.received_frames():
                        if frame.opcode is Opcode.TEXT:
                            result.messages.append(str(frame.payload))
                    if len(result.messages) >= messages:
                        assert stream_id is not None
                        connection.send_data(stream_id, frames.close(1000, "done"))
                        finished = True
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    finished = True
            sock.sendall(connection.data_to_send())
        assert result is not None, "no response to the extended CONNECT"
        return result


def h1_websocket(port: int, path: str, origin: str) -> tuple[int, str | None]:
    """The same handshake over HTTP/1.1 (wss): (101, first message) or (refusal status, None)."""
    try:
        with websockets.sync.client.connect(
            f"wss://{HOST}:{port}{path}",
            origin=Origin(origin),
            ssl=unverified_tls(["http/1.1"]),
            open_timeout=SOCKET_TIMEOUT,
            close_timeout=SOCKET_TIMEOUT,
            proxy=None,
        ) as connection:
            message = connection.recv(timeout=SOCKET_TIMEOUT)
            assert connection.response is not None
            return connection.response.status_code, str(message)
    except websockets.exceptions.InvalidStatus as error:
        return error.response.status_code, None


def test_http2_websocket_from_allowed_origin(server: LiveServer) -> None:
    origin = ORIGIN_CLASSES["allowed-exact"]
    assert origin is not None
    over_h2 = h2_websocket(server.port, "/ws/chat/sales/", origin)
    # Hypercorn announces RFC 8441 and the limits of hypercorn.toml in its SETTINGS.
    config = Config.from_toml(CONFIG_PATH)
    assert over_h2.settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    assert over_h2.settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == (
        config.h2_max_concurrent_streams
    )
    assert over_h2.settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == (
        config.h2_max_header_list_size
    )
    assert over_h2.status == 200, (over_h2, server.log())
    greeting = json.loads(over_h2.messages[0])
    assert greeting["type"] == "connection_established" and greeting["room"] == "sales"
    status, message = h1_websocket(server.port, "/ws/chat/sales/", origin)
    assert status == 101
    assert message is not None and json.loads(message)["type"] == greeting["type"]


def test_http2_websocket_from_disallowed_origin_is_refused(server: LiveServer) -> None:
    origin = ORIGIN_CLASSES["disallowed"]
    assert origin is not None
    over_h2 = h2_websocket(server.port, "/ws/chat/sales/", origin)
    assert over_h2.status == 403, (over_h2, server.log())
    assert over_h2.messages == []
    assert not any(name.startswith("access-control-") for name, _ in over_h2.headers)
    assert json.loads(over_h2.body)["status"] == 403
    assert h1_websocket(server.port, "/ws/chat/sales/", origin) == (403, None)
