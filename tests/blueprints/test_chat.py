"""Live chat: the WebSocket handshake (origin before accept, identity after), the visitor
protocol the existing widgets speak (../shared/contract/chat-protocol.md), agents, resume
after a reconnect, the staff REST API, slow consumers and the Redis broker.

Sockets go through Quart's test client (tests/chat_client.py); every expected frame is
compared whole, against what the database stored. Runs on SQLite, and on PostgreSQL with
SLYKER_TEST_DATABASE=postgres; the Redis tests use the real Redis on 127.0.0.1:6379 (db 15),
each in a department of its own because pub/sub channels are shared by every database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from quart import Quart
from quart.testing.connections import WebsocketDisconnectError, WebsocketResponseError
from redis.asyncio import Redis
from tortoise import connections
from werkzeug.datastructures import Headers

from slyker.chat.broker import Broker
from slyker.chat.limits import FIXED_LIMITS
from slyker.chat.service import BROKER_KEY
from slyker.models.accounts import Role, User
from slyker.models.chat import ChatMessage, Conversation, ConversationStatus, SenderType
from tests.api import API, FRONTEND_ORIGIN, Reply, db, make_user
from tests.chat_client import ChatClient, Frame, chat_socket, open_agent, open_visitor
from tests.conftest import REDIS_URL, TEST_SECRET_KEY, prepare_database
from tests.fake_registries import closed_port

GREETING = "Connected to Slyker Tech Live Support"
DEPARTMENTS = ["sales", "support", "billing", "management"]
VISITOR_PATHS = ["/ws/chat/sales/", "/livechat/ws/sales/"]
AGENTS_PATH = "/ws/chat/agents/"
STAFF_EMAIL = "agent@example.com"
STAFF_NAME = "Test staff"  # display_name(): first name "Test", last name the role
CLIENT_EMAIL = "client@example.com"
VISITOR_NAME = "Tariro"
SYSTEM_SENDER = "Slyker Tech"
SESSIONS = "/api/livechat/sessions/"
API_HOST = "api.slykertech.co.zw"
REDIS_PREFIX = "slyker:chat:"


def auto_reply(department: str = "sales") -> str:
    return (
        f"Thanks for your message. No {department} agent is online right now: we have your "
        "message and will reply here or by e-mail as soon as possible."
    )


def error(message: str, code: str) -> Frame:
    return {"type": "error", "message": message, "code": code}


INVALID_FORMAT = error("Invalid message format", "invalid_format")
EMPTY_MESSAGE = error("Message cannot be empty", "empty_message")
UNKNOWN_TYPE = error("Unknown message type", "unknown_type")
TOO_LARGE = error("Message too large", "too_large")
RATE_LIMITED = error("Too many messages", "rate_limited")
SESSION_MISMATCH = error("session_id does not match this connection", "session_mismatch")


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_unhandled_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A socket handler that crashed is answered quietly (close 1000 / 500): fail on its log."""
    yield
    crashes = [
        record.getMessage()
        for record in caplog.get_records("call")
        if record.levelno >= logging.ERROR and record.name.startswith("slyker")
    ]
    assert not crashes, crashes


@asynccontextmanager
async def started(app_factory: Callable[..., Quart], **overrides: Any) -> AsyncIterator[Quart]:
    """An app with other settings, started on a fresh database (like the ``app`` fixture)."""
    application = app_factory(**overrides)
    async with application.test_app():
        await prepare_database(application)
        yield application


async def staff_login(app: Quart, email: str = STAFF_EMAIL) -> tuple[User, str]:
    user = await make_user(app, email, Role.STAFF)
    return user, await API(app).login(email)


def mint_token(
    user_id: int,
    *,
    token_type: str = "access",
    expires_in: timedelta = timedelta(minutes=5),
    expires_at: datetime | None = None,
    key: str = TEST_SECRET_KEY,
) -> str:
    """An access token as slyker issues them (for apps on the shared Redis, whose login rate
    limit other test runs share, and for expired / foreign tokens). Its ``exp`` is a whole
    second, as in slyker's: ``expires_at``, else ``expires_in`` from now (rounded down)."""
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "iat": now - timedelta(hours=1),
        "exp": expires_at or now + expires_in,
        "jti": uuid.uuid4().hex,
        "type": token_type,
        "role": "staff",
    }
    return jwt.encode(claims, key, algorithm="HS256")


def new_session() -> str:
    return str(uuid.uuid4())


def visitor_frame(
    text: Any,
    session_id: str | None = None,
    *,
    kind: str | None = "message",
    department: str = "sales",
    name: str = VISITOR_NAME,
) -> Frame:
    """What the newer widget sends (``kind=None``: no ``type`` at all)."""
    frame: Frame = {
        "message": text,
        "visitor_name": name,
        "department": department,
        "sender": name,
        "timestamp": 1_700_000_000_000,
    }
    if kind is not None:
        frame["type"] = kind
    if session_id is not None:
        frame["session_id"] = session_id
    return frame


async def stored(app: Quart, session_id: str) -> tuple[Conversation, list[ChatMessage]]:
    with db(app):
        conversation = await Conversation.get(session_id=uuid.UUID(session_id))
        messages = await ChatMessage.filter(conversation_id=conversation.id).order_by("id")
    return conversation, list(messages)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)


async def message_count(app: Quart, session_id: str, count: int) -> None:
    async def reached() -> bool:
        with db(app):
            return (
                await ChatMessage.filter(conversation__session_id=uuid.UUID(session_id)).count()
                == count
            )

    await eventually(reached, f"{count} messages stored for {session_id}")


def message_frame(message: ChatMessage, conversation: Conversation, **changes: Any) -> Frame:
    """The frame of a stored message, as the contract and the issue describe it."""
    frame: Frame = {
        "type": "message",
        "id": message.id,
        "session_id": str(conversation.session_id),
        "department": conversation.department,
        "message": message.text,
        "sender": message.sender_name,
        "sender_type": str(message.sender_type),
        "created_at": message.created_at.isoformat(),
        "success": True,
    }
    frame.update(changes)
    return frame


def conversation_frame(conversation: Conversation) -> Frame:
    return {
        "id": conversation.id,
        "session_id": str(conversation.session_id),
        "visitor_name": conversation.visitor_name,
        "department": conversation.department,
        "status": str(conversation.status),
        "user": conversation.user_id,
        "created_at": conversation.created_at.isoformat(),
        "last_active_at": conversation.last_active_at.isoformat(),
        "closed_at": conversation.closed_at.isoformat() if conversation.closed_at else None,
    }


def without(frame: Frame, *keys: str) -> Frame:
    return {key: value for key, value in frame.items() if key not in keys}


async def start_conversation(visitor: ChatClient, session_id: str, text: str = "Hello") -> Frame:
    """A first message in a department without agents: the automatic reply it gets."""
    await visitor.send(visitor_frame(text, session_id))
    reply = await visitor.receive()
    assert reply["sender_type"] == "system" and reply["message"] == auto_reply(), reply
    return reply


def sized_frame(size: int, session_id: str | None = None) -> str:
    """A visitor message frame of exactly ``size`` bytes."""
    frame = visitor_frame("", session_id)
    frame["message"] = "x" * (size - len(json.dumps(frame)))
    raw = json.dumps(frame)
    assert len(raw.encode()) == size
    return raw


def chat_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("slyker.chat") and record.levelno == logging.WARNING
    ]


def broker_of(app: Quart) -> Broker:
    return app.extensions[BROKER_KEY]  # type: ignore[no-any-return]


# --- the handshake: origin before accept ----------------------------------------------------


@pytest.mark.parametrize("path", VISITOR_PATHS)
async def test_an_allowed_origin_is_accepted_on_both_routes(
    app: Quart, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="slyker.chat")
    async with chat_socket(app, path) as visitor:
        established, greeting = await visitor.receive_many(2)
        assert visitor.accepted
        assert established == {
            "type": "connection_established",
            "room": "sales",
            "session_id": established["session_id"],
            "resume_token": established["resume_token"],
            "message": GREETING,
        }
        assert str(uuid.UUID(established["session_id"])) == established["session_id"]
        # the resume secret, also as a cookie the browser sends back on its next handshake
        token = established["resume_token"]
        assert re.fullmatch(r"[\w-]{43}\.[\w-]{43}", token), token
        assert visitor.set_cookies == [
            f"slyker_chat={token}; HttpOnly; Path=/; SameSite=Lax"  # not Secure on localhost
        ]
        assert greeting == {"type": "system", "message": GREETING}
        await visitor.expect_nothing_queued()
    validated = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert "WebSocket origin validated: http://localhost:3000" in validated


REJECTED_ORIGINS = {
    "disallowed": "https://evil.example",
    "null": "null",
    "path-suffixed": "http://localhost:3000/",
    "missing": None,
}


@pytest.mark.parametrize("path", [*VISITOR_PATHS, "/ws/chat/management/", AGENTS_PATH])
@pytest.mark.parametrize("origin", REJECTED_ORIGINS.values(), ids=REJECTED_ORIGINS.keys())
async def test_a_rejected_origin_gets_403_before_accept(
    app: Quart, path: str, origin: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    _, token = await staff_login(app)  # a valid staff token does not help a bad origin
    async with chat_socket(app, f"{path}?token={token}", origin=origin) as socket:
        assert await socket.expect_refused() == 403
        assert not socket.accepted
    shown = "(missing)" if origin is None else repr(origin)
    assert chat_warnings(caplog) == [f"WebSocket origin rejected: {shown} on {path}"]


async def test_a_missing_origin_is_accepted_when_configured(
    app_factory: Callable[..., Quart],
) -> None:
    async with (
        started(app_factory, WS_ALLOW_MISSING_ORIGIN="true") as app,
        open_visitor(app, origin=None) as visitor,
    ):
        assert visitor.opening[0]["room"] == "sales"
        await visitor.send({"type": "ping", "timestamp": 1})
        assert await visitor.receive() == {"type": "pong", "timestamp": 1}
        # ... and a bad origin is still refused
        async with chat_socket(app, "/ws/chat/sales/", origin="https://evil.example") as bad:
            assert await bad.expect_refused() == 403


@pytest.mark.parametrize("host", [API_HOST, f"{API_HOST}:443", "API.SlykerTech.co.zw"])
async def test_the_same_host_rule_accepts_the_api_host_itself(
    app_factory: Callable[..., Quart], host: str
) -> None:
    async with (
        started(app_factory, ALLOWED_HOSTS=API_HOST) as app,
        open_visitor(app, origin=f"https://{API_HOST}", headers={"Host": host}) as visitor,
    ):
        assert visitor.opening[0]["room"] == "sales"


@pytest.mark.parametrize(
    ("allowed_hosts", "origin", "host", "status"),
    [
        # A Host outside ALLOWED_HOSTS is refused before the origin rule (slyker/hosts.py).
        ("", f"https://{API_HOST}", API_HOST, 400),
        (API_HOST, f"http://{API_HOST}", API_HOST, 403),  # plain http from a non-loopback host
        (API_HOST, f"https://{API_HOST}", "other.example", 400),  # another Host
        (API_HOST, f"https://{API_HOST}:8443", API_HOST, 403),  # another port
        (API_HOST, f"https://{API_HOST}/", API_HOST, 403),  # not one serialised origin
    ],
)
async def test_the_same_host_rule_refuses_near_misses(
    app_factory: Callable[..., Quart], allowed_hosts: str, origin: str, host: str, status: int
) -> None:
    async with (
        started(app_factory, ALLOWED_HOSTS=allowed_hosts) as app,
        chat_socket(app, "/ws/chat/sales/", origin=origin, headers={"Host": host}) as socket,
    ):
        assert await socket.expect_refused() == status


@pytest.mark.parametrize("path", ["/ws/chat/marketing/", "/livechat/ws/Sales/"])
async def test_an_unknown_department_is_404_at_the_handshake(app: Quart, path: str) -> None:
    async with chat_socket(app, path) as socket:
        assert await socket.expect_refused() == 404


@pytest.mark.parametrize("origin", ["https://evil.example", "null", None])
async def test_debug_mode_does_not_bypass_the_origin_check(
    app_factory: Callable[..., Quart], origin: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    async with started(app_factory, DEBUG="true") as app:
        async with chat_socket(app, "/ws/chat/sales/", origin=origin) as socket:
            assert await socket.expect_refused() == 403
        async with open_visitor(app, origin="http://127.0.0.1:3000") as visitor:
            assert visitor.accepted
    shown = "(missing)" if origin is None else repr(origin)
    assert chat_warnings(caplog) == [f"WebSocket origin rejected: {shown} on /ws/chat/sales/"]


# --- identity: after accept, with close codes the browser sees --------------------------------


@pytest.mark.parametrize("path", ["/ws/chat/sales/", "/livechat/ws/management/", AGENTS_PATH])
@pytest.mark.parametrize("kind", ["garbage", "expired", "foreign-key", "refresh", "inactive"])
async def test_an_invalid_token_is_accepted_then_closed_4001(
    app: Quart, path: str, kind: str
) -> None:
    user = await make_user(app, STAFF_EMAIL, Role.STAFF)
    token = {
        "garbage": "not-a-jwt",
        "expired": mint_token(user.id, expires_in=timedelta(seconds=-5)),
        "foreign-key": mint_token(user.id, key="another-secret-key-0123456789abcdef0123"),
        "refresh": mint_token(user.id, token_type="refresh"),
        "inactive": mint_token(user.id),
    }[kind]
    if kind == "inactive":
        with db(app):
            await User.filter(id=user.id).update(is_active=False)
    async with chat_socket(app, f"{path}?token={token}") as socket:
        assert await socket.expect_close() == 4001
        assert socket.accepted


async def test_management_is_for_staff_only(app: Quart) -> None:
    await make_user(app, CLIENT_EMAIL)
    client_token = await API(app).login(CLIENT_EMAIL)
    _, staff_token = await staff_login(app)
    for path in ("/ws/chat/management/", "/livechat/ws/management/"):
        async with chat_socket(app, path) as anonymous:
            assert await anonymous.expect_close() == 4001
            assert anonymous.accepted
        async with chat_socket(app, f"{path}?token={client_token}") as client:
            assert await client.expect_close() == 4003
            assert client.accepted
        async with open_visitor(app, "management", query=f"token={staff_token}") as staff:
            assert staff.opening[0]["room"] == "management"


async def test_the_agents_socket_is_for_staff_only(app: Quart) -> None:
    await make_user(app, CLIENT_EMAIL)
    client_token = await API(app).login(CLIENT_EMAIL)
    async with chat_socket(app, AGENTS_PATH) as anonymous:
        assert await anonymous.expect_close() == 4001
    async with chat_socket(app, f"{AGENTS_PATH}?token={client_token}") as client:
        assert await client.expect_close() == 4003


# --- the staff token off the URL (a query string lands in proxies' access logs) -----------------


async def expect_agent_opening(agent: Any) -> None:
    established, active = await agent.receive_many(2)
    assert established["type"] == "connection_established", established
    assert active["type"] == "active_conversations", active


async def test_the_agent_token_in_the_websocket_protocol_header(app: Quart) -> None:
    """``Sec-WebSocket-Protocol: bearer, <token>``; the answer names only ``bearer`` (never
    echoes the token)."""
    _, token = await staff_login(app)
    async with chat_socket(app, AGENTS_PATH, subprotocols=["bearer", token]) as agent:
        await expect_agent_opening(agent)
        assert agent.connection.accept_subprotocol == "bearer"  # type: ignore[attr-defined]
    async with chat_socket(app, AGENTS_PATH, subprotocols=["bearer", "not-a-jwt"]) as bad:
        assert await bad.expect_close() == 4001


async def test_the_agent_token_in_the_first_frame(app: Quart) -> None:
    _, token = await staff_login(app)
    async with chat_socket(app, AGENTS_PATH) as agent:
        await agent.send({"type": "auth", "token": token})
        await expect_agent_opening(agent)
    async with chat_socket(app, "/ws/chat/management/") as staff:
        await staff.send({"type": "auth", "token": token})
        established, _greeting = await staff.receive_many(2)
        assert established["room"] == "management"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "auth", "token": "not-a-jwt"},
        {"type": "auth", "token": 42},
        {"type": "auth"},
        {"type": "message", "message": "hello"},
        "not json",
        None,  # nothing at all: closed after CHAT_AUTH_FRAME_TIMEOUT
    ],
    ids=["bad-token", "number", "no-token", "other-frame", "garbage", "silence"],
)
async def test_no_auth_frame_closes_the_agent_socket_4001(app: Quart, frame: Any) -> None:
    await staff_login(app)
    async with chat_socket(app, AGENTS_PATH) as agent:
        if frame is not None:
            await agent.send(frame)
        assert await agent.expect_close() == 4001


async def test_the_agent_token_in_the_query_still_works(app: Quart) -> None:
    """The current staff UI's ``?token=``."""
    _, token = await staff_login(app)
    async with open_agent(app, token) as agent:
        assert agent.opening[0]["type"] == "connection_established"


@pytest.mark.parametrize("path", [AGENTS_PATH, "/ws/chat/sales/"])
@pytest.mark.parametrize(
    "origins",
    [
        [FRONTEND_ORIGIN, "https://evil.example"],
        ["https://evil.example", FRONTEND_ORIGIN],
        [FRONTEND_ORIGIN, FRONTEND_ORIGIN],
    ],
    ids=["allowed-first", "allowed-second", "same-twice"],
)
async def test_two_origin_headers_are_refused_at_the_handshake(
    app: Quart, path: str, origins: list[str]
) -> None:
    headers = Headers([("Origin", origin) for origin in origins])
    client = app.test_client()
    with pytest.raises(WebsocketResponseError) as refused:
        async with client.websocket(path, headers=headers) as socket:
            await socket.receive()
    assert refused.value.response.status_code == 403


async def test_a_logged_in_visitor_is_named_and_linked(app: Quart) -> None:
    client = await make_user(app, CLIENT_EMAIL)
    token = await API(app).login(CLIENT_EMAIL)
    session_id = new_session()
    async with open_visitor(app, query=f"token={token}") as visitor:
        await start_conversation(visitor, session_id)
    conversation, messages = await stored(app, session_id)
    assert conversation.user_id == client.id
    assert conversation.visitor_name == "Test client"  # the account's name, not the frame's
    assert messages[0].sender_name == "Test client"


# --- the visitor protocol -------------------------------------------------------------------


async def test_ping_pong(app: Quart) -> None:
    async with open_visitor(app) as visitor:
        await visitor.send({"type": "ping", "timestamp": 1_712_345_678_901})
        assert await visitor.receive() == {"type": "pong", "timestamp": 1_712_345_678_901}
        await visitor.send({"type": "pong", "timestamp": 1_712_345_678_902})
        await visitor.expect_nothing_queued()
        await visitor.send({"type": "ping", "timestamp": 7})
        assert await visitor.receive() == {"type": "pong", "timestamp": 7}


async def test_the_server_pings_every_interval(app_factory: Callable[..., Quart]) -> None:
    interval = 0.3  # CHAT_PING_INTERVAL; the bounds below are in intervals
    async with (
        started(app_factory, CHAT_PING_INTERVAL=interval) as app,
        open_visitor(app) as visitor,
    ):
        loop = asyncio.get_running_loop()
        opened = loop.time()
        stamps = []
        for _ in range(2):
            ping = await visitor.receive(within=2.5 * interval)
            assert ping == {"type": "ping", "timestamp": ping["timestamp"]}
            assert isinstance(ping["timestamp"], int)
            now_ms = datetime.now(UTC).timestamp() * 1000
            assert abs(now_ms - ping["timestamp"]) < 2000
            stamps.append(ping["timestamp"])
        assert 1.5 * interval <= loop.time() - opened < 4 * interval
        assert 500 * interval <= stamps[1] - stamps[0] <= 1800 * interval


@pytest.mark.parametrize("kind", ["message", "chat_message", None])
async def test_a_visitor_message_is_stored_not_echoed_and_auto_replied_once(
    app: Quart, kind: str | None
) -> None:
    session_id = new_session()  # the widget's own, not the server's
    async with open_visitor(app) as visitor:
        assert visitor.session_id != session_id
        await visitor.send(visitor_frame("  I need a VPS  ", session_id, kind=kind))
        reply = await visitor.receive()
        conversation, messages = await stored(app, session_id)
        assert conversation.department == "sales"
        assert conversation.visitor_name == VISITOR_NAME
        assert conversation.status == ConversationStatus.ACTIVE
        assert conversation.user_id is None
        assert [(m.sender_type, m.sender_name, m.text) for m in messages] == [
            (SenderType.USER, VISITOR_NAME, "I need a VPS"),
            (SenderType.SYSTEM, SYSTEM_SENDER, auto_reply()),
        ]
        assert reply == message_frame(messages[1], conversation)
        await visitor.expect_nothing_queued()  # no echo of the visitor's own message

        await visitor.send(visitor_frame("Anyone there?", session_id, kind=kind))
        await message_count(app, session_id, 3)
        await visitor.expect_nothing_queued()  # one automatic reply per conversation
    _, messages = await stored(app, session_id)
    assert [m.text for m in messages][2:] == ["Anyone there?"]


async def test_without_a_session_id_the_servers_is_used(app: Quart) -> None:
    async with open_visitor(app, "support") as visitor:
        await visitor.send({"message": "Hello"})
        reply = await visitor.receive()
        assert visitor.session_id is not None
        conversation, messages = await stored(app, visitor.session_id)
        assert conversation.department == "support"
        assert conversation.visitor_name == "Visitor"
        assert reply == message_frame(messages[1], conversation)
        assert reply["message"] == auto_reply("support")


async def test_bad_input_gets_an_error_and_the_socket_stays_usable(app: Quart) -> None:
    async with open_visitor(app) as visitor:
        for raw in ("{not json", "[1, 2]", '"hello"', "42", "null", ""):
            await visitor.send(raw)
            assert await visitor.receive() == INVALID_FORMAT, raw
        for frame in (
            visitor_frame(""),
            visitor_frame("   \n "),
            visitor_frame(None),
            visitor_frame(42),
            {"type": "message"},
        ):
            await visitor.send(frame)
            assert await visitor.receive() == EMPTY_MESSAGE, frame
        await visitor.send({"type": "subscribe", "room": "management"})
        assert await visitor.receive() == UNKNOWN_TYPE
        with db(app):
            assert await Conversation.all().count() == 0
        await start_conversation(visitor, new_session())


async def test_session_id_mismatches_are_errors(app: Quart) -> None:
    session_id = new_session()
    async with open_visitor(app) as visitor:
        await start_conversation(visitor, session_id)
        await visitor.send(visitor_frame("hijack", new_session()))
        assert await visitor.receive() == SESSION_MISMATCH
        await visitor.send(visitor_frame("bad", "not-a-uuid"))
        assert await visitor.receive() == SESSION_MISMATCH
        await visitor.send({"type": "resume", "session_id": new_session(), "after": 0})
        assert await visitor.receive() == SESSION_MISMATCH
        await visitor.send({"type": "resume", "session_id": "nope", "after": 0})
        assert await visitor.receive() == error("session_id must be a UUID", "invalid_session")
        await visitor.send(visitor_frame("still here", session_id))
        await message_count(app, session_id, 3)
    with db(app):
        assert await Conversation.all().count() == 1


async def test_frame_size_limits(app: Quart) -> None:
    session_id = new_session()
    async with open_visitor(app) as visitor:
        await visitor.send(sized_frame(4096, session_id))  # exactly the limit: fine
        assert (await visitor.receive())["message"] == auto_reply()
        await message_count(app, session_id, 2)
        await visitor.send(sized_frame(4097, session_id))
        assert await visitor.receive() == TOO_LARGE
        # the limit is in bytes, not characters
        euros = json.dumps(visitor_frame("€" * 1400, session_id), ensure_ascii=False)
        assert len(euros) < 4096 < len(euros.encode())
        await visitor.send(euros)
        assert await visitor.receive() == TOO_LARGE
        await visitor.send(sized_frame(16384, session_id))
        assert await visitor.receive() == TOO_LARGE
        await visitor.send({"type": "ping", "timestamp": 3})
        assert await visitor.receive() == {"type": "pong", "timestamp": 3}
        _, messages = await stored(app, session_id)
        assert len(messages) == 2  # nothing too large was stored
        await visitor.send(sized_frame(16385, session_id))
        assert await visitor.expect_close() == 1009


async def test_a_burst_over_the_limit_is_rate_limited(app_factory: Callable[..., Quart]) -> None:
    # 1 message/s refill so that the burst of 10 is what counts, however slow the database
    async with (
        started(app_factory, CHAT_MESSAGES_PER_SECOND=1) as app,
        open_visitor(app) as visitor,
    ):
        session_id = new_session()
        for number in range(11):
            await visitor.send(visitor_frame(f"message {number}", session_id))
        assert (await visitor.receive())["message"] == auto_reply()
        assert await visitor.receive() == RATE_LIMITED
        await visitor.expect_nothing_queued()
        _, messages = await stored(app, session_id)
        assert [m.text for m in messages if m.sender_type == SenderType.USER] == [
            f"message {number}" for number in range(10)
        ]
        await visitor.send({"type": "ping", "timestamp": 5})  # still usable
        assert await visitor.receive() == {"type": "pong", "timestamp": 5}


# --- agents ---------------------------------------------------------------------------------


async def test_an_agent_gets_its_departments_active_conversations(app: Quart) -> None:
    _, token = await staff_login(app)
    with db(app):
        sales = await Conversation.create(session_id=uuid.uuid4(), department="sales")
        billing = await Conversation.create(
            session_id=uuid.uuid4(), department="billing", visitor_name="Rudo"
        )
        await Conversation.create(
            session_id=uuid.uuid4(), department="sales", status=ConversationStatus.CLOSED
        )
        await Conversation.filter(id=sales.id).update(
            last_active_at=datetime.now(UTC) + timedelta(minutes=1)
        )
        await sales.refresh_from_db()
    async with open_agent(app, token) as agent:
        established, active = agent.opening
        assert established == {
            "type": "connection_established",
            "role": "agent",
            "agent": STAFF_NAME,
            "departments": DEPARTMENTS,
        }
        assert active == {
            "type": "active_conversations",
            "conversations": [conversation_frame(sales), conversation_frame(billing)],
        }
    async with open_agent(app, token, departments="billing,nonsense") as agent:
        assert agent.opening[0]["departments"] == ["billing"]
        assert agent.opening[1]["conversations"] == [conversation_frame(billing)]


async def test_visitor_and_agents_round_trip(app: Quart) -> None:
    agent_user, token = await staff_login(app)
    _, other_token = await staff_login(app, "second@example.com")
    session_id = new_session()
    async with (
        open_agent(app, token) as agent,
        open_agent(app, other_token) as other,
        open_visitor(app) as visitor,
    ):
        await visitor.send(visitor_frame("I need a VPS", session_id))
        for watcher in (agent, other):
            notice = await watcher.receive()
            conversation, messages = await stored(app, session_id)  # stored before delivered
            assert notice["type"] == "new_conversation"
            assert without(notice["conversation"], "last_active_at") == without(
                conversation_frame(conversation), "last_active_at"
            )
            delivered = await watcher.receive()
            assert delivered == message_frame(messages[0], conversation, visitor_name=VISITOR_NAME)
            assert delivered["sender_type"] == "user"
        await visitor.expect_nothing_queued()  # no echo, and no automatic reply: agents are online

        await agent.send({"type": "message", "session_id": session_id, "message": " Which OS? "})
        reply = await visitor.receive()
        conversation, messages = await stored(app, session_id)
        assert [(m.sender_type, m.sender_name, m.text) for m in messages] == [
            (SenderType.USER, VISITOR_NAME, "I need a VPS"),
            (SenderType.AGENT, STAFF_NAME, "Which OS?"),
        ]
        assert reply == message_frame(
            messages[1], conversation, sender_type="agent", agent_id=agent_user.id
        )
        assert await other.receive() == {**reply, "type": "agent_message"}
        assert await agent.receive() == {**reply, "type": "agent_message"}

        await visitor.send(visitor_frame("Ubuntu please", session_id))
        delivered = [await agent.receive(), await other.receive()]
        conversation, messages = await stored(app, session_id)
        expected = message_frame(messages[2], conversation, visitor_name=VISITOR_NAME)
        assert delivered == [expected, expected]  # no second new_conversation notice
        await visitor.expect_nothing_queued()
        await agent.expect_nothing_queued()
        await other.expect_nothing_queued()


async def test_typing_is_relayed_both_ways(app: Quart) -> None:
    _, token = await staff_login(app)
    session_id = new_session()
    async with open_agent(app, token) as agent, open_visitor(app) as visitor:
        await visitor.send(visitor_frame("Hello", session_id))
        await agent.receive_many(2)  # new_conversation, message
        await message_count(app, session_id, 1)
        await visitor.send({"type": "typing", "sender": VISITOR_NAME, "is_typing": True})
        assert await agent.receive() == {
            "type": "typing",
            "session_id": session_id,
            "sender": VISITOR_NAME,
            "sender_type": "user",
            "is_typing": True,
        }
        await visitor.send({"type": "typing", "is_typing": False, "visitor_name": VISITOR_NAME})
        assert (await agent.receive())["is_typing"] is False
        for typing in (True, False):
            await agent.send({"type": "typing", "session_id": session_id, "is_typing": typing})
            assert await visitor.receive() == {
                "type": "typing",
                "sender": STAFF_NAME,
                "sender_type": "agent",
                "is_typing": typing,
            }
        # no further typing event (they come from a timer): watched on both sockets at once
        await asyncio.gather(visitor.expect_silence(), agent.expect_silence())
        # (an agent's typing goes to the visitor only)


async def test_an_agent_closes_a_conversation(app: Quart) -> None:
    _, token = await staff_login(app)
    session_id = new_session()
    async with open_agent(app, token) as agent, open_visitor(app) as visitor:
        await visitor.send(visitor_frame("Hello", session_id))
        await agent.receive_many(2)
        await agent.send({"type": "close", "session_id": session_id})
        notice = await visitor.receive()
        conversation, messages = await stored(app, session_id)
        assert conversation.status == ConversationStatus.CLOSED
        assert conversation.closed_at is not None
        assert (messages[-1].sender_type, messages[-1].sender_name, messages[-1].text) == (
            SenderType.SYSTEM,
            SYSTEM_SENDER,
            f"This conversation was closed by {STAFF_NAME}.",
        )
        assert notice == message_frame(messages[-1], conversation, type="system")
        assert await agent.receive() == {"type": "conversation_closed", "session_id": session_id}
        await agent.send({"type": "close", "session_id": session_id})  # already closed
        # An agent's frames are worked through in a task of their own (its ping would not wait
        # for them): watched for, on both sockets at once.
        await asyncio.gather(visitor.expect_silence(), agent.expect_silence())
    _, messages = await stored(app, session_id)
    assert len(messages) == 2


async def test_agent_input_errors(app: Quart) -> None:
    _, token = await staff_login(app)
    session_id = new_session()
    async with open_visitor(app, "billing") as visitor:
        await visitor.send(visitor_frame("Invoice question", session_id))
        await visitor.receive()
    unknown_session = error("Unknown session_id", "unknown_session")
    async with open_agent(app, token, departments="sales") as agent:
        for frame, expected in (
            ({"type": "message", "session_id": new_session(), "message": "hi"}, unknown_session),
            ({"type": "message", "session_id": session_id, "message": "hi"}, unknown_session),
            ({"type": "message", "session_id": "nope", "message": "hi"}, unknown_session),
            ({"type": "transfer", "session_id": session_id}, UNKNOWN_TYPE),
            ({"message": "no type"}, UNKNOWN_TYPE),
        ):
            await agent.send(frame)
            assert await agent.receive() == expected, frame
        await agent.send("{oops")
        assert await agent.receive() == INVALID_FORMAT
        await agent.send({"type": "ping", "timestamp": 9})
        assert await agent.receive() == {"type": "pong", "timestamp": 9}
    async with open_agent(app, token, departments="billing") as agent:
        await agent.send({"type": "message", "session_id": session_id, "message": "  "})
        assert await agent.receive() == EMPTY_MESSAGE
    _, messages = await stored(app, session_id)
    assert [m.sender_type for m in messages] == [SenderType.USER, SenderType.SYSTEM]


async def test_the_auto_reply_depends_on_agents_of_that_department(app: Quart) -> None:
    _, token = await staff_login(app)
    async with open_agent(app, token, departments="support") as agent:
        async with open_visitor(app, "sales") as visitor:
            await start_conversation(visitor, new_session())
        await agent.expect_nothing_queued()  # not its department
        async with open_visitor(app, "support") as visitor:
            await visitor.send(visitor_frame("Hello", new_session()))
            await agent.receive_many(2)
            await visitor.expect_nothing_queued()
    # the agent has left: support answers automatically again
    async with open_visitor(app, "support") as visitor:
        await visitor.send(visitor_frame("Hello?", new_session()))
        assert (await visitor.receive())["message"] == auto_reply("support")


# --- resume after a reconnect ---------------------------------------------------------------


async def away_replies(app: Quart, token: str, session_id: str) -> None:
    """While the visitor is away: one reply by REST, one by the agent socket."""
    conversation, _ = await stored(app, session_id)
    reply = await API(app).post(
        f"{SESSIONS}{conversation.id}/send_message/", {"message": "First reply"}, token=token
    )
    assert reply.status == 201, reply.body
    async with open_agent(app, token) as agent:
        await agent.send({"type": "message", "session_id": session_id, "message": "Second reply"})
        assert (await agent.receive())["type"] == "agent_message"


@pytest.mark.parametrize("how", ["query", "frame"])
async def test_resume_replays_exactly_what_was_missed(app: Quart, how: str) -> None:
    _, token = await staff_login(app)
    session_id = new_session()
    async with open_visitor(app) as visitor:
        last_seen = (await start_conversation(visitor, session_id))["id"]
        cookie = visitor.cookie
        resume_token = visitor.resume_token
    await away_replies(app, token, session_id)

    # a browser sends the cookie back by itself; another client can present the resume_token
    query = f"session_id={session_id}&after={last_seen}" if how == "query" else ""
    async with open_visitor(app, query=query, headers=cookie if how == "query" else {}) as visitor:
        if how == "frame":
            await visitor.send(
                {
                    "type": "resume",
                    "session_id": session_id,
                    "after": last_seen,
                    "resume_token": resume_token,
                }
            )
        else:
            assert visitor.session_id == session_id
        replayed = await visitor.receive_many(2)
        conversation, messages = await stored(app, session_id)
        assert [m.text for m in messages] == ["Hello", auto_reply(), "First reply", "Second reply"]
        assert replayed == [
            message_frame(message, conversation, sender_type="agent") for message in messages[2:]
        ]
        await visitor.expect_nothing_queued()
        # resuming again from the same point repeats nothing already delivered
        await visitor.send({"type": "resume", "session_id": session_id, "after": last_seen})
        await visitor.expect_nothing_queued()
        # then live: a REST reply and an agent's
        live = await API(app).post(
            f"{SESSIONS}{conversation.id}/send_message/", {"message": "Live"}, token=token
        )
        assert live.status == 201
        frame = await visitor.receive()
        assert without(frame, "agent_id") == live.body
        await visitor.expect_nothing_queued()


async def test_resume_from_zero_replays_agent_and_system_messages_only(app: Quart) -> None:
    _, token = await staff_login(app)
    session_id = new_session()
    async with open_visitor(app) as visitor:
        await start_conversation(visitor, session_id)
        await visitor.send(visitor_frame("Another", session_id))
        await message_count(app, session_id, 3)
        cookie = visitor.cookie
    await away_replies(app, token, session_id)
    query = f"session_id={session_id}&after=0"
    async with open_visitor(app, query=query, headers=cookie) as visitor:
        replayed = await visitor.receive_many(3)
        await visitor.expect_nothing_queued()
    _, messages = await stored(app, session_id)
    assert [(f["id"], f["sender_type"], f["message"]) for f in replayed] == [
        (m.id, str(m.sender_type), m.text) for m in messages if m.sender_type != SenderType.USER
    ]


async def test_a_replayed_message_is_the_frame_the_visitor_would_have_had_live(
    app: Quart,
) -> None:
    """The automatic reply, an agent's reply and the closing notice, live and replayed."""
    _, token = await staff_login(app)
    session_id = new_session()
    async with open_visitor(app) as visitor:
        live = [await start_conversation(visitor, session_id)]
        conversation, _ = await stored(app, session_id)
        api = API(app)
        path = f"{SESSIONS}{conversation.id}/"
        assert (
            await api.post(f"{path}send_message/", {"message": "Hi"}, token=token)
        ).status == 201
        live.append(await visitor.receive())
        assert (await api.post(f"{path}close_session/", token=token)).status == 200
        live.append(await visitor.receive())
        cookie = visitor.cookie
    query = f"session_id={session_id}&after=0"
    async with open_visitor(app, query=query, headers=cookie) as visitor:
        replayed = await visitor.receive_many(3)
    expected = [without(frame, "agent_id") for frame in live]
    assert replayed[1:] == expected[1:]  # the agent's reply, the closing notice
    assert replayed[0] == expected[0]  # the automatic reply


# --- staff REST -----------------------------------------------------------------------------


async def test_the_staff_api_is_for_staff_only(app: Quart) -> None:
    await make_user(app, CLIENT_EMAIL)
    client_token = await API(app).login(CLIENT_EMAIL)
    with db(app):
        conversation = await Conversation.create(session_id=uuid.uuid4(), department="sales")
    calls = [
        ("GET", SESSIONS, None),
        ("GET", f"{SESSIONS}?status=active", None),
        ("GET", f"{SESSIONS}{conversation.id}/", None),
        ("GET", f"{SESSIONS}active/", None),
        ("GET", f"{SESSIONS}stats/", None),
        ("POST", f"{SESSIONS}{conversation.id}/close_session/", None),
        ("POST", f"{SESSIONS}{conversation.id}/send_message/", {"message": "hi"}),
    ]
    api = API(app)
    for method, path, body in calls:
        anonymous = await api.call(method, path, body)
        assert (anonymous.status, anonymous.body["code"]) == (401, "not_authenticated"), path
        client = await api.call(method, path, body, token=client_token)
        assert (client.status, client.body["code"]) == (403, "permission_denied"), path
    with db(app):
        await conversation.refresh_from_db()
        assert conversation.status == ConversationStatus.ACTIVE
        assert await ChatMessage.all().count() == 0


async def seed_conversations(app: Quart) -> tuple[Conversation, Conversation, Conversation]:
    """sales (active, 3 messages, newest), support (closed, 1), billing (active, none)."""
    now = datetime.now(UTC)
    with db(app):
        sales = await Conversation.create(
            session_id=uuid.uuid4(), department="sales", visitor_name="Tariro"
        )
        for sender_type, name, text in (
            (SenderType.USER, "Tariro", "Hello"),
            (SenderType.SYSTEM, SYSTEM_SENDER, "Nobody is online"),
            (SenderType.AGENT, STAFF_NAME, "I am now"),
        ):
            await ChatMessage.create(
                conversation=sales, sender_type=sender_type, sender_name=name, text=text
            )
        support = await Conversation.create(
            session_id=uuid.uuid4(),
            department="support",
            status=ConversationStatus.CLOSED,
            closed_at=now,
        )
        await ChatMessage.create(
            conversation=support, sender_type=SenderType.USER, sender_name="Visitor", text="Bye"
        )
        billing = await Conversation.create(session_id=uuid.uuid4(), department="billing")
        for conversation, minutes in ((sales, 3), (support, 2), (billing, 1)):
            await Conversation.filter(id=conversation.id).update(
                last_active_at=now + timedelta(minutes=minutes)
            )
            await conversation.refresh_from_db()
    return sales, support, billing


async def test_session_listing_detail_and_stats(app: Quart) -> None:
    _, token = await staff_login(app)
    sales, support, billing = await seed_conversations(app)
    api = API(app)

    def summary(conversation: Conversation, count: int, last: str | None) -> Frame:
        return {**conversation_frame(conversation), "message_count": count, "last_message": last}

    everything = [
        summary(sales, 3, "I am now"),
        summary(support, 1, "Bye"),
        summary(billing, 0, None),
    ]
    listing = await api.get(SESSIONS, token=token)
    assert listing.status == 200
    assert listing.body == {"count": 3, "next": None, "previous": None, "results": everything}
    active = await api.get(f"{SESSIONS}?status=active", token=token)
    assert active.body["results"] == [everything[0], everything[2]]
    closed = await api.get(f"{SESSIONS}?status=closed", token=token)
    assert closed.body["results"] == [everything[1]]
    bogus = await api.get(f"{SESSIONS}?status=open", token=token)
    assert bogus.status == 400
    assert bogus.body["errors"] == {"status": ["invalid"]}
    assert (await api.get(f"{SESSIONS}active/", token=token)).body["results"] == active.body[
        "results"
    ]
    paged = await api.get(f"{SESSIONS}?page_size=2", token=token)
    assert paged.body["results"] == everything[:2]
    assert paged.body["next"] is not None

    detail = await api.get(f"{SESSIONS}{sales.id}/", token=token)
    assert detail.status == 200
    with db(app):
        messages = await ChatMessage.filter(conversation_id=sales.id).order_by("id")
    assert detail.body == {
        **conversation_frame(sales),
        "messages": [message_frame(m, sales) for m in messages],
    }
    assert [m["message"] for m in detail.body["messages"]] == [
        "Hello",
        "Nobody is online",
        "I am now",
    ]
    missing = await api.get(f"{SESSIONS}999999/", token=token)
    assert missing.status == 404

    async with open_agent(app, token, departments="sales,billing"):
        stats = await api.get(f"{SESSIONS}stats/", token=token)
    assert stats.status == 200
    assert stats.body == {
        "total": 3,
        "active": 2,
        "closed": 1,
        "messages": 4,
        "by_department": {
            "sales": {"active": 1, "closed": 0, "agents_online": 1},
            "support": {"active": 0, "closed": 1, "agents_online": 0},
            "billing": {"active": 1, "closed": 0, "agents_online": 1},
            "management": {"active": 0, "closed": 0, "agents_online": 0},
        },
    }
    after = await api.get(f"{SESSIONS}stats/", token=token)
    assert after.body["by_department"]["sales"]["agents_online"] == 0  # left: absent at once


async def test_send_message_is_delivered_live_and_close_session_too(app: Quart) -> None:
    staff, token = await staff_login(app)
    session_id = new_session()
    api = API(app)
    async with open_visitor(app) as visitor:
        await start_conversation(visitor, session_id)
        conversation, _ = await stored(app, session_id)
        path = f"{SESSIONS}{conversation.id}/"
        async with open_agent(app, token) as agent:
            sent = await api.post(
                f"{path}send_message/", {"message": "  We can help  "}, token=token
            )
            assert sent.status == 201, sent.body
            conversation, messages = await stored(app, session_id)
            assert sent.body == message_frame(messages[-1], conversation, sender_type="agent")
            assert sent.body["message"] == "We can help"
            frame = await visitor.receive()
            assert frame == {**sent.body, "agent_id": staff.id}
            assert await agent.receive() == {**frame, "type": "agent_message"}

            empty = await api.post(f"{path}send_message/", {"message": ""}, token=token)
            assert empty.status == 400
            unknown = await api.post(
                f"{SESSIONS}999999/send_message/", {"message": "x"}, token=token
            )
            assert unknown.status == 404

            closed = await api.post(f"{path}close_session/", token=token)
            assert closed.status == 200
            conversation, messages = await stored(app, session_id)
            assert closed.body == conversation_frame(conversation)
            assert closed.body["status"] == "closed" and closed.body["closed_at"] is not None
            notice = await visitor.receive()
            assert notice == message_frame(messages[-1], conversation, type="system")
            assert notice["message"] == f"This conversation was closed by {STAFF_NAME}."
            assert await agent.receive() == {
                "type": "conversation_closed",
                "session_id": session_id,
            }

            refused = await api.post(f"{path}send_message/", {"message": "late"}, token=token)
            assert (refused.status, refused.body["code"]) == (409, "session_closed")
            again = await api.post(f"{path}close_session/", token=token)
            assert again.status == 200
            await visitor.expect_nothing_queued()
            await agent.expect_nothing_queued()
    _, after = await stored(app, session_id)
    assert [m.id for m in after] == [m.id for m in messages]


# --- a slow consumer -------------------------------------------------------------------------


async def test_a_slow_consumer_is_closed_1013_while_others_keep_receiving(
    app_factory: Callable[..., Quart], caplog: pytest.LogCaptureFixture
) -> None:
    async with started(app_factory, CHAT_SEND_QUEUE_SIZE=3) as app:
        _, token = await staff_login(app)
        api = API(app)
        slow_session, steady_session = new_session(), new_session()
        async with (
            open_visitor(app, stalled=True) as slow,
            open_visitor(app) as steady,
        ):
            await start_conversation(slow, slow_session)
            await start_conversation(steady, steady_session)
            slow_conversation, _ = await stored(app, slow_session)
            steady_conversation, _ = await stored(app, steady_session)
            slow.connection.reading.clear()  # type: ignore[attr-defined]  # stops reading
            for number in range(10):
                for conversation in (slow_conversation, steady_conversation):
                    reply = await api.post(
                        f"{SESSIONS}{conversation.id}/send_message/",
                        {"message": f"reply {number}"},
                        token=token,
                    )
                    assert reply.status == 201
            received = [(await steady.receive())["message"] for _ in range(10)]
            assert received == [f"reply {number}" for number in range(10)]
            assert await slow.expect_close() == 1013
            await steady.send({"type": "ping", "timestamp": 1})
            assert await steady.receive() == {"type": "pong", "timestamp": 1}
    assert "Chat client too slow on /ws/chat/sales/: closed with 1013" in chat_warnings(caplog)


# --- events published out of id order (two workers, or a slower database round trip) ------


def delay_publish_of(
    monkeypatch: pytest.MonkeyPatch, app: Quart, text: str, seconds: float = 0.4
) -> None:
    """Hold back the publication of the events carrying ``text``, as a busier worker or a
    slower Redis round trip would: the message is stored first, published later."""
    broker = broker_of(app)
    publish = broker.publish

    async def delayed(channel: str, event: Frame) -> None:
        if event.get("message") == text:
            await asyncio.sleep(seconds)
        await publish(channel, event)

    monkeypatch.setattr(broker, "publish", delayed)


async def test_concurrent_agent_replies_all_reach_the_visitor(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = await staff_login(app)
    session_id = new_session()
    api = API(app)
    async with open_visitor(app) as visitor:
        await start_conversation(visitor, session_id)
        conversation, _ = await stored(app, session_id)
        path = f"{SESSIONS}{conversation.id}/send_message/"
        delay_publish_of(monkeypatch, app, "first")
        first = asyncio.create_task(api.post(path, {"message": "first"}, token=token))
        await message_count(app, session_id, 3)  # "first" is stored, its publication pending
        second = await api.post(path, {"message": "second"}, token=token)
        first_reply: Reply = await first
        assert first_reply.body["id"] < second.body["id"]
        frames = [await visitor.receive(), await visitor.receive(within=2)]
        assert sorted(frame["message"] for frame in frames) == ["first", "second"]


async def test_concurrent_visitor_messages_all_reach_the_agent(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = await staff_login(app)
    async with (
        open_agent(app, token) as agent,
        open_visitor(app) as early,
        open_visitor(app) as late,
    ):
        early_session, late_session = new_session(), new_session()
        delay_publish_of(monkeypatch, app, "first")
        await early.send(visitor_frame("first", early_session))
        await message_count(app, early_session, 1)
        await late.send(visitor_frame("second", late_session))
        frames = [await agent.receive(within=2) for _ in range(4)]
        assert sorted(f["message"] for f in frames if f["type"] == "message") == [
            "first",
            "second",
        ]


# --- the Redis broker -----------------------------------------------------------------------


def redis_department() -> str:
    """A department of this test's own: Redis pub/sub channels span every database."""
    return f"r{uuid.uuid4().hex[:12]}"


def redis_settings(url: str, department: str) -> dict[str, str]:
    return {"REDIS_URL": url, "CHAT_DEPARTMENTS": f"{','.join(DEPARTMENTS)},{department}"}


async def broker_listening(app: Quart) -> None:
    """The broker's subscriber connection is up (the window before is a test of its own)."""
    connected: asyncio.Event = broker_of(app)._connected  # type: ignore[attr-defined]
    await asyncio.wait_for(connected.wait(), 5)


async def subscribers(channel: str) -> int:
    redis = Redis.from_url(REDIS_URL)
    try:
        counts = await redis.pubsub_numsub(REDIS_PREFIX + channel)
    finally:
        await redis.aclose()
    return int(counts[0][1])


class RedisProxy:
    """A TCP proxy in front of the real Redis: it can hold traffic (a Redis slow to answer)
    and drop every connection and refuse new ones (a Redis restart)."""

    def __init__(self) -> None:
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.accepting = True
        self.connections = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/15"

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.close()
            return
        self.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self.writers.update((writer, upstream_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, upstream_writer, held=True)),
            asyncio.create_task(self._pipe(upstream_reader, writer, held=False)),
        ]
        self.tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, held: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if held:
                    await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def drop_all(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def close(self) -> None:
        self.accepting = False
        self.flowing.set()
        self.drop_all()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


@pytest.fixture
async def redis_proxy() -> AsyncIterator[RedisProxy]:
    proxy = RedisProxy()
    try:
        yield proxy
    finally:
        await proxy.close()


async def test_redis_broker_round_trip(app_factory: Callable[..., Quart]) -> None:
    department = redis_department()
    async with started(app_factory, **redis_settings(REDIS_URL, department)) as app:
        await broker_listening(app)
        agent_user = await make_user(app, STAFF_EMAIL, Role.STAFF)
        token = mint_token(agent_user.id)
        session_id = new_session()
        api = API(app)
        async with (
            open_agent(app, token, departments=department) as agent,
            open_visitor(app, department) as visitor,
        ):
            await visitor.send(visitor_frame("Over Redis", session_id, department=department))
            notice, delivered = await agent.receive_many(2)
            conversation, messages = await stored(app, session_id)
            assert notice["type"] == "new_conversation"
            assert notice["conversation"]["session_id"] == session_id
            assert delivered == message_frame(messages[0], conversation, visitor_name=VISITOR_NAME)
            await visitor.expect_silence()  # the agent's presence is in Redis: no auto reply

            await agent.send({"type": "message", "session_id": session_id, "message": "Hi!"})
            reply = await visitor.receive()
            conversation, messages = await stored(app, session_id)
            assert reply == message_frame(
                messages[1], conversation, sender_type="agent", agent_id=agent_user.id
            )
            assert await agent.receive() == {**reply, "type": "agent_message"}

            await visitor.send({"type": "typing", "is_typing": True, "sender": VISITOR_NAME})
            assert (await agent.receive())["type"] == "typing"
            await agent.send({"type": "typing", "session_id": session_id, "is_typing": True})
            assert (await visitor.receive())["sender_type"] == "agent"

            sent = await api.post(
                f"{SESSIONS}{conversation.id}/send_message/", {"message": "By REST"}, token=token
            )
            assert sent.status == 201
            assert without(await visitor.receive(), "agent_id") == sent.body
            assert (await agent.receive())["type"] == "agent_message"

            stats = await api.get(f"{SESSIONS}stats/", token=token)
            assert stats.body["by_department"][department]["agents_online"] == 1
        stats = await api.get(f"{SESSIONS}stats/", token=token)
        assert stats.body["by_department"][department]["agents_online"] == 0


async def test_redis_a_socket_opened_while_the_broker_connects_is_subscribed(
    app_factory: Callable[..., Quart], redis_proxy: RedisProxy
) -> None:
    """Sockets that subscribe while the broker's listener is (re)connecting to Redis must
    still be subscribed once it is connected: at start-up and after every Redis restart."""
    department = redis_department()
    url = await redis_proxy.start()
    redis_proxy.flowing.clear()  # Redis is slow to answer: the listener is still connecting
    async with started(app_factory, **redis_settings(url, department)) as app:

        async def connecting() -> bool:
            return redis_proxy.connections >= 1

        await eventually(connecting, "the broker's listener connects")
        async with open_visitor(app, department) as visitor:
            redis_proxy.flowing.set()
            await broker_listening(app)
            assert visitor.session_id is not None
            await visitor.send(visitor_frame("Hello", department=department))
            await message_count(app, visitor.session_id, 2)  # the automatic reply is stored
            assert await subscribers(f"session:{visitor.session_id}") == 1
            assert (await visitor.receive())["message"] == auto_reply(department)


async def redis_outage_conversation(
    app_factory: Callable[..., Quart],
    redis_proxy: RedisProxy,
    check: Callable[[Quart, ChatClient, ChatClient, str, list[Frame]], Awaitable[None]],
) -> None:
    """Visitor and agent talk over Redis; Redis restarts while the agent replies by REST;
    ``check`` sees what each side gets once the broker has reconnected."""
    department = redis_department()
    url = await redis_proxy.start()
    async with started(app_factory, **redis_settings(url, department)) as app:
        await broker_listening(app)
        agent_user = await make_user(app, STAFF_EMAIL, Role.STAFF)
        token = mint_token(agent_user.id)
        session_id = new_session()
        async with (
            open_agent(app, token, departments=department) as agent,
            open_visitor(app, department) as visitor,
        ):
            await visitor.send(visitor_frame("Hello", session_id, department=department))
            seen_by_agent = await agent.receive_many(2)
            await agent.send({"type": "message", "session_id": session_id, "message": "One"})
            assert (await visitor.receive())["message"] == "One"
            seen_by_agent.append(await agent.receive())

            redis_proxy.accepting = False  # Redis restarts ...
            redis_proxy.drop_all()
            conversation, _ = await stored(app, session_id)
            sent = await API(app).post(
                f"{SESSIONS}{conversation.id}/send_message/", {"message": "Two"}, token=token
            )
            assert sent.status == 201  # stored; its publication failed
            redis_proxy.accepting = True  # ... and is back
            await check(app, visitor, agent, session_id, seen_by_agent)


BACK_ON_REDIS = "Chat broker connected to Redis; this worker's sockets resync"


async def back_on_redis(caplog: pytest.LogCaptureFixture, seconds: float = 8.0) -> None:
    """The broker is subscribed again after an outage and has asked every socket of this
    worker to resync (it logs that as it asks them, before it awaits anything)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not any(r.getMessage() == BACK_ON_REDIS for r in caplog.records):
        assert asyncio.get_running_loop().time() < deadline, "the broker did not reconnect"
        await asyncio.sleep(0.02)


async def test_redis_restart_the_visitor_gets_the_reply_once(
    app_factory: Callable[..., Quart], redis_proxy: RedisProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis down: a reply stored on the visitor's own worker reaches it at once (delivered
    locally, whatever Redis does), and the resync after Redis is back does not repeat it."""

    async def check(
        app: Quart, visitor: ChatClient, agent: ChatClient, session_id: str, seen: list[Frame]
    ) -> None:
        missed = await visitor.receive(within=8)
        conversation, messages = await stored(app, session_id)
        assert without(missed, "agent_id") == message_frame(
            messages[-1], conversation, sender_type="agent"
        )
        await back_on_redis(caplog)
        # the resync was asked for before this ping: its replay, had it repeated the reply,
        # would come before the pong
        await visitor.expect_nothing_queued()
        assert missed["message"] == "Two"
        await visitor.expect_silence()  # nor anything Redis brings later

    await redis_outage_conversation(app_factory, redis_proxy, check)


async def test_redis_restart_the_agent_resyncs_without_duplicates(
    app_factory: Callable[..., Quart], redis_proxy: RedisProxy
) -> None:
    async def check(
        app: Quart, visitor: ChatClient, agent: ChatClient, session_id: str, seen: list[Frame]
    ) -> None:
        assert [frame["message"] for frame in seen[1:]] == ["Hello", "One"]
        resynced = await agent.receive(within=8)
        more = []
        with contextlib.suppress(AssertionError):
            more.append(await agent.receive(within=0.5))
        assert [(f["type"], f["message"]) for f in [resynced, *more]] == [("agent_message", "Two")]

    await redis_outage_conversation(app_factory, redis_proxy, check)


# --- a session id is not a password ----------------------------------------------------------

FORBIDDEN_SESSION = error("This conversation belongs to another connection", "forbidden_session")
ATTACKER_ADDRESS = "203.0.113.66"


async def victim_conversation(app: Quart, department: str = "support") -> tuple[str, ChatClient]:
    """A conversation started by a visitor (no agent online: it has an automatic reply)."""
    session_id = new_session()
    async with open_visitor(app, department) as victim:
        await victim.send(
            visitor_frame("My password is hunter2", session_id, department=department)
        )
        assert (await victim.receive())["message"] == auto_reply(department)
    return session_id, victim


async def reply_to(app: Quart, token: str, session_id: str, text: str) -> None:
    conversation, _ = await stored(app, session_id)
    sent = await API(app).post(
        f"{SESSIONS}{conversation.id}/send_message/", {"message": text}, token=token
    )
    assert sent.status == 201, sent.body


@pytest.mark.parametrize("department", ["support", "sales"])
@pytest.mark.parametrize("how", ["query", "frame"])
async def test_another_client_cannot_resume_a_conversation_by_its_session_id(
    app: Quart, how: str, department: str
) -> None:
    """The attack of the issue: an anonymous socket with the victim's ``session_id`` read the
    history and the live replies of the victim's chat. Now: an error, and nothing leaks."""
    _, token = await staff_login(app)
    session_id, _ = await victim_conversation(app, "support")
    query = f"session_id={session_id}&after=0" if how == "query" else ""
    async with chat_socket(
        app, f"/ws/chat/{department}/" + (f"?{query}" if query else ""), address=ATTACKER_ADDRESS
    ) as attacker:
        established, greeting = await attacker.receive_many(2)
        assert established["session_id"] != session_id  # a session of its own
        assert greeting == {"type": "system", "message": GREETING}
        if how == "frame":
            await attacker.send({"type": "resume", "session_id": session_id, "after": 0})
        assert await attacker.receive() == FORBIDDEN_SESSION
        await attacker.expect_nothing_queued()  # no history
        await reply_to(app, token, session_id, "Your new password is ...")
        await attacker.expect_nothing_queued()  # no live reply
        # a forged resume_token is no better than none
        await attacker.send(
            {"type": "resume", "session_id": session_id, "after": 0, "resume_token": "x.y"}
        )
        assert await attacker.receive() == FORBIDDEN_SESSION
        await attacker.expect_nothing_queued()
    _, messages = await stored(app, session_id)
    assert [m.sender_type for m in messages] == [SenderType.USER, SenderType.SYSTEM, "agent"]


async def test_a_session_id_issued_to_a_socket_but_taken_by_another_client_stays_theirs(
    app: Quart,
) -> None:
    """A socket's first message in the session id the server issued it looks nothing up first
    (no conversation can have it, unless another client took the id): taken, it is refused
    as any other client's conversation is, and the socket gets a fresh id of its own."""
    async with open_visitor(app, "support") as owner:
        issued = owner.session_id
        assert issued is not None
        async with open_visitor(app, "support", address=ATTACKER_ADDRESS) as other:
            await other.send(visitor_frame("Mine now", issued, department="support"))
            assert (await other.receive())["message"] == auto_reply("support")
        await owner.send(visitor_frame("Hello", department="support"))  # no session_id: its own
        # Still subscribed to the issued id, the owner socket may first see what is published
        # there (the other client's automatic reply): not this test's subject.
        frames = [await owner.receive()]
        if frames[0] != FORBIDDEN_SESSION:
            frames.append(await owner.receive())
        assert frames[-1] == FORBIDDEN_SESSION
        assert all(frame.get("message") != "Hello" for frame in frames)
        await owner.expect_silence()
        await owner.send(visitor_frame("Hello again", department="support"))
        reply = await owner.receive()
        assert reply["message"] == auto_reply("support")
        assert reply["session_id"] not in (issued, None)
    _, messages = await stored(app, issued)
    assert [m.text for m in messages] == ["Mine now", auto_reply("support")]
    _, own = await stored(app, reply["session_id"])
    assert [m.text for m in own] == ["Hello again", auto_reply("support")]


@pytest.mark.parametrize("department", ["support", "sales"])
async def test_another_client_cannot_post_into_a_conversation(app: Quart, department: str) -> None:
    """A post with someone else's ``session_id`` never lands in their conversation: it starts
    one of the poster's own, and the poster is told (with its new session id)."""
    _, token = await staff_login(app)
    session_id, _ = await victim_conversation(app, "support")
    async with open_visitor(app, department, address=ATTACKER_ADDRESS) as attacker:
        await attacker.send(visitor_frame("Please reset it", session_id, department=department))
        assert await attacker.receive() == {
            **FORBIDDEN_SESSION,
            "message": "This conversation belongs to another connection: your message starts "
            "a new conversation",
            "session_id": attacker.session_id,
        }
        own = await attacker.receive()  # the automatic reply of its own conversation
        assert own["session_id"] == attacker.session_id
        assert own["message"] == auto_reply(department)
        # the same (refused) id again: the same own conversation, no second warning
        await attacker.send(visitor_frame("Hello?", session_id, department=department))
        assert attacker.session_id is not None
        await message_count(app, attacker.session_id, 3)
        await reply_to(app, token, session_id, "Only for the victim")
        await attacker.expect_nothing_queued()
    _, messages = await stored(app, session_id)
    assert [m.text for m in messages] == [
        "My password is hunter2",
        auto_reply("support"),
        "Only for the victim",
    ]
    theirs, posted = await stored(app, attacker.session_id)
    assert theirs.department == department
    assert [m.text for m in posted] == ["Please reset it", auto_reply(department), "Hello?"]


async def test_a_staff_only_conversation_is_not_reachable_from_a_public_department(
    app: Quart,
) -> None:
    staff, token = await staff_login(app)
    session_id = new_session()
    async with open_visitor(app, "management", query=f"token={token}") as insider:
        await insider.send(visitor_frame("Q3 numbers", session_id, department="management"))
        assert (await insider.receive())["message"] == auto_reply("management")
        cookie = insider.cookie
    # not even the same browser, nor the same user, from another department
    for headers, query in ((cookie, ""), ({}, f"token={token}")):
        async with open_visitor(app, "sales", query=query, headers=headers) as outsider:
            await outsider.send({"type": "resume", "session_id": session_id, "after": 0})
            assert await outsider.receive() == FORBIDDEN_SESSION
            await outsider.send(visitor_frame("hi", session_id))
            assert (await outsider.receive())["code"] == "forbidden_session"
    conversation, messages = await stored(app, session_id)
    assert conversation.department == "management" and conversation.user_id == staff.id
    assert [m.text for m in messages] == ["Q3 numbers", auto_reply("management")]


async def test_the_same_browser_continues_after_a_reconnect_as_the_widget_does(
    app: Quart,
) -> None:
    """The widget keeps its page-load session id and sends it on every message; after a
    reconnect it opens a plain socket (no query): the browser's cookie is what proves it."""
    session_id = new_session()
    async with open_visitor(app) as first:
        await start_conversation(first, session_id)
        cookie = first.cookie
    async with open_visitor(app, headers=cookie) as second:
        assert second.set_cookies == []  # the same key: nothing to set again
        await second.send(visitor_frame("Still there?", session_id))
        await message_count(app, session_id, 3)
        await second.expect_nothing_queued()  # no error, and one automatic reply per conversation
    with db(app):
        assert await Conversation.all().count() == 1


async def test_the_resume_token_and_the_signed_in_user_prove_a_conversation(app: Quart) -> None:
    await make_user(app, CLIENT_EMAIL)
    client_token = await API(app).login(CLIENT_EMAIL)
    await make_user(app, "other@example.com")
    other_token = await API(app).login("other@example.com")
    anonymous, signed_in = new_session(), new_session()
    async with open_visitor(app) as visitor:
        await start_conversation(visitor, anonymous)
        resume_token = visitor.resume_token
    async with open_visitor(app, query=f"token={client_token}") as visitor:
        await visitor.send(visitor_frame("Hello", signed_in))
        await visitor.receive()
    query = f"session_id={anonymous}&after=0&resume_token={resume_token}"
    async with open_visitor(app, query=query, address=ATTACKER_ADDRESS) as holder:
        assert holder.session_id == anonymous
        assert (await holder.receive())["message"] == auto_reply()
    async with open_visitor(app, query=f"session_id={signed_in}&token={client_token}") as same:
        assert same.session_id == signed_in
        assert (await same.receive())["message"] == auto_reply()
    async with open_visitor(app, query=f"session_id={signed_in}&token={other_token}") as other:
        assert other.session_id != signed_in
        assert await other.receive() == FORBIDDEN_SESSION
        await other.expect_nothing_queued()


async def test_a_new_client_chosen_session_id_still_starts_a_conversation(app: Quart) -> None:
    chosen = new_session()
    async with open_visitor(app, query=f"session_id={chosen}") as visitor:
        assert visitor.session_id == chosen  # unknown yet: adopted
        await start_conversation(visitor, chosen)
    conversation, _ = await stored(app, chosen)
    assert conversation.owner_key_hash is not None


# --- flooding: every frame kind is limited ---------------------------------------------------


async def test_a_typing_flood_is_closed_1008_and_never_reaches_the_agents(
    app: Quart, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's 20,000 typing frames got the department's agent socket closed (1013, slow
    consumer). Now the agent sees one typing event, the flooder one error, then 1008."""
    _, token = await staff_login(app)
    session_id = new_session()
    async with open_agent(app, token, departments="sales") as agent, open_visitor(app) as flooder:
        await flooder.send(visitor_frame("Hello", session_id))
        await agent.receive_many(2)  # new_conversation, message
        for _ in range(2000):
            await flooder.send({"type": "typing", "is_typing": True, "visitor_name": "x"})
        assert await flooder.receive() == error("Too many typing frames", "rate_limited")
        assert await flooder.expect_close() == 1008
        typing = await agent.receive()
        assert typing["type"] == "typing" and typing["session_id"] == session_id
        await agent.expect_silence()  # several typing intervals (CHAT_TYPING_INTERVAL)
        async with open_visitor(app) as visitor:  # the agent socket is alive and well
            await visitor.send(visitor_frame("Anyone?", new_session()))
            assert (await agent.receive())["type"] == "new_conversation"
            assert (await agent.receive())["message"] == "Anyone?"
    assert "Chat client flooding on /ws/chat/sales/: closed with 1008" in chat_warnings(caplog)


@pytest.mark.parametrize(
    ("frame", "name", "burst"),
    [
        ({"type": "typing", "is_typing": False}, "typing", 20),
        ({"type": "resume", "session_id": str(uuid.UUID(int=1)), "after": 0}, "resume", 5),
        ({"type": "pong", "timestamp": 1}, "keepalive", 10),
        ({"type": "subscribe"}, "invalid", 10),
    ],
)
async def test_excess_frames_of_a_kind_get_one_error_and_the_socket_stays_open(
    app: Quart, frame: Frame, name: str, burst: int
) -> None:
    async with open_visitor(app) as visitor:
        for _ in range(burst + 5):
            await visitor.send(frame)
        # Then a frame of another kind whose answer follows every answer to the flood (the
        # socket handles its frames in order): a ping, or when pings are the flood an unknown
        # type.
        if name == "keepalive":
            last_frame: Frame = {"type": "subscribe"}
            last_answer = UNKNOWN_TYPE
        else:
            last_frame = {"type": "ping", "timestamp": 3}
            last_answer = {"type": "pong", "timestamp": 3}
        await visitor.send(last_frame)
        answers = []
        while (answer := await visitor.receive()) != last_answer:
            answers.append(answer)
        limited = error(f"Too many {name} frames", "rate_limited")
        assert answers.count(limited) == 1, answers
        if name == "invalid":
            assert answers == [UNKNOWN_TYPE] * burst + [limited]
        if name == "keepalive":  # the ping below is of the flooded kind: refilled first
            await asyncio.sleep(1.2 / FIXED_LIMITS["keepalive"][0])
        await visitor.send({"type": "ping", "timestamp": 7})
        assert await visitor.receive() == {"type": "pong", "timestamp": 7}


async def test_typing_is_coalesced_to_one_event_per_interval(
    app_factory: Callable[..., Quart],
) -> None:
    # Long enough that the 16 frames below are handled within one interval, even on a busy
    # machine (the tests' default is 0.1 s).
    interval = 0.4
    async with (
        started(app_factory, CHAT_TYPING_INTERVAL=interval) as app,
        open_agent(app, (await staff_login(app))[1], departments="sales") as agent,
        open_visitor(app) as visitor,
    ):
        session_id = new_session()
        await visitor.send(visitor_frame("Hello", session_id))
        await agent.receive_many(2)
        loop = asyncio.get_running_loop()
        for number in range(16):  # within the typing burst: none is refused
            await visitor.send({"type": "typing", "is_typing": number % 2 == 0})
        arrivals: list[tuple[float, Frame]] = []
        with contextlib.suppress(AssertionError):
            while True:
                # a later event would come at most an interval after the previous one
                frame = await agent.receive(within=2 * interval)
                arrivals.append((loop.time(), frame))
        assert 1 <= len(arrivals) <= 2, arrivals
        assert all(f["type"] == "typing" and f["session_id"] == session_id for _, f in arrivals)
        assert arrivals[-1][1]["is_typing"] is False  # the latest state wins
        if len(arrivals) == 2:
            assert arrivals[1][0] - arrivals[0][0] >= 0.9 * interval
        await visitor.expect_silence(0)


async def test_agents_have_their_own_higher_message_rate(app_factory: Callable[..., Quart]) -> None:
    async with started(app_factory) as app:
        _, token = await staff_login(app)
        session_id = new_session()
        async with open_visitor(app) as visitor:
            await start_conversation(visitor, session_id)
        async with open_agent(app, token, departments="sales") as agent:
            for number in range(30):  # a visitor may send 10 at once; an agent 40
                await agent.send(
                    {"type": "message", "session_id": session_id, "message": f"r{number}"}
                )
            echoes = await agent.receive_many(30)
            assert [e["message"] for e in echoes] == [f"r{n}" for n in range(30)]
            await agent.expect_nothing_queued()
    async with started(app_factory, CHAT_AGENT_MESSAGES_PER_SECOND=1) as app:
        _, token = await staff_login(app, "slower@example.com")
        session_id = new_session()
        async with open_visitor(app) as visitor:
            await start_conversation(visitor, session_id)
        async with open_agent(app, token, departments="sales") as agent:
            for _ in range(11):
                await agent.send({"type": "message", "session_id": session_id, "message": "r"})
            frames = await agent.receive_many(11)
            assert frames.count(RATE_LIMITED) == 1


# --- per client address: sockets and new conversations -----------------------------------------

TOO_MANY_CONVERSATIONS = error(
    "Too many new conversations from your address; try again in a minute",
    "too_many_conversations",
)


def unique_address() -> str:
    """An IPv6 address in a /64 of its own: keys on the shared Redis never collide."""
    return f"2001:db8:{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}::1"


async def until_closed(client: ChatClient) -> int:
    """Read frames until the server closes the socket; the close code."""
    for _ in range(1000):
        try:
            await client.receive_raw()
        except WebsocketDisconnectError as close:
            return int(close.args[0])
    raise AssertionError("still open after 1000 frames")


async def refused_for_sockets(app: Quart, address: str) -> None:
    """Accepted (so the browser can see why), then closed 1013 before any frame."""
    async with chat_socket(app, "/ws/chat/sales/", address=address) as extra:
        assert await extra.expect_close() == 1013
        assert extra.accepted


async def open_many(
    stack: contextlib.AsyncExitStack, app: Quart, address: str, count: int
) -> list[ChatClient]:
    return [
        await stack.enter_async_context(open_visitor(app, address=address)) for _ in range(count)
    ]


def broker_settings(broker: str, department: str) -> dict[str, Any]:
    """The settings of a test's broker: ``in-process`` (no REDIS_URL), ``redis`` (the
    shared Redis), ``redis-unreachable`` (nothing listens at REDIS_URL: a Redis outage)."""
    url = f"redis://127.0.0.1:{closed_port()}/0" if broker == "redis-unreachable" else REDIS_URL
    settings = redis_settings(url, department)
    if broker == "in-process":
        del settings["REDIS_URL"]
    return settings


def limit_fallback_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum("Chat limits: Redis cannot be asked" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("broker", ["in-process", "redis", "redis-unreachable"])
async def test_sockets_per_client_address_are_limited_and_released_on_every_path(
    app_factory: Callable[..., Quart], broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Also while Redis cannot be reached: this worker's own count decides (it used to let
    every socket through), and the fallback is logged once, not per socket."""
    department = redis_department()
    settings: dict[str, Any] = {"CHAT_MAX_SOCKETS_PER_CLIENT": 3}
    settings.update(broker_settings(broker, department))
    address, neighbour = unique_address(), unique_address()
    async with started(app_factory, **settings) as app:
        if broker == "redis":  # until it listens, Redis is not asked and nothing is counted
            await broker_listening(app)
        _, token = await staff_login(app)
        async with contextlib.AsyncExitStack() as stack:
            await open_many(stack, app, address, 3)
            await refused_for_sockets(app, address)
            await open_many(stack, app, neighbour, 3)  # another address: its own count
            async with open_agent(app, token):  # agents (staff tokens) are not counted
                pass
        # every way a socket can end gives its slot back
        async with contextlib.AsyncExitStack() as stack:
            await open_many(stack, app, address, 3)  # the client left: all three free again
        async with chat_socket(app, "/ws/chat/sales/?token=garbage", address=address) as bad:
            assert await bad.expect_close() == 4001
        async with chat_socket(app, "/ws/chat/management/", address=address) as anonymous:
            assert await anonymous.expect_close() == 4001
        async with open_visitor(app, address=address) as big:
            await big.send("x" * 20000)
            assert await big.expect_close() == 1009
        async with open_visitor(app, address=address) as flooder:
            for _ in range(200):
                await flooder.send({"type": "resume", "session_id": new_session()})
            assert await until_closed(flooder) == 1008
        async with contextlib.AsyncExitStack() as stack:
            await open_many(stack, app, address, 3)
            await refused_for_sockets(app, address)
    assert limit_fallback_warnings(caplog) == (1 if broker == "redis-unreachable" else 0)


async def test_a_crashed_workers_socket_slots_expire_in_redis(
    app_factory: Callable[..., Quart],
) -> None:
    department = redis_department()
    address = unique_address()
    async with started(
        app_factory, CHAT_MAX_SOCKETS_PER_CLIENT=2, **redis_settings(REDIS_URL, department)
    ) as app:
        from slyker.chat.limits import client_key

        key = f"{REDIS_PREFIX}sockets:{client_key(address)}"
        await broker_listening(app)  # until it listens, Redis is not asked
        redis = Redis.from_url(REDIS_URL)
        try:
            # two slots of a worker that died: one expired a second ago, one still "live"
            now = datetime.now(UTC).timestamp()
            await redis.zadd(key, {"dead-worker-1": now - 1, "dead-worker-2": now + 30})
            async with open_visitor(app, address=address):
                assert await redis.zcard(key) == 2  # the expired one was dropped
                assert 0 < await redis.ttl(key) <= 30  # and the key itself expires
                await refused_for_sockets(app, address)
            assert await redis.zrange(key, 0, -1) == [b"dead-worker-2"]
        finally:
            await redis.delete(key)
            await redis.aclose()


async def wait_for_a_fresh_minute() -> None:
    """New conversations are counted per clock minute: keep a test inside one. The test takes
    well under a second, so only a minute's last 5 s are too late to start in: about one run in
    eleven waits, up to 5 s (with a 10 s margin it was one in five, up to 10 s)."""
    seconds = datetime.now(UTC).timestamp() % 60
    if seconds > 55:
        await asyncio.sleep(60 - seconds + 0.1)


@pytest.mark.parametrize("broker", ["in-process", "redis", "redis-unreachable"])
async def test_new_conversations_per_client_address_are_limited(
    app_factory: Callable[..., Quart], broker: str, caplog: pytest.LogCaptureFixture
) -> None:
    department = redis_department()
    settings: dict[str, Any] = {"CHAT_NEW_CONVERSATIONS_PER_MINUTE": 3}
    settings.update(broker_settings(broker, department))
    address = unique_address()
    await wait_for_a_fresh_minute()
    async with started(app_factory, **settings) as app:
        if broker == "redis":  # until it listens, Redis is not asked and nothing is counted
            await broker_listening(app)
        cookie: dict[str, str] = {}
        first = new_session()
        for session_id in (first, new_session(), new_session()):
            async with open_visitor(app, department, address=address, headers=cookie) as visitor:
                await visitor.send(visitor_frame("Hi", session_id, department=department))
                await visitor.receive()
                cookie = cookie or visitor.cookie
        async with open_visitor(app, department, address=address, headers=cookie) as visitor:
            refused = new_session()
            await visitor.send(visitor_frame("Hi", refused, department=department))
            assert await visitor.receive() == TOO_MANY_CONVERSATIONS
            # a conversation this browser already has goes on: it is not a new one
            await visitor.send(visitor_frame("Still me", first, department=department))
            await message_count(app, first, 3)
            await visitor.expect_nothing_queued()
        with db(app):
            assert not await Conversation.exists(session_id=uuid.UUID(refused))
            assert await Conversation.filter(department=department).count() == 3
        async with open_visitor(app, department, address=unique_address()) as visitor:
            await visitor.send(visitor_frame("Hi", new_session(), department=department))
            assert (await visitor.receive())["message"] == auto_reply(department)
    assert limit_fallback_warnings(caplog) == (1 if broker == "redis-unreachable" else 0)


# --- a staff member's access is re-checked while the socket lives --------------------------------


async def deactivate(app: Quart, user: User, **changes: Any) -> None:
    with db(app):
        await User.filter(id=user.id).update(**(changes or {"is_active": False}))


@pytest.mark.parametrize(
    ("change", "code"),
    [({"is_active": False}, 4001), ({"user_type": Role.CLIENT}, 4003)],
    ids=["deactivated", "no-longer-staff"],
)
async def test_an_agent_losing_access_is_closed_on_the_next_check(
    app_factory: Callable[..., Quart], change: dict[str, Any], code: int
) -> None:
    async with started(app_factory, CHAT_AUTH_RECHECK_SECONDS=0.1) as app:
        agent_user, token = await staff_login(app)
        async with open_agent(app, token) as agent:
            await agent.expect_nothing_queued()
            await deactivate(app, agent_user, **change)
            # it sends nothing, but would keep receiving every visitor's messages
            assert await agent.expect_close(within=3) == code


async def test_a_deactivated_agent_cannot_act_before_the_timer(app: Quart) -> None:
    agent_user, token = await staff_login(app)
    session_id = new_session()
    async with open_visitor(app) as visitor:
        await start_conversation(visitor, session_id)
    async with open_agent(app, token) as agent:
        await deactivate(app, agent_user)
        await agent.send({"type": "message", "session_id": session_id, "message": "Bye"})
        assert await agent.expect_close() == 4001
    _, messages = await stored(app, session_id)
    assert [m.text for m in messages] == ["Hello", auto_reply()]  # "Bye" was not sent


async def test_an_agent_whose_token_expires_is_closed_4001(
    app_factory: Callable[..., Quart],
) -> None:
    # Sockets are looked at every CHAT_AUTH_RECHECK_SECONDS: the close follows the expiry.
    async with started(app_factory, CHAT_AUTH_RECHECK_SECONDS=0.1) as app:
        agent_user, _ = await staff_login(app)
        # exp is a whole second: the first one at least 0.4 s away
        expires = datetime.fromtimestamp(math.ceil(time.time() + 0.4), UTC)
        token = mint_token(agent_user.id, expires_at=expires)
        async with open_agent(app, token) as agent:
            # open, through several checks, until just before the expiry
            await agent.expect_silence(max(0.0, expires.timestamp() - time.time() - 0.15))
            assert await agent.expect_close(within=3) == 4001


async def test_a_staff_only_visitor_socket_is_re_checked_too(app: Quart) -> None:
    staff, token = await staff_login(app)
    async with open_visitor(app, "management", query=f"token={token}") as insider:
        await deactivate(app, staff)
        await insider.send(visitor_frame("Still here", new_session(), department="management"))
        assert await insider.expect_close() == 4001
    with db(app):
        assert await Conversation.all().count() == 0


# --- bad frames are answered, never crash the socket -------------------------------------------

INVALID_AFTER = error(
    "after must be the id of the last message received (a whole number)", "invalid_after"
)
INVALID_SESSION = error("session_id must be a UUID", "invalid_session")
INVALID_TEXT = error("Message contains characters that cannot be sent", "invalid_text")
SOME_SESSION = str(uuid.UUID(int=7))
UNKNOWN_SESSION = error("Unknown session_id", "unknown_session")


def resume_with(after: str) -> str:
    return f'{{"type": "resume", "session_id": "{SOME_SESSION}", "after": {after}}}'


BAD_FRAMES = {
    "nested-arrays": ("[" * 20000 + "]" * 20000, INVALID_FORMAT),
    "nested-objects": ('{"a":' * 5000 + "1" + "}" * 5000, INVALID_FORMAT),
    "5000-digit-number": ('{"type": "ping", "timestamp": ' + "9" * 5000 + "}", INVALID_FORMAT),
    "lone-surrogate": ('{"type": "message", "message": "hi \\ud800"}', INVALID_TEXT),
    "nul": ('{"type": "message", "message": "a\\u0000b"}', INVALID_TEXT),
    "type-array": ('{"type": ["message"], "message": "hi"}', UNKNOWN_TYPE),
    "type-object": ('{"type": {"a": 1}}', UNKNOWN_TYPE),
    "after-superscript": (resume_with('"\u00b2"'), INVALID_AFTER),
    "after-5000-digits": (resume_with('"' + "9" * 5000 + '"'), INVALID_AFTER),
    "after-huge": (resume_with(str(10**30)), INVALID_AFTER),
    "after-negative": (resume_with("-1"), INVALID_AFTER),
    "after-infinite": (resume_with("1e400"), INVALID_AFTER),
    "after-true": (resume_with("true"), INVALID_AFTER),
    "after-float": (resume_with("1.5"), INVALID_AFTER),
    "session-number": ('{"type": "resume", "session_id": 12345, "after": 0}', INVALID_SESSION),
    "session-surrogate": (
        '{"type": "resume", "session_id": "\\udfff", "after": 0}',
        INVALID_SESSION,
    ),
    "ping-infinite": ('{"type": "ping", "timestamp": 1e999}', {"type": "pong", "timestamp": None}),
    "ping-nested": ('{"type": "ping", "timestamp": [[[1]]]}', {"type": "pong", "timestamp": None}),
    "ping-huge": (
        '{"type": "ping", "timestamp": ' + "9" * 300 + "}",
        {"type": "pong", "timestamp": None},
    ),
}


def strict_json(raw: str | bytes) -> Any:
    """JSON as a browser parses it: no NaN or Infinity."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(raw, parse_constant=refuse)


@pytest.mark.parametrize(("raw", "answer"), BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
async def test_a_bad_frame_gets_an_error_frame_and_the_socket_stays_open(
    app_factory: Callable[..., Quart],
    caplog: pytest.LogCaptureFixture,
    raw: str,
    answer: Frame,
) -> None:
    async with (
        started(app_factory, CHAT_MAX_MESSAGE_BYTES=65536) as app,
        open_visitor(app) as visitor,
    ):
        await visitor.send(raw)
        assert strict_json(await visitor.receive_raw()) == answer
        await visitor.send({"type": "ping", "timestamp": 1})
        assert await visitor.receive() == {"type": "pong", "timestamp": 1}
        with db(app):
            assert await ChatMessage.all().count() == 0
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        ("after=%C2%B2", INVALID_AFTER),
        ("after=" + "9" * 5000, INVALID_AFTER),
        ("after=99999999999999999999", INVALID_AFTER),
        ("session_id=not-a-uuid", INVALID_SESSION),
    ],
    ids=["superscript", "5000-digits", "huge", "session"],
)
async def test_a_bad_resume_query_gets_an_error_frame(
    app: Quart, caplog: pytest.LogCaptureFixture, query: str, answer: Frame
) -> None:
    async with open_visitor(app, query=query) as visitor:
        assert await visitor.receive() == answer
        await start_conversation(visitor, new_session())
    assert "Traceback" not in caplog.text


async def test_names_are_cleaned_and_agents_get_the_same_answers(app: Quart) -> None:
    _, token = await staff_login(app)
    session_id = new_session()
    async with open_visitor(app) as visitor:
        await visitor.send(
            '{"type": "message", "message": "Hi", "visitor_name": "Ta\\u0000ri\\ud800ro", '
            f'"session_id": "{session_id}"}}'
        )
        await visitor.receive()
    conversation, messages = await stored(app, session_id)
    assert conversation.visitor_name == "Tariro" and messages[0].sender_name == "Tariro"
    in_conversation = f'"type": "message", "session_id": "{session_id}", "message"'
    async with open_agent(app, token) as agent:
        for raw, answer in (
            (f'{{{in_conversation}: "a\\u0000"}}', INVALID_TEXT),
            (f'{{{in_conversation}: "\\ud83d"}}', INVALID_TEXT),
            ('{"type": ["close"]}', UNKNOWN_TYPE),
            ('{"type": "close", "session_id": {"a": 1}}', UNKNOWN_SESSION),
            ("[" * 3000, INVALID_FORMAT),
        ):
            await agent.send(raw)
            assert await agent.receive() == answer, raw
        reply = await API(app).post(
            f"{SESSIONS}{conversation.id}/send_message/", {"message": "a\u0000b"}, token=token
        )
        assert reply.status == 400, reply.body
    _, after = await stored(app, session_id)
    assert len(after) == len(messages)


# --- many visitors per agent: batches, group commit, fewer tasks ---------------------------------


async def test_an_agent_answering_50_messages_in_a_burst_gets_all_delivered_in_order(
    app: Quart,
) -> None:
    """An agent socket's frames are worked through in batches (not one round trip after
    another) and agents have their own, higher rate: a burst of 50 replies is neither refused
    (rate_limited) nor reordered, and each is acknowledged with the id it was stored under."""
    _, token = await staff_login(app)
    session_id = new_session()
    async with open_agent(app, token, departments="sales") as agent, open_visitor(app) as visitor:
        await visitor.send(visitor_frame("Hello", session_id))
        await agent.receive_many(2)  # new_conversation, message
        texts = [f"Reply {n}" for n in range(50)]
        for n, text in enumerate(texts):
            reply = {"type": "message", "session_id": session_id, "message": text}
            await agent.send({**reply, "client_id": n})
        delivered = await visitor.receive_many(50)
        seen_by_agent = await agent.receive_many(100)  # an ack and an echo per reply
    _, messages = await stored(app, session_id)
    assert [m.text for m in messages] == ["Hello", *texts]
    replies = messages[1:]
    assert [frame["message"] for frame in delivered] == texts
    assert [frame["id"] for frame in delivered] == [m.id for m in replies]
    assert {frame["sender_type"] for frame in delivered} == {"agent"}
    acks = [frame for frame in seen_by_agent if frame["type"] == "ack"]
    assert acks == [{"type": "ack", "id": m.id, "client_id": n} for n, m in enumerate(replies)]
    echoes = [frame for frame in seen_by_agent if frame["type"] == "agent_message"]
    assert [frame["id"] for frame in echoes] == [m.id for m in replies]


async def rename_messages_table(app: Quart, old: str, new: str) -> None:
    with db(app):
        await connections.get("default").execute_script(f"ALTER TABLE {old} RENAME TO {new}")


async def test_a_visitor_message_that_cannot_be_stored_is_answered_not_sent(app: Quart) -> None:
    """The database refuses the insert (its table is gone for a moment): the sender gets a
    not_sent error naming its frame, never an ack or silence; nothing is stored or delivered;
    the next message, once the table is back, is stored and acknowledged."""
    session_id = new_session()
    async with open_visitor(app) as visitor:
        await start_conversation(visitor, session_id)
        await rename_messages_table(app, "chat_message", "chat_message_away")
        try:
            await visitor.send({**visitor_frame("Lost?", session_id), "client_id": "m2"})
            assert await visitor.receive() == {
                "type": "error",
                "message": "Your message was not sent (the service is having trouble); "
                "please send it again",
                "code": "not_sent",
                "client_id": "m2",
            }
        finally:
            await rename_messages_table(app, "chat_message_away", "chat_message")
        await visitor.send({**visitor_frame("Again", session_id), "client_id": "m3"})
        ack = await visitor.receive()
        await visitor.expect_nothing_queued()
    _, messages = await stored(app, session_id)
    assert [m.text for m in messages] == ["Hello", auto_reply(), "Again"]
    assert ack == {"type": "ack", "id": messages[-1].id, "client_id": "m3"}


async def test_an_agent_reply_that_cannot_be_stored_is_answered_not_sent(app: Quart) -> None:
    _, token = await staff_login(app)
    session_id = new_session()
    async with open_agent(app, token, departments="sales") as agent, open_visitor(app) as visitor:
        await visitor.send(visitor_frame("Hello", session_id))
        await agent.receive_many(2)
        await rename_messages_table(app, "chat_message", "chat_message_away")
        try:
            reply = {"type": "message", "session_id": session_id, "message": "Lost?"}
            await agent.send({**reply, "client_id": "r1"})
            answer = await agent.receive()
        finally:
            await rename_messages_table(app, "chat_message_away", "chat_message")
        assert (answer["type"], answer["code"], answer["client_id"]) == ("error", "not_sent", "r1")
        await visitor.expect_nothing_queued()
    _, messages = await stored(app, session_id)
    assert [m.text for m in messages] == ["Hello"]


async def test_an_idle_visitor_socket_adds_two_tasks_to_quarts_three(app: Quart) -> None:
    """The handler, its receiver and its sender: pings, slot renewals and identity re-checks
    are one task per worker, however many sockets are open."""
    count = 10
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(open_visitor(app))  # the worker's upkeep task starts
        before = len(asyncio.all_tasks())
        for _ in range(count):
            await stack.enter_async_context(open_visitor(app))
        added = len(asyncio.all_tasks()) - before
    # Quart runs three per connection (the ASGI call, its receiver, the handler): two of ours.
    assert added <= count * 5, added / count


async def test_every_staff_chat_operation_declares_its_response(
    app_factory: Callable[..., Quart],
) -> None:
    async with started(app_factory, API_DOCS=True) as app:
        spec = await (await app.test_client().get("/openapi.json")).get_json()
    operations = {
        (path, method): operation
        for path, item in spec["paths"].items()
        if path.startswith("/api/livechat/")
        for method, operation in item.items()
    }
    assert len(operations) == 6, sorted(operations)
    for (path, method), operation in operations.items():
        answers = {
            status: answer
            for status, answer in operation["responses"].items()
            if status.startswith("2")
        }
        assert answers, (path, method)
        for answer in answers.values():
            assert "schema" in answer["content"]["application/json"], (path, method)
    listing = operations[("/api/livechat/sessions/", "get")]
    assert {p["name"] for p in listing["parameters"]} >= {"status", "page", "page_size"}
