"""slyker's WebSocket connection class: Quart's, with a receive queue that costs nothing idle."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from quart import Quart, websocket
from quart.asgi import ASGIWebsocketConnection

from slyker.wrappers import WebsocketConnection, WebsocketInbox

SCOPE: dict[str, Any] = {"type": "websocket", "path": "/", "headers": []}


def test_quart_state_is_kept_and_only_the_queue_replaced() -> None:
    app = Quart(__name__)
    quart_own = ASGIWebsocketConnection(app, SCOPE)  # type: ignore[arg-type]
    ours = WebsocketConnection(app, SCOPE)  # type: ignore[arg-type]
    assert set(vars(quart_own)) == set(vars(ours))
    assert isinstance(ours.queue, WebsocketInbox)


async def test_the_app_uses_it(app: Quart) -> None:
    assert app.asgi_websocket_class is WebsocketConnection


async def test_frames_come_out_in_order_and_nothing_is_kept_once_read() -> None:
    inbox = WebsocketInbox()
    assert inbox.empty()
    await inbox.put("a")
    await inbox.put(b"b")
    assert inbox.qsize() == 2
    assert await inbox.get() == "a"
    assert await inbox.get() == b"b"
    assert inbox.empty()
    assert inbox._items is None and inbox._getters is None
    with pytest.raises(asyncio.QueueEmpty):
        inbox.get_nowait()


async def test_a_waiting_reader_gets_the_next_frame() -> None:
    inbox = WebsocketInbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    await inbox.put("hello")
    assert await reader == "hello"
    assert inbox._items is None and inbox._getters is None


async def test_a_cancelled_reader_takes_nothing() -> None:
    inbox = WebsocketInbox()
    cancelled = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert inbox._getters is None
    await inbox.put("kept")
    assert await inbox.get() == "kept"


async def test_a_reader_cancelled_after_its_wake_up_passes_it_on() -> None:
    """As asyncio.Queue: woken for a frame, then cancelled before it runs, the reader leaves
    the frame to the next reader instead of leaving that one waiting."""
    inbox = WebsocketInbox()
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("only")  # wakes the first reader...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 5) == "only"


class Client:
    """The ASGI server's side of one WebSocket: events for the app, and what it sent."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.receive_calls = 0

    async def receive(self) -> dict[str, Any]:
        self.receive_calls += 1
        return await self.events.get()

    async def send(self, event: dict[str, Any]) -> None:
        self.sent.append(event)


def websocket_app(handler: Any) -> Quart:
    app = Quart(__name__)
    app.asgi_websocket_class = WebsocketConnection
    app.websocket("/ws")(handler)
    return app


def scope() -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
        "http_version": "1.1",
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


async def test_frames_reach_the_handler_in_order_and_its_end_stops_the_reader() -> None:

    received: list[str | bytes] = []

    async def handler() -> None:
        await websocket.accept()
        received.append(await websocket.receive())
        received.append(await websocket.receive())

    client = Client()
    for text in ("one", "two"):
        client.events.put_nowait({"type": "websocket.receive", "text": text})
    await asyncio.wait_for(websocket_app(handler)(scope(), client.receive, client.send), 5)
    assert received == ["one", "two"]
    assert client.sent[0]["type"] == "websocket.accept"
    assert client.sent[-1] == {"type": "websocket.close", "code": 1000}


async def test_the_client_leaving_cancels_the_handler() -> None:

    handler_saw: list[str] = []

    async def handler() -> None:
        await websocket.accept()
        try:
            await websocket.receive()
        except asyncio.CancelledError:
            handler_saw.append("cancelled")
            raise

    client = Client()
    client.events.put_nowait({"type": "websocket.disconnect", "code": 1001})
    await asyncio.wait_for(websocket_app(handler)(scope(), client.receive, client.send), 5)
    assert handler_saw == ["cancelled"]


async def test_a_cancellation_from_outside_goes_on() -> None:

    accepted = asyncio.Event()

    async def handler() -> None:
        await websocket.accept()
        accepted.set()
        await websocket.receive()

    client = Client()
    serving = asyncio.create_task(websocket_app(handler)(scope(), client.receive, client.send))
    await asyncio.wait_for(accepted.wait(), 5)
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving


async def test_a_failing_reader_is_raised() -> None:

    async def handler() -> None:
        await websocket.accept()
        await websocket.receive()

    async def broken_receive() -> dict[str, Any]:
        raise ConnectionResetError("gone")

    client = Client()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(websocket_app(handler)(scope(), broken_receive, client.send), 5)
