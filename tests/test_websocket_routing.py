"""A WebSocket handshake to a path with no WebSocket route gets what an HTTP request to a
missing route gets (the JSON 404, CORS headers for an allowed origin), not quart-cors's bare
400; the chat routes' origin checks and quart-cors's refusal of routes that are not
``cors_exempt`` stay as they were."""

from __future__ import annotations

from typing import Any

import pytest
from quart import Quart
from quart.testing.connections import WebsocketResponseError

from tests.api import FRONTEND_ORIGIN
from tests.chat_client import open_visitor

FOREIGN_ORIGIN = "https://evil.example"
CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Expose-Headers",
    "Vary",
)


async def refused_handshake(app: Quart, path: str, origin: str | None) -> Any:
    headers = {"Origin": origin} if origin else {}
    with pytest.raises(WebsocketResponseError) as refused:
        async with app.test_client().websocket(path, headers=headers) as socket:
            await socket.receive()
    return refused.value.response


@pytest.mark.parametrize("path", ["/ws/nope/", "/ws/chat/sales/extra/", "/api/nothing-here/"])
@pytest.mark.parametrize("origin", [FRONTEND_ORIGIN, FOREIGN_ORIGIN, None])
async def test_an_unknown_websocket_path_is_the_json_404_of_a_missing_route(
    app: Quart, path: str, origin: str | None
) -> None:
    denied = await refused_handshake(app, path, origin)
    headers = {"Origin": origin} if origin else {}
    http = await app.test_client().get(path, headers=headers)
    assert http.status_code == 404
    assert denied.status_code == 404
    assert await denied.get_json() == await http.get_json()
    assert (await denied.get_json())["code"] == "not_found"
    assert denied.headers["Content-Type"] == "application/json"
    for name in CORS_HEADERS:
        assert denied.headers.get(name) == http.headers.get(name), name
    if origin == FRONTEND_ORIGIN:
        assert denied.headers["Access-Control-Allow-Origin"] == FRONTEND_ORIGIN
    else:
        assert "Access-Control-Allow-Origin" not in denied.headers
    assert denied.headers["X-Request-ID"]


@pytest.mark.parametrize("path", ["/health/", "/api/billing/carts/current/"])
async def test_a_path_with_only_http_routes_has_no_websocket_route_either(
    app: Quart, path: str
) -> None:
    """Werkzeug's WebsocketMismatch (400, "could not understand") is the missing route's
    404 too."""
    denied = await refused_handshake(app, path, FRONTEND_ORIGIN)
    missing = await app.test_client().get("/no-such-route/", headers={"Origin": FRONTEND_ORIGIN})
    assert denied.status_code == 404
    assert await denied.get_json() == await missing.get_json()
    assert denied.headers["Access-Control-Allow-Origin"] == FRONTEND_ORIGIN


async def test_the_chat_routes_still_check_the_origin(app: Quart) -> None:
    async with open_visitor(app) as visitor:  # an allowed origin is accepted
        assert visitor.session_id
    for origin in (FOREIGN_ORIGIN, None):
        denied = await refused_handshake(app, "/ws/chat/sales/", origin)
        assert denied.status_code == 403
        assert "Access-Control-Allow-Origin" not in denied.headers


async def test_a_websocket_route_not_cors_exempt_is_still_refused(app: Quart) -> None:
    """quart-cors's hook still runs for matched routes: a WebSocket route that does not
    check the Origin itself (not ``cors_exempt``) is refused, even from an allowed origin."""

    @app.websocket("/ws/unchecked/")
    async def unchecked() -> None:
        raise AssertionError("the handler must not run")

    denied = await refused_handshake(app, "/ws/unchecked/", FRONTEND_ORIGIN)
    assert denied.status_code == 400
