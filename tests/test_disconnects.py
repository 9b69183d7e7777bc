"""A client that goes away never leaves shared state behind (in-process, both databases).

The outage: on a fresh worker with SQLite, the first database request abandoned by its client
(Quart cancels the view when the server reports ``http.disconnect``) left Tortoise's connection
lock held, and every later database request of the worker hung. Here the whole app is driven
through ASGI as Hypercorn drives it: the first request of a freshly started app is answered by
``http.disconnect`` (or, for a chat socket, ``websocket.disconnect``) after a sweep of delays,
from "before the view runs" to "the response is out", and then a database request and a chat
greeting must arrive within a bound. ``tests/test_disconnects_live.py`` does the same against a
real Hypercorn over sockets; ``tests/test_sqlite.py`` sweeps the SQLite client's await points.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from quart import Quart

from tests.api import FRONTEND_ORIGIN
from tests.chat_client import open_visitor
from tests.conftest import prepare_database

ANSWER_WITHIN = 5.0
STEP = 0.0005  # seconds
MAX_STEPS = 80  # 40 ms: far longer than one first request takes here
PRODUCTS = "/api/services/hosting-products/"
CHAT = "/ws/chat/sales/"


@pytest.fixture
async def fresh_app(app_factory: Callable[..., Quart]) -> Callable[[], Any]:
    """Start a new app (like a fresh worker) on a database prepared beforehand by another
    app, so that the request under test is the new app's first to touch the database."""
    preparing = app_factory()
    async with preparing.test_app():
        await prepare_database(preparing)

    @contextlib.asynccontextmanager
    async def start() -> AsyncIterator[Quart]:
        application = app_factory()
        async with application.test_app():
            yield application

    return start


def http_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"origin", FRONTEND_ORIGIN.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }


def websocket_scope(path: str) -> dict[str, Any]:
    scope = http_scope(path)
    scope.update(type="websocket", scheme="ws", subprotocols=[])
    scope["headers"] = [
        *scope["headers"],
        (b"upgrade", b"websocket"),
        (b"connection", b"upgrade"),
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    ]
    return scope


def sweep() -> Iterator[tuple[int, float]]:
    """Disconnect points: after 0..29 loop iterations, then every STEP seconds."""
    for spins in range(30):
        yield spins, 0.0
    for step in range(1, MAX_STEPS):
        yield 0, step * STEP


async def abandon(app: Quart, scope: dict[str, Any], spins: int, delay: float) -> bool:
    """Drive ``scope`` through the app as Hypercorn would, with the client gone after
    ``spins`` loop iterations and ``delay`` seconds (for a WebSocket: counted from the accept).
    Whether the app had finished its answer first."""
    websocket = scope["type"] == "websocket"
    gone = asyncio.Event()
    accepted = asyncio.Event()
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "websocket.connect"} if websocket else {"type": "http.request"}
        await gone.wait()
        if websocket:
            return {"type": "websocket.disconnect", "code": 1006}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if gone.is_set():
            raise OSError("the client is gone")  # what a server's send does then
        sent.append(message)
        if message["type"] in ("websocket.accept", "websocket.http.response.start"):
            accepted.set()

    task = asyncio.ensure_future(app(scope, receive, send))  # type: ignore[arg-type]
    if websocket:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(accepted.wait(), ANSWER_WITHIN)
        if not accepted.is_set():
            task.cancel()
            pytest.fail(f"the handshake was not answered within {ANSWER_WITHIN} s")
    for _ in range(spins):
        await asyncio.sleep(0)
    if delay:
        await asyncio.sleep(delay)
    finished = any(
        message["type"] == "http.response.body" and not message.get("more_body") for message in sent
    ) or (websocket and len([m for m in sent if m["type"] == "websocket.send"]) >= 2)
    gone.set()
    done, _ = await asyncio.wait([task], timeout=ANSWER_WITHIN)
    if not done:
        task.cancel()
        pytest.fail(f"the app did not finish within {ANSWER_WITHIN} s of the disconnect")
    if not task.cancelled() and not isinstance(task.exception(), OSError | None):
        raise task.exception()  # type: ignore[misc]
    return finished


async def assert_still_serving(app: Quart) -> None:
    """A database request and a chat greeting, each within the bound."""
    client = app.test_client()
    response = ready = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(ANSWER_WITHIN):
            response = await client.get(PRODUCTS, headers={"Origin": FRONTEND_ORIGIN})
            ready = await client.get("/ready/")
            async with open_visitor(app) as visitor:
                assert visitor.opening[1]["type"] == "system"
    if response is None or ready is None:
        pytest.fail(f"the app stopped answering database requests (> {ANSWER_WITHIN} s)")
    assert response.status_code == 200, await response.get_data()
    assert ready.status_code == 200, await ready.get_data()


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_an_abandoned_first_request_leaves_the_app_serving(
    fresh_app: Callable[[], Any], kind: str
) -> None:
    scope = http_scope(PRODUCTS) if kind == "http" else websocket_scope(CHAT)
    outcomes = set()
    for spins, delay in sweep():
        async with fresh_app() as app:
            finished = await abandon(app, dict(scope), spins, delay)
            outcomes.add(finished)
            await assert_still_serving(app)
        if finished:
            break
    assert outcomes == {False, True}, "the sweep never abandoned the request, or never let it end"


async def test_many_abandoned_requests_at_once(fresh_app: Callable[[], Any]) -> None:
    """Twenty first requests, half of them abandoned at staggered points, on one fresh app."""
    async with fresh_app() as app:
        abandoned = [
            abandon(app, http_scope(PRODUCTS), spins, 0.0) for spins in range(0, 20, 2)
        ] + [abandon(app, websocket_scope(CHAT), spins, 0.0) for spins in range(0, 20, 2)]
        await asyncio.gather(*abandoned)
        await assert_still_serving(app)
