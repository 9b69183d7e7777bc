"""The CORS contract against a real Hypercorn on a loopback port, read from raw headers.

The in-process tests go through Quart's test client, which never runs Hypercorn's own
HTTP/1.1 handling; here every request crosses a real socket and ``getheaders()`` keeps each
header line the server wrote, so a duplicated CORS header, a second ``Vary: Origin`` or a
crash answered without headers fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from slyker.errors import SERVER_ERROR_MESSAGE
from tests.contract_app import SECRET_MARKER
from tests.cors_contract import ALLOWED_CLASSES, ORIGIN_CLASSES
from tests.live_servers import (
    Hypercorn,
    LiveServer,
    RawResponse,
    assert_raw_cors_contract,
    child_env,
    fetch,
    send,
    start_hypercorn,
)

APP_PATH = "tests.contract_app:create_contract_app()"

ORIGINS = {
    name: ORIGIN_CLASSES[name]
    for name in ("allowed-exact", "allowed-regex", "disallowed", "missing")
}
# Headers a response must never carry twice (Vary may be split over several lines).
SINGLE_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Location",
    "Retry-After",
    "X-Request-ID",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Expose-Headers",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Max-Age",
)


# --- the server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("hypercorn-live")
    env = child_env(DATA_DIR=str(base / "data"))
    server = start_hypercorn(Hypercorn("server", env, APP_PATH), base)
    try:
        yield server
    finally:
        server.stop()


# --- raw HTTP ----------------------------------------------------------------------------


def list_items(values: list[str]) -> list[str]:
    """Every comma-separated item of every value, trimmed and lower-cased."""
    return [item.strip().lower() for value in values for item in value.split(",") if item.strip()]


def describe(response: RawResponse, server: LiveServer) -> str:
    """Everything needed to diagnose a failure: the raw exchange and the server's log."""
    return f"{response.describe()}\n  server log (tail):\n{server.log()}"


# --- the contract ------------------------------------------------------------------------


def assert_contract(
    response: RawResponse, origin_class: str, server: LiveServer, *, preflight: bool = False
) -> None:
    """The shared contract on the raw header lines, plus what only a real server can break."""
    assert_raw_cors_contract(
        response,
        origin_class,
        SINGLE_HEADERS,
        lambda: describe(response, server),
        preflight=preflight,
    )
    if preflight and origin_class in ALLOWED_CLASSES:
        assert response.status == 204, describe(response, server)
        assert "post" in list_items(response.values("Access-Control-Allow-Methods"))
        allowed_headers = list_items(response.values("Access-Control-Allow-Headers"))
        assert {"authorization", "content-type"} <= set(allowed_headers), describe(response, server)
    elif preflight:
        assert response.status == 403, describe(response, server)


def expect_generic_server_error(response: RawResponse, server: LiveServer) -> None:
    payload = response.json()
    assert payload["error"] == SERVER_ERROR_MESSAGE, describe(response, server)
    assert payload["code"] == "server_error", describe(response, server)
    for leak in (b"Traceback", b"RuntimeError", SECRET_MARKER.encode()):
        assert leak not in response.body, describe(response, server)


def expect_redirect(response: RawResponse, server: LiveServer) -> None:
    location = response.values("Location")
    assert len(location) == 1, describe(response, server)
    assert location[0].endswith("/_probe/ok/"), describe(response, server)


def expect_retry_after(response: RawResponse, server: LiveServer) -> None:
    assert response.values("Retry-After") == ["7"], describe(response, server)


def expect_not_found(response: RawResponse, server: LiveServer) -> None:
    assert response.json()["code"] == "not_found", describe(response, server)


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    status: int
    # The CSRF check refuses unsafe requests from a foreign origin before any view runs.
    disallowed_status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    check: Callable[[RawResponse, LiveServer], None] | None = None

    def refused(self, origin_class: str) -> bool:
        return origin_class == "disallowed" and self.disallowed_status is not None

    def expected_status(self, origin_class: str) -> int:
        if self.refused(origin_class):
            assert self.disallowed_status is not None
            return self.disallowed_status
        return self.status


JSON = {"Content-Type": "application/json"}
CASES = (
    Case("ok", "GET", "/_probe/ok/", 200),
    Case("strict-slash-redirect", "GET", "/_probe/ok", 308, check=expect_redirect),
    Case("not-found", "GET", "/nope/", 404, check=expect_not_found),
    Case("bad-json", "POST", "/_probe/items/", 400, 403, JSON, b"{bad json"),
    Case(
        "not-json",
        "POST",
        "/_probe/items/",
        415,
        403,
        {"Content-Type": "text/plain"},
        b'{"name": "x", "quantity": 1}',
    ),
    Case("rate-limited", "GET", "/_probe/status/429/", 429, check=expect_retry_after),
    Case("crash", "GET", "/_probe/crash/", 500, check=expect_generic_server_error),
    Case(
        "crash-in-after-request",
        "GET",
        "/_probe/crash-in-after-request/",
        500,
        check=expect_generic_server_error,
    ),
)
PREFLIGHT_HEADERS = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.mark.parametrize("origin_class", list(ORIGINS))
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_live_response_keeps_the_cors_promise(
    live_server: LiveServer, case: Case, origin_class: str
) -> None:
    response = fetch(
        live_server, case.method, case.path, ORIGINS[origin_class], case.headers, case.body
    )
    assert response.status == case.expected_status(origin_class), describe(response, live_server)
    assert_contract(response, origin_class, live_server)
    if case.refused(origin_class):
        assert response.json()["code"] == "csrf_failed", describe(response, live_server)
    elif case.check is not None:
        case.check(response, live_server)


@pytest.mark.parametrize("origin_class", [name for name in ORIGINS if ORIGINS[name] is not None])
def test_live_preflight(live_server: LiveServer, origin_class: str) -> None:
    response = fetch(
        live_server, "OPTIONS", "/api/anything/", ORIGINS[origin_class], PREFLIGHT_HEADERS
    )
    assert_contract(response, origin_class, live_server, preflight=True)


@pytest.mark.parametrize("origin_class", list(ORIGINS))
def test_live_keep_alive_connection(live_server: LiveServer, origin_class: str) -> None:
    """Several exchanges on one HTTP/1.1 connection: no header leaks into the next one."""
    origin = ORIGINS[origin_class]
    connection = live_server.connect()
    try:
        local_ports: set[int] = set()
        # Refusals (415, the CSRF 403) included: slyker reads the body before refusing, since
        # Hypercorn drops a keep-alive connection whose request body was left unread.
        for case in CASES:
            response = send(connection, case.method, case.path, origin, case.headers, case.body)
            assert response.status == case.expected_status(origin_class), describe(
                response, live_server
            )
            assert connection.sock is not None, "server closed the connection" + describe(
                response, live_server
            )
            local_ports.add(connection.sock.getsockname()[1])
            assert_contract(response, origin_class, live_server)
            if origin is not None:
                response = send(connection, "OPTIONS", "/api/anything/", origin, PREFLIGHT_HEADERS)
                assert connection.sock is not None, "server closed the connection" + describe(
                    response, live_server
                )
                local_ports.add(connection.sock.getsockname()[1])
                assert_contract(response, origin_class, live_server, preflight=True)
        assert len(local_ports) == 1, f"the connection was not kept alive: {local_ports}"
    finally:
        connection.close()
