"""The Host check (slyker/hosts.py): a Host outside ALLOWED_HOSTS is refused before routing.

The attack: ``Host: evil.example`` made the strict-slash redirect answer ``308 Location:
http://evil.example/...`` and paginated lists link to evil.example.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from quart import Quart

from slyker.hosts import host_allowed, host_name
from tests.chat_client import chat_socket
from tests.conftest import prepare_database

API_HOST = "api.slykertech.co.zw"
ORIGIN = "http://localhost:3000"
REMOTE = {"client": ("203.0.113.9", 40000)}
LOOPBACK = {"client": ("127.0.0.1", 40000)}


@pytest.fixture
async def production(app_factory: Callable[..., Quart]) -> AsyncIterator[Quart]:
    app = app_factory(ALLOWED_HOSTS=f"{API_HOST},.slykertech.net")
    async with app.test_app():
        await prepare_database(app)
        yield app


async def get(app: Quart, path: str, host: str | None, client: dict[str, Any] = REMOTE) -> Any:
    headers = {"Origin": ORIGIN}
    if host is not None:
        headers["Host"] = host
    return await app.test_client().get(path, headers=headers, scope_base=client)


@pytest.mark.parametrize("path", ["/health", "/health/", "/api/services/hosting-products/"])
@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:443", f"{API_HOST}.evil.example", "slykertech.co.zw"]
)
async def test_a_foreign_host_is_refused_before_routing(
    production: Quart, path: str, host: str
) -> None:
    response = await get(production, path, host)
    assert response.status_code == 400
    body = await response.get_json()
    assert body["code"] == "host_not_allowed"
    assert body["status"] == 400 and body["error"] == body["detail"]
    assert "Location" not in response.headers
    assert b"evil" not in await response.get_data()
    # Like every error: CORS headers for an allowed origin, nosniff, a request id.
    assert response.headers.getlist("Access-Control-Allow-Origin") == [ORIGIN]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Request-ID"]


@pytest.mark.parametrize(
    "host",
    ["", "a b", "evil.example@api.slykertech.co.zw", "api.slykertech.co.zw:x", "évil.com"],
)
async def test_a_malformed_host_is_refused(production: Quart, host: str) -> None:
    response = await get(production, "/health/", host)
    assert response.status_code == 400
    assert (await response.get_json())["code"] == "host_not_allowed"


async def test_two_host_headers_are_refused(production: Quart) -> None:
    scope_headers = [(b"host", API_HOST.encode()), (b"host", b"evil.example")]
    response = await production.test_client().get(
        "/health/", scope_base={**REMOTE, "headers": scope_headers}
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "host",
    [API_HOST, f"{API_HOST}:443", "API.SlykerTech.co.zw", "slykertech.net", "x.slykertech.net"],
)
async def test_allowed_hosts_are_served(production: Quart, host: str) -> None:
    response = await get(production, "/health/", host)
    assert response.status_code == 200
    redirect = await get(production, "/health", host)
    assert redirect.status_code == 308
    assert redirect.headers["Location"].lower() == f"http://{host}/health/".lower()


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "[::1]:8000"])
async def test_the_container_health_check_is_served_on_loopback(
    production: Quart, host: str
) -> None:
    """The image's HEALTHCHECK calls http://127.0.0.1:8000/health/ from inside the container:
    a loopback Host from a loopback client passes whatever ALLOWED_HOSTS says."""
    response = await get(production, "/health/", host, LOOPBACK)
    assert response.status_code == 200
    refused = await get(production, "/health/", host, REMOTE)
    assert refused.status_code == 400


async def test_pagination_links_use_an_allowed_host_only(production: Quart) -> None:
    response = await get(production, "/api/services/hosting-products/?page=1", "evil.example")
    assert response.status_code == 400


async def test_a_websocket_handshake_with_a_foreign_host_is_refused(production: Quart) -> None:
    async with chat_socket(
        production,
        "/ws/chat/sales/",
        origin=f"https://{API_HOST}",
        headers={"Host": "evil.example"},
    ) as socket:
        assert await socket.expect_refused() == 400


async def test_without_allowed_hosts_only_the_machine_itself_is_served(
    app_factory: Callable[..., Quart],
) -> None:
    app = app_factory(ALLOWED_HOSTS="")
    async with app.test_app():
        assert (await get(app, "/health/", "127.0.0.1:8000", LOOPBACK)).status_code == 200
        assert (await get(app, "/health/", API_HOST, LOOPBACK)).status_code == 400
        assert (await get(app, "/health/", "localhost", REMOTE)).status_code == 400


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Api.Example.com:8443", "api.example.com"),
        ("[::1]:80", "[::1]"),
        ("10.0.0.1", "10.0.0.1"),
        (None, None),
        ("a_b.example", None),
        ("-a.example", None),
        ("host:123456", None),
    ],
)
def test_host_name(header: str | None, name: str | None) -> None:
    assert host_name(header) == name


def test_host_allowed_needs_a_known_client_for_loopback_names() -> None:
    assert host_allowed("localhost", (), None)  # an in-process client: unknown address
    assert host_allowed("127.0.0.1:8000", (), ("::1", 1))
    assert not host_allowed("127.0.0.1:8000", (), ("10.0.0.2", 1))
    assert not host_allowed("evil.example", (), ("127.0.0.1", 1))
    assert host_allowed("evil.example", ("*",), ("10.0.0.2", 1))
