"""Live chat: visitor and agent WebSockets, and the staff REST API over conversations.

The ``Origin`` of every handshake is checked with the one origin policy **before** accept: a
refused handshake is an HTTP 403 and no handler code runs. Identity problems are reported
after accept (close 4001 / 4003) so that the browser actually sees the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
import uuid
from collections import deque
from typing import Any

from pydantic import BaseModel, Field
from quart import Blueprint, Quart, abort, current_app, request, websocket
from quart_cors import cors_exempt
from quart_schema import validate_request

from slyker.auth import ACCESS, authenticated_user, decode_token, staff_required
from slyker.chat.broker import RESYNC, Event, Subscription
from slyker.chat.service import (
    close_conversation,
    conversation_json,
    current_broker,
    department_channel,
    display_name,
    message_event,
    open_conversation,
    post_agent_reply,
    session_channel,
    store_message,
)
from slyker.errors import APIError
from slyker.models.accounts import User
from slyker.models.chat import ChatMessage, Conversation, ConversationStatus, SenderType
from slyker.origins import OriginPolicy
from slyker.pagination import paginate
from slyker.settings import Settings, current_settings

blueprint = Blueprint("chat", __name__)
log = logging.getLogger(__name__)

GREETING = "Connected to Slyker Tech Live Support"
CLOSE_NOT_AUTHENTICATED = 4001
CLOSE_NOT_STAFF = 4003
CLOSE_TRY_AGAIN_LATER = 1013  # the client does not read fast enough
CLOSE_TOO_BIG = 1009
CLOSE_GOING_AWAY = 1001  # the server is stopping: reconnect (to another worker)
STOPPING_KEY = "slyker.chat.stopping"
PRESENCE_RENEW_SECONDS = 10
VISITOR_MESSAGE_TYPES = {None, "message", "chat_message"}
# Events that carry a stored message's id, and so are delivered at most once per socket.
MESSAGE_EVENT_TYPES = {"message", "system", "agent_message"}
# Events from different workers may arrive slightly out of id order; a resync looks back
# this many ids behind the newest one seen (duplicates are dropped by id anyway).
RESYNC_LOOKBACK = 100
SEEN_IDS_KEPT = 5000


# --- the handshake -----------------------------------------------------------------------


def check_origin(settings: Settings) -> None:
    """Before accept: an allowed CORS origin, or the same-host rule; else HTTP 403."""
    origin = websocket.headers.get("Origin")
    if origin is None:
        if settings.ws_allow_missing_origin:
            return
        log.warning("WebSocket origin rejected: (missing) on %s", websocket.path)
        abort(403)
    if settings.origin_policy.is_allowed(origin) or OriginPolicy.is_same_host(
        origin, websocket.headers.get("Host"), settings.allowed_hosts
    ):
        log.debug("WebSocket origin validated: %s", origin)
        return
    log.warning("WebSocket origin rejected: %s on %s", repr(origin)[:300], websocket.path)
    abort(403)


async def socket_user() -> tuple[User | None, bool]:
    """The user of ``?token=``; (None, False) without a token; (None, True) for a bad one."""
    token = websocket.args.get("token")
    if not token:
        return None, False
    try:
        claims = decode_token(token, ACCESS)
    except APIError:
        return None, True
    user = await User.get_or_none(id=int(claims["sub"]), is_active=True)
    return user, user is None


def parse_uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def parse_after(value: object) -> int:
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else 0


# --- one socket ----------------------------------------------------------------------------


class ChatSocket:
    """A bounded outbox drained by one task; a client that cannot keep up is closed (1013)
    instead of growing memory or slowing the others. Events carrying a message id are
    delivered at most once, replays and live events alike, and replays come in id order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.outbox: asyncio.Queue[Event] = asyncio.Queue(settings.chat_send_queue_size)
        self.overflowed = asyncio.Event()
        self.floor = 0  # the client said it has everything up to here (resume "after")
        self.seen: set[int] = set()
        self.seen_order: deque[int] = deque()
        self.resync_queued = False
        self.held: list[Event] | None = None  # live events held back during a replay
        self.subscriptions: list[Subscription] = []
        self.tokens = float(settings.chat_message_burst)
        self.refilled_at = time.monotonic()

    @property
    def last_id(self) -> int:
        return max(self.floor, max(self.seen, default=0))

    def resync_after(self) -> int:
        return max(self.floor, self.last_id - RESYNC_LOOKBACK)

    def offer(self, event: Event) -> None:
        if event is RESYNC:  # one per subscribed channel: one replay is enough
            if self.resync_queued:
                return
            self.resync_queued = True
        elif self.held is not None:
            self.held.append(event)
            return
        message_id = event.get("id")
        if isinstance(message_id, int) and event.get("type") in MESSAGE_EVENT_TYPES:
            if message_id <= self.floor or message_id in self.seen:
                return
            self.seen.add(message_id)
            self.seen_order.append(message_id)
            if len(self.seen_order) > SEEN_IDS_KEPT:
                self.seen.discard(self.seen_order.popleft())
        try:
            self.outbox.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed.set()

    def replay(self, messages: list[ChatMessage], conversation: Conversation) -> None:
        for message in messages:
            self.offer(message_event(message, conversation))

    def allow_message(self) -> bool:
        """Token bucket: ``chat_messages_per_second`` with bursts of ``chat_message_burst``."""
        now = time.monotonic()
        rate = self.settings.chat_messages_per_second
        self.tokens = min(
            self.settings.chat_message_burst, self.tokens + (now - self.refilled_at) * rate
        )
        self.refilled_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    async def subscribe(self, channel: str) -> None:
        self.subscriptions.append(await current_broker().subscribe(channel, self.offer))

    async def unsubscribe_all(self) -> None:
        for subscription in self.subscriptions:
            await subscription.close()
        self.subscriptions.clear()

    async def pump(self) -> None:
        while True:
            event = await self.outbox.get()
            if event is RESYNC:
                self.resync_queued = False
                await self.on_resync()
                continue
            await websocket.send(json.dumps(event))

    async def ping(self) -> None:
        while True:
            await asyncio.sleep(self.settings.chat_ping_interval)
            self.offer({"type": "ping", "timestamp": int(time.time() * 1000)})

    async def on_resync(self) -> None:
        """The broker reconnected: events may have been missed; subclasses replay them."""

    async def receive_frames(self) -> None:
        while True:
            raw = await websocket.receive()
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", errors="replace")
            limit, size = self.settings.chat_max_message_bytes, len(raw.encode())
            if size > limit:
                if size > 4 * limit:
                    await websocket.close(CLOSE_TOO_BIG, "Message too big")
                    return
                self.error("Message too large", "too_large")
                continue
            try:
                frame = json.loads(raw)
            except ValueError:
                frame = None
            if not isinstance(frame, dict):
                self.error("Invalid message format", "invalid_format")
                continue
            kind = frame.get("type")
            if kind == "ping":
                self.offer({"type": "pong", "timestamp": frame.get("timestamp")})
            elif kind == "pong":
                continue
            else:
                await self.handle(frame)

    def error(self, message: str, code: str) -> None:
        self.offer({"type": "error", "message": message, "code": code})

    async def handle(self, frame: dict[str, Any]) -> None:
        raise NotImplementedError

    async def serve(self) -> None:
        """Run until the client leaves, overflows, or the server stops."""
        stopping = current_app.extensions[STOPPING_KEY]
        tasks = [
            asyncio.create_task(self.receive_frames()),
            asyncio.create_task(self.pump()),
            asyncio.create_task(self.ping()),
            asyncio.create_task(self.overflowed.wait()),
            asyncio.create_task(stopping.wait()),
            *self.extra_tasks(),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if self.overflowed.is_set():
                log.warning("Chat client too slow on %s: closed with 1013", websocket.path)
                await websocket.close(CLOSE_TRY_AGAIN_LATER, "Too slow; reconnect")
            elif stopping.is_set():
                await websocket.close(CLOSE_GOING_AWAY, "Server shutting down; reconnect")
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.unsubscribe_all()
            await self.leave()

    def extra_tasks(self) -> list[asyncio.Task[Any]]:
        return []

    async def leave(self) -> None:
        """Clean-up when the socket ends."""


class VisitorSocket(ChatSocket):
    def __init__(self, settings: Settings, department: str, user: User | None) -> None:
        super().__init__(settings)
        self.department = department
        self.user = user
        self.session_id: uuid.UUID = parse_uuid(websocket.args.get("session_id")) or uuid.uuid4()
        self.conversation: Conversation | None = None

    async def start(self) -> None:
        self.offer(
            {
                "type": "connection_established",
                "room": self.department,
                "session_id": str(self.session_id),
                "message": GREETING,
            }
        )
        self.offer({"type": "system", "message": GREETING})
        await self.subscribe(session_channel(self.session_id))
        await self.resume(self.session_id, parse_after(websocket.args.get("after", "0")))

    async def adopt_session(self, session_id: uuid.UUID) -> bool:
        """Use the session id the widget chose, unless this socket already talks in another."""
        if session_id == self.session_id:
            return True
        if self.conversation is not None:
            return False
        await self.unsubscribe_all()
        self.session_id = session_id
        await self.subscribe(session_channel(session_id))
        return True

    async def resume(self, session_id: uuid.UUID, after: int) -> None:
        if not await self.adopt_session(session_id):
            self.error("session_id does not match this connection", "session_mismatch")
            return
        conversation = await Conversation.get_or_none(session_id=session_id)
        if conversation is None:
            return
        self.conversation = conversation
        self.held = []
        try:
            self.floor = max(self.floor, after)
            missed = await ChatMessage.filter(
                conversation_id=conversation.id,
                id__gt=after,
                sender_type__in=[SenderType.AGENT, SenderType.SYSTEM],
            ).order_by("id")
            self.replay(list(missed), conversation)
        finally:
            held, self.held = self.held, None
            for event in held:
                self.offer(event)

    async def on_resync(self) -> None:
        await self.resume(self.session_id, self.resync_after())

    async def handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "resume":
            session_id = parse_uuid(frame.get("session_id"))
            if session_id is None:
                self.error("session_id must be a UUID", "invalid_session")
                return
            await self.resume(session_id, parse_after(frame.get("after", 0)))
        elif kind == "typing":
            await current_broker().publish(
                department_channel(self.department),
                {
                    "type": "typing",
                    "session_id": str(self.session_id),
                    "sender": self.visitor_name(frame),
                    "sender_type": "user",
                    "is_typing": bool(frame.get("is_typing")),
                },
            )
        elif kind in VISITOR_MESSAGE_TYPES:
            await self.visitor_message(frame)
        else:
            self.error("Unknown message type", "unknown_type")

    def visitor_name(self, frame: dict[str, Any]) -> str:
        if self.user is not None:
            return display_name(self.user)
        name = str(frame.get("visitor_name") or frame.get("sender") or "Visitor").strip()
        return name[:100] or "Visitor"

    async def visitor_message(self, frame: dict[str, Any]) -> None:
        if not self.allow_message():
            self.offer({"type": "error", "message": "Too many messages", "code": "rate_limited"})
            return
        text = frame.get("message")
        if not isinstance(text, str) or not text.strip():
            self.error("Message cannot be empty", "empty_message")
            return
        if "session_id" in frame and frame["session_id"] is not None:
            session_id = parse_uuid(frame["session_id"])
            if session_id is None or not await self.adopt_session(session_id):
                self.error("session_id does not match this connection", "session_mismatch")
                return
        conversation, created = await open_conversation(
            self.session_id, self.department, self.visitor_name(frame), self.user
        )
        self.conversation = conversation
        message = await store_message(
            conversation, SenderType.USER, conversation.visitor_name, text.strip()
        )
        broker = current_broker()
        channel = department_channel(self.department)
        if created:
            await broker.publish(
                channel,
                {"type": "new_conversation", "conversation": conversation_json(conversation)},
            )
        await broker.publish(
            channel,
            {**message_event(message, conversation), "visitor_name": conversation.visitor_name},
        )
        await self.auto_reply(conversation)

    async def auto_reply(self, conversation: Conversation) -> None:
        """One automatic reply per conversation when no agent of the department is online."""
        if await current_broker().agents_online(self.department):
            return
        claimed = await Conversation.filter(id=conversation.id, auto_reply_sent=False).update(
            auto_reply_sent=True
        )
        if not claimed:
            return
        text = self.settings.chat_auto_replies[self.department]
        reply = await store_message(conversation, SenderType.SYSTEM, "Slyker Tech", text)
        await current_broker().publish(
            session_channel(conversation.session_id), message_event(reply, conversation)
        )


class AgentSocket(ChatSocket):
    def __init__(self, settings: Settings, agent: User) -> None:
        super().__init__(settings)
        self.agent = agent
        self.member = f"{agent.id}:{uuid.uuid4().hex}"
        wanted = [d.strip() for d in websocket.args.get("departments", "").split(",") if d.strip()]
        self.departments = [d for d in settings.chat_departments if not wanted or d in wanted]

    async def start(self) -> None:
        for department in self.departments:
            await self.subscribe(department_channel(department))
        await self.mark_present()
        active = await Conversation.filter(
            department__in=self.departments, status=ConversationStatus.ACTIVE
        ).order_by("-last_active_at")
        self.floor = await self.newest_message_id()
        self.offer(
            {
                "type": "connection_established",
                "role": "agent",
                "agent": display_name(self.agent),
                "departments": self.departments,
            }
        )
        self.offer(
            {
                "type": "active_conversations",
                "conversations": [conversation_json(c) for c in active],
            }
        )

    async def newest_message_id(self) -> int:
        newest = await ChatMessage.all().order_by("-id").first()
        return newest.id if newest else 0

    async def mark_present(self) -> None:
        for department in self.departments:
            await current_broker().set_present(department, self.member)

    async def keep_present(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_RENEW_SECONDS)
            await self.mark_present()

    def extra_tasks(self) -> list[asyncio.Task[Any]]:
        return [asyncio.create_task(self.keep_present())]

    async def leave(self) -> None:
        for department in self.departments:
            await current_broker().set_absent(department, self.member)

    async def on_resync(self) -> None:
        missed = (
            await ChatMessage.filter(
                id__gt=self.last_id, conversation__department__in=self.departments
            )
            .order_by("id")
            .prefetch_related("conversation")
        )
        for message in missed:
            event = message_event(message, message.conversation)
            if message.sender_type == SenderType.AGENT:
                event["type"] = "agent_message"
            self.offer(event)

    async def conversation(self, frame: dict[str, Any]) -> Conversation | None:
        session_id = parse_uuid(frame.get("session_id"))
        conversation = await Conversation.get_or_none(session_id=session_id) if session_id else None
        if conversation is None or conversation.department not in self.departments:
            self.error("Unknown session_id", "unknown_session")
            return None
        return conversation

    async def handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind not in ("message", "typing", "close"):
            self.error("Unknown message type", "unknown_type")
            return
        conversation = await self.conversation(frame)
        if conversation is None:
            return
        if kind == "message":
            text = frame.get("message")
            if not isinstance(text, str) or not text.strip():
                self.error("Message cannot be empty", "empty_message")
                return
            if not self.allow_message():
                self.offer(
                    {"type": "error", "message": "Too many messages", "code": "rate_limited"}
                )
                return
            await post_agent_reply(conversation, self.agent, text.strip())
        elif kind == "typing":
            await current_broker().publish(
                session_channel(conversation.session_id),
                {
                    "type": "typing",
                    "sender": display_name(self.agent),
                    "sender_type": "agent",
                    "is_typing": bool(frame.get("is_typing")),
                },
            )
        else:
            await close_conversation(conversation, display_name(self.agent))


# --- shutdown ------------------------------------------------------------------------------


def init_chat_shutdown(app: Quart) -> None:
    """Close every chat socket with 1001 when the worker is told to stop (SIGTERM), instead of
    leaving them to Hypercorn, which cancels them after its graceful timeout (close 1011).

    A Hypercorn worker process (``workers >= 1``) gets SIGTERM when the whole process group is
    signalled (systemd's default, or the container's init with TINI_KILL_PROCESS_GROUP=1, as in
    docker/compose.yaml); Hypercorn's main process then stops the worker as usual. With
    ``workers = 0`` Hypercorn owns the SIGTERM handler and this stays out of its way.
    """
    stopping = asyncio.Event()
    app.extensions[STOPPING_KEY] = stopping

    @app.before_serving
    async def watch_for_sigterm() -> None:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # someone (Hypercorn with workers = 0) handles it already
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)

    @app.after_serving
    async def stop_sockets() -> None:
        stopping.set()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)


# --- routes --------------------------------------------------------------------------------


async def run_visitor_socket(department: str) -> None:
    settings = current_settings()
    if department not in settings.chat_departments:
        abort(404)
    check_origin(settings)
    if current_app.extensions[STOPPING_KEY].is_set():
        abort(503)
    await websocket.accept()
    user, bad_token = await socket_user()
    if bad_token:
        await websocket.close(CLOSE_NOT_AUTHENTICATED, "Invalid or expired token")
        return
    if department in settings.chat_staff_departments:
        if user is None:
            await websocket.close(CLOSE_NOT_AUTHENTICATED, "Authentication required")
            return
        if not user.is_staff:
            await websocket.close(CLOSE_NOT_STAFF, "Staff only")
            return
    socket = VisitorSocket(settings, department, user)
    await socket.start()
    await socket.serve()


@blueprint.websocket("/ws/chat/<department>/")
@cors_exempt  # the handshake's Origin is checked by check_origin, before accept
async def chat_socket(department: str) -> None:
    """Visitor chat (older widget URL)."""
    await run_visitor_socket(department)


@blueprint.websocket("/livechat/ws/<department>/")
@cors_exempt  # the handshake's Origin is checked by check_origin, before accept
async def livechat_socket(department: str) -> None:
    """Visitor chat (newer widget URL)."""
    await run_visitor_socket(department)


@blueprint.websocket("/ws/chat/agents/")
@cors_exempt  # the handshake's Origin is checked by check_origin, before accept
async def agents_socket() -> None:
    """Staff: every conversation of their departments (``?departments=sales,support``)."""
    settings = current_settings()
    check_origin(settings)
    if current_app.extensions[STOPPING_KEY].is_set():
        abort(503)
    await websocket.accept()
    user, bad_token = await socket_user()
    if user is None:
        reason = "Invalid or expired token" if bad_token else "Authentication required"
        await websocket.close(CLOSE_NOT_AUTHENTICATED, reason)
        return
    if not user.is_staff:
        await websocket.close(CLOSE_NOT_STAFF, "Staff only")
        return
    socket = AgentSocket(settings, user)
    await socket.start()
    await socket.serve()


# --- staff REST ----------------------------------------------------------------------------


async def _conversation(session_pk: int) -> Conversation:
    conversation = await Conversation.get_or_none(id=session_pk)
    if conversation is None:
        raise APIError(404, "Chat session not found.")
    return conversation


async def _conversation_summary(conversation: Conversation) -> dict[str, Any]:
    last = await ChatMessage.filter(conversation_id=conversation.id).order_by("-id").first()
    return {
        **conversation_json(conversation),
        "message_count": await ChatMessage.filter(conversation_id=conversation.id).count(),
        "last_message": last.text if last else None,
    }


@blueprint.get("/api/livechat/sessions/")
@staff_required
async def list_sessions() -> dict[str, Any]:
    """Staff: chat sessions, most recently active first; ``?status=active|closed``."""
    queryset = Conversation.all()
    status = request.args.get("status")
    if status:
        if status not in {s.value for s in ConversationStatus}:
            raise APIError(400, "status: must be active or closed.", errors={"status": ["invalid"]})
        queryset = queryset.filter(status=status)
    return await paginate(queryset.order_by("-last_active_at", "-id"), _conversation_summary)


@blueprint.get("/api/livechat/sessions/active/")
@staff_required
async def active_sessions() -> dict[str, Any]:
    """Staff: active chat sessions."""
    queryset = Conversation.filter(status=ConversationStatus.ACTIVE)
    return await paginate(queryset.order_by("-last_active_at", "-id"), _conversation_summary)


@blueprint.get("/api/livechat/sessions/stats/")
@staff_required
async def session_stats() -> dict[str, Any]:
    """Staff: conversations per status and department, and agents online per department."""
    settings = current_settings()
    broker = current_broker()
    by_department = {}
    for department in settings.chat_departments:
        conversations = Conversation.filter(department=department)
        by_department[department] = {
            "active": await conversations.filter(status=ConversationStatus.ACTIVE).count(),
            "closed": await conversations.filter(status=ConversationStatus.CLOSED).count(),
            "agents_online": await broker.agents_online(department),
        }
    return {
        "total": await Conversation.all().count(),
        "active": await Conversation.filter(status=ConversationStatus.ACTIVE).count(),
        "closed": await Conversation.filter(status=ConversationStatus.CLOSED).count(),
        "messages": await ChatMessage.all().count(),
        "by_department": by_department,
    }


@blueprint.get("/api/livechat/sessions/<int:session_pk>/")
@staff_required
async def get_session(session_pk: int) -> dict[str, Any]:
    """Staff: one chat session with all its messages."""
    conversation = await _conversation(session_pk)
    messages = await ChatMessage.filter(conversation_id=conversation.id).order_by("id")
    return {
        **conversation_json(conversation),
        "messages": [message_event(m, conversation) for m in messages],
    }


@blueprint.post("/api/livechat/sessions/<int:session_pk>/close_session/")
@staff_required
async def close_session(session_pk: int) -> dict[str, Any]:
    """Staff: close a chat session (the visitor is told, live)."""
    conversation = await _conversation(session_pk)
    await close_conversation(conversation, display_name(authenticated_user()))
    return conversation_json(await _conversation(session_pk))


class ReplyIn(BaseModel):
    message: str = Field(min_length=1, max_length=4000)


@blueprint.post("/api/livechat/sessions/<int:session_pk>/send_message/")
@staff_required
@validate_request(ReplyIn)
async def send_message(session_pk: int, data: ReplyIn) -> tuple[dict[str, Any], int]:
    """Staff: reply to a visitor; delivered live to the visitor's socket, and stored."""
    conversation = await _conversation(session_pk)
    if conversation.status != ConversationStatus.ACTIVE:
        raise APIError(409, "This chat session is closed.", code="session_closed")
    message = await post_agent_reply(conversation, authenticated_user(), data.message.strip())
    return message_event(message, conversation), 201
