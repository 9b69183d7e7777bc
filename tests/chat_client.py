"""A live-chat WebSocket client over Quart's test client, for the chat tests.

Frames are JSON objects; every receive is bounded (``asyncio.wait_for``) so that a frame that
never comes fails the test at once instead of hanging it. A refused handshake surfaces as
``WebsocketResponseError`` (its ``.response`` is the HTTP answer), a close by the server as
``WebsocketDisconnectError`` whose first argument is the close code.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from quart import Quart
from quart.testing.connections import (
    TestWebsocketConnection,
    WebsocketDisconnectError,
    WebsocketResponseError,
)
from quart.typing import TestWebsocketConnectionProtocol

from tests.api import FRONTEND_ORIGIN

TIMEOUT = 5.0  # the longest any expected frame may take
QUIET = 0.3  # how long "nothing more arrives" is watched for
CLIENT_ADDRESS = "192.0.2.10"  # the sockets' peer address unless a test says otherwise

Frame = dict[str, Any]
# The pings of expect_nothing_queued: each carries its own timestamp, so that its pong is
# told apart from any other.
_barrier_stamps = itertools.count(1_000_000_000_001)


class ChatClient:
    """One socket: send frames, receive them (bounded), expect silence or a close."""

    def __init__(self, connection: TestWebsocketConnectionProtocol) -> None:
        self.connection = connection
        self.session_id: str | None = None  # the visitor's, from connection_established
        self.resume_token: str | None = None  # likewise
        self.opening: list[Frame] = []  # the frames read by open_visitor / open_agent

    @property
    def accepted(self) -> bool:
        return bool(getattr(self.connection, "accepted", False))

    @property
    def set_cookies(self) -> list[str]:
        """The Set-Cookie headers of the accept."""
        headers = getattr(self.connection, "accept_headers", [])
        return [value.decode() for name, value in headers if name.lower() == b"set-cookie"]

    @property
    def cookie(self) -> dict[str, str]:
        """A Cookie header carrying what the accept set, as a browser sends it back."""
        pairs = [cookie.split(";", 1)[0] for cookie in self.set_cookies]
        return {"Cookie": "; ".join(pairs)} if pairs else {}

    async def send(self, frame: Frame | list[Any] | str | bytes) -> None:
        if isinstance(frame, dict | list):
            frame = json.dumps(frame)
        await self.connection.send(frame)

    async def receive_raw(self, within: float = TIMEOUT) -> str | bytes:
        try:
            return await asyncio.wait_for(self.connection.receive(), within)
        except TimeoutError:
            raise AssertionError(f"no frame within {within} s") from None

    async def receive(self, within: float = TIMEOUT) -> Frame:
        raw = await self.receive_raw(within)
        frame = json.loads(raw)
        assert isinstance(frame, dict), f"a frame that is not a JSON object: {raw!r}"
        return frame

    async def receive_many(self, count: int, within: float = TIMEOUT) -> list[Frame]:
        return [await self.receive(within) for _ in range(count)]

    async def expect_nothing_queued(self) -> None:
        """Nothing has been queued for this client so far: the answer to a ping sent now is
        the next frame. A socket handles its client's frames one at a time and sends events in
        the order they were queued, and the in-process broker queues an event on every socket
        before the publisher goes on. So this proves the absence of what an earlier frame of
        this socket (a visitor's; an agent's ping skips the agent's frame queue), a REST call
        that has returned, or another socket's completed frame would have caused, without
        waiting. What may come later by itself (a typing timer, Redis, a re-check) still needs
        :meth:`expect_silence`. Uses one ``keepalive`` token of the socket's frame limits."""
        stamp = next(_barrier_stamps)
        await self.send({"type": "ping", "timestamp": stamp})
        frame = await self.receive()
        assert frame == {"type": "pong", "timestamp": stamp}, f"unexpected frame: {frame!r}"

    async def expect_silence(self, seconds: float = QUIET) -> None:
        """Nothing arrives (no frame, no close) for ``seconds``: for what the server would
        send later by itself (else :meth:`expect_nothing_queued` proves it at once)."""
        try:
            raw = await asyncio.wait_for(self.connection.receive(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame: {raw!r}")

    async def expect_close(self, within: float = TIMEOUT) -> int:
        """The next thing is a close by the server (no frame before it); its code."""
        try:
            raw = await asyncio.wait_for(self.connection.receive(), within)
        except WebsocketDisconnectError as close:
            return int(close.args[0])
        except TimeoutError:
            raise AssertionError(f"the server did not close within {within} s") from None
        raise AssertionError(f"a frame instead of a close: {raw!r}")

    async def expect_refused(self, within: float = TIMEOUT) -> int:
        """The handshake was answered with an HTTP response instead of accept; its status."""
        try:
            raw = await asyncio.wait_for(self.connection.receive(), within)
        except WebsocketResponseError as refused:
            assert not self.accepted, "refused after accept"
            return int(refused.response.status_code)
        except WebsocketDisconnectError as close:
            raise AssertionError(f"accepted, then closed with {close.args[0]}") from None
        except TimeoutError:
            raise AssertionError(f"no handshake answer within {within} s") from None
        raise AssertionError(f"accepted, and a frame arrived: {raw!r}")


class RecordingWebsocketConnection(TestWebsocketConnection):
    """Keeps the headers the server accepted the socket with (its Set-Cookie)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accept_headers: list[tuple[bytes, bytes]] = []
        self.accept_subprotocol: str | None = None

    async def _asgi_send(self, message: Any) -> None:
        if message["type"] == "websocket.accept":
            self.accept_headers = list(message.get("headers") or [])
            self.accept_subprotocol = message.get("subprotocol")
        await super()._asgi_send(message)


class StalledWebsocketConnection(RecordingWebsocketConnection):
    """A client whose network stops reading when ``reading`` is cleared: the server's data
    sends block (like a full TCP window) while a close still gets through."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading = asyncio.Event()
        self.reading.set()

    async def _asgi_send(self, message: Any) -> None:
        if message["type"] == "websocket.send":
            await self.reading.wait()
        await super()._asgi_send(message)


@asynccontextmanager
async def chat_socket(
    app: Quart,
    path: str,
    *,
    origin: str | None = FRONTEND_ORIGIN,
    headers: dict[str, str] | None = None,
    stalled: bool = False,
    address: str = CLIENT_ADDRESS,
    subprotocols: list[str] | None = None,
) -> AsyncIterator[ChatClient]:
    """A socket to ``path`` (query string included) from ``origin`` (None: no Origin), from
    the client ``address``."""
    request_headers = {} if origin is None else {"Origin": origin}
    request_headers.update(headers or {})
    client = app.test_client()
    client.websocket_connection_class = (  # type: ignore[assignment]
        StalledWebsocketConnection if stalled else RecordingWebsocketConnection
    )
    scope: dict[str, Any] = {"client": (address, 50000)}
    if subprotocols is not None:
        # Sec-WebSocket-Protocol as the server parses it (Quart's test client drops its own
        # ``subprotocols`` argument).
        scope["subprotocols"] = subprotocols
        request_headers["Sec-WebSocket-Protocol"] = ", ".join(subprotocols)
    async with client.websocket(path, headers=request_headers, scope_base=scope) as connection:
        yield ChatClient(connection)


@asynccontextmanager
async def open_visitor(
    app: Quart, department: str = "sales", query: str = "", **kwargs: Any
) -> AsyncIterator[ChatClient]:
    """A visitor socket past its two opening frames (connection_established, greeting)."""
    path = f"/ws/chat/{department}/" + (f"?{query}" if query else "")
    async with chat_socket(app, path, **kwargs) as visitor:
        established, greeting = await visitor.receive_many(2)
        assert established["type"] == "connection_established", established
        assert greeting["type"] == "system", greeting
        visitor.session_id = established["session_id"]
        visitor.resume_token = established.get("resume_token")
        visitor.opening = [established, greeting]
        yield visitor


@asynccontextmanager
async def open_agent(app: Quart, token: str, departments: str = "") -> AsyncIterator[ChatClient]:
    """An agent socket past connection_established and active_conversations."""
    query = f"token={token}" + (f"&departments={departments}" if departments else "")
    async with chat_socket(app, f"/ws/chat/agents/?{query}") as agent:
        established, active = await agent.receive_many(2)
        assert established["type"] == "connection_established", established
        assert active["type"] == "active_conversations", active
        agent.opening = [established, active]
        yield agent
