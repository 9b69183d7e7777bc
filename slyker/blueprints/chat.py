"""Live chat: visitor and agent WebSockets, and the staff REST API over conversations.

The ``Origin`` of every handshake is checked with the one origin policy **before** accept: a
refused handshake is an HTTP 403 and no handler code runs. Everything else is reported after
accept, so that the browser actually sees it: identity (close 4001 / 4003), too many sockets
from one address (close 1013), sustained flooding (close 1008).

A conversation's ``session_id`` is chosen by the widget and is not a secret. Only the browser
that started a conversation (its visitor key: an HttpOnly cookie set on the handshake, also
sent as ``resume_token`` in ``connection_established``) or the same signed-in user may read or
post to it, and only in its own department.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator
from quart import Blueprint, abort, current_app, request, websocket
from quart_cors import cors_exempt
from quart_schema import validate_request
from tortoise.expressions import Q
from werkzeug.http import dump_cookie

from slyker.auth import ACCESS, authenticated_user, decode_token, staff_required
from slyker.chat.broker import RESYNC_TYPE, Event, Subscription
from slyker.chat.limits import FrameLimits, TypingCoalescer, client_key
from slyker.chat.service import (
    VISITOR_KEY_COOKIE,
    clean_name,
    close_conversation,
    conversation_json,
    current_broker,
    department_channel,
    display_name,
    issue_visitor_key,
    may_use,
    message_event,
    open_conversation,
    post_agent_reply,
    session_channel,
    storable_text,
    store_message,
    valid_visitor_key,
    visitor_key_hash,
)
from slyker.errors import APIError
from slyker.lifecycle import DRAINING_KEY
from slyker.models.accounts import User
from slyker.models.chat import ChatMessage, Conversation, ConversationStatus, SenderType
from slyker.origins import LOOPBACK_HOSTS, OriginPolicy
from slyker.pagination import paginate
from slyker.settings import Settings, current_settings

blueprint = Blueprint("chat", __name__)
log = logging.getLogger(__name__)

GREETING = "Connected to Slyker Tech Live Support"
CLOSE_NOT_AUTHENTICATED = 4001
CLOSE_NOT_STAFF = 4003
CLOSE_TRY_AGAIN_LATER = 1013  # too slow a reader, or too many sockets from one address
CLOSE_POLICY_VIOLATION = 1008  # kept flooding after being told
CLOSE_TOO_BIG = 1009
CLOSE_GOING_AWAY = 1001  # the server is stopping: reconnect (to another worker)
PRESENCE_RENEW_SECONDS = 10
VISITOR_MESSAGE_TYPES = {None, "message", "chat_message"}
# Events that carry a stored message's id, and so are delivered at most once per socket.
MESSAGE_EVENT_TYPES = {"message", "system", "agent_message"}
# Events from different workers may arrive slightly out of id order; a resync looks back
# this many ids behind the newest one seen, and at everything stored since the broker says
# events may have been missed (duplicates are dropped by id anyway).
RESYNC_LOOKBACK = 100
RESYNC_RETRY_SECONDS = 2.0  # a resync that failed (the database is down) is tried again
# Put in a socket's outbox where a resync is due: live events after it wait for the replay.
RESYNC_MARK: Event = {"type": RESYNC_TYPE}
MAX_CLIENT_ID_LENGTH = 64
SEEN_IDS_KEPT = 5000
MAX_MESSAGE_ID = 2**31 - 1  # ids are 32-bit integers in the database
MAX_ECHOED_NUMBER = 2**53  # a pong echoes a timestamp only if JavaScript can read it back
TYPING_COALESCERS_KEPT = 200


def error_event(message: str, code: str, **extra: Any) -> Event:
    return {"type": "error", "message": message, "code": code, **extra}


FORBIDDEN_SESSION = error_event(
    "This conversation belongs to another connection", "forbidden_session"
)
SESSION_MISMATCH = error_event("session_id does not match this connection", "session_mismatch")
INVALID_SESSION = error_event("session_id must be a UUID", "invalid_session")
INVALID_AFTER = error_event(
    "after must be the id of the last message received (a whole number)", "invalid_after"
)
INVALID_TEXT = error_event("Message contains characters that cannot be sent", "invalid_text")
NOT_SENT = error_event(
    "Your message was not sent (the service is having trouble); please send it again",
    "not_sent",
)


def client_id_of(frame: dict[str, Any] | None) -> str | int | None:
    """The ``client_id`` a client put in a frame to match our answer (an ``ack`` or an
    ``error``) to it: short text or a whole number JavaScript can read back."""
    value = (frame or {}).get("client_id")
    if isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_ID_LENGTH and value.isprintable():
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_ECHOED_NUMBER:
        return value
    return None


# --- the handshake -----------------------------------------------------------------------


def check_origin(settings: Settings) -> None:
    """Before accept: an allowed CORS origin, or the same-host rule; else HTTP 403. Exactly
    one Origin header: with two, a check of the first could pass what a browser sent second."""
    origins = websocket.headers.getlist("Origin")
    if len(origins) > 1:
        log.warning(
            "WebSocket origin rejected: %d Origin headers on %s", len(origins), websocket.path
        )
        abort(403)
    origin = origins[0] if origins else None
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


@dataclass
class Identity:
    """The user of a socket's ``?token=``, re-checked while the socket lives."""

    user: User
    expires_at: float  # the token's exp (seconds since the epoch)
    staff: bool = False  # the socket is for staff only


BEARER_PROTOCOL = "bearer"
MAX_TOKEN_LENGTH = 2048


def offered_token() -> tuple[str | None, str | None]:
    """The handshake's access token and the subprotocol to answer with.

    ``Sec-WebSocket-Protocol: bearer, <token>`` (the answer names only ``bearer``), else
    ``?token=`` (older clients; a query string ends up in proxies' logs, see docker/README.md).
    Without either, a socket that needs a user waits for an ``auth`` frame
    (:func:`auth_frame_token`)."""
    protocols = [protocol.strip() for protocol in websocket.requested_subprotocols]
    if protocols and protocols[0].lower() == BEARER_PROTOCOL:
        token = protocols[1] if len(protocols) == 2 else None
        return token or None, BEARER_PROTOCOL
    return websocket.args.get("token") or None, None


async def auth_frame_token(settings: Settings) -> str | None:
    """The token of the first frame, ``{"type": "auth", "token": "..."}``, sent within
    CHAT_AUTH_FRAME_TIMEOUT of the accept; None for anything else (or nothing)."""
    try:
        async with asyncio.timeout(settings.chat_auth_frame_timeout):
            raw = await websocket.receive()
    except TimeoutError:
        return None
    if isinstance(raw, bytes) or len(raw) > MAX_TOKEN_LENGTH + 100:
        return None
    try:
        frame = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(frame, dict) or frame.get("type") != "auth":
        return None
    token = frame.get("token")
    return token if isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_LENGTH else None


async def socket_identity(token: str | None) -> tuple[Identity | None, bool]:
    """The identity of ``token``; (None, False) without a token; (None, True) for a bad one."""
    if not token:
        return None, False
    try:
        claims = decode_token(token, ACCESS)
    except APIError:
        return None, True
    user = await User.get_or_none(id=int(claims["sub"]), is_active=True)
    if user is None:
        return None, True
    return Identity(user, float(claims["exp"])), False


def moment(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


def parse_uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str) or len(value) > 100:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def parse_after(value: object) -> int | None:
    """A message id the client has seen (0: none); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_MESSAGE_ID:
        return value
    return None


def parse_frame(raw: str) -> dict[str, Any] | None:
    try:
        frame = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return None
    return frame if isinstance(frame, dict) else None


def echoed_timestamp(value: object) -> object:
    """A ping's timestamp as the pong may carry it back: short text or a finite number."""
    if isinstance(value, str) and len(value) <= 64:
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and math.isfinite(value) and abs(value) <= MAX_ECHOED_NUMBER:  # type: ignore[arg-type]
        return value
    return None


def frame_type(frame: dict[str, Any]) -> str | None:
    kind = frame.get("type")
    return kind if kind is None or isinstance(kind, str) else "(invalid)"


# --- one socket ----------------------------------------------------------------------------


class ChatSocket:
    """A bounded outbox drained by one task; a client that cannot keep up is closed (1013)
    instead of growing memory or slowing the others. Events carrying a message id are
    delivered at most once, replays and live events alike, and replays come in id order.

    Every client frame is counted in a token bucket of its kind first (FrameLimits): excess
    frames are dropped with one error frame, and a socket that keeps flooding is closed (1008).
    """

    def __init__(self, settings: Settings, *, agent: bool = False) -> None:
        self.settings = settings
        self.outbox: asyncio.Queue[Event] = asyncio.Queue(settings.chat_send_queue_size)
        self.overflowed = asyncio.Event()
        self.closing = asyncio.Event()
        self.close_with: tuple[int, str] | None = None
        self.floor = 0  # the client said it has everything up to here (resume "after")
        self.seen: set[int] = set()
        self.seen_order: deque[int] = deque()
        self.resync_queued = False
        self.resync_since: float | None = None  # the earliest "missed since" of queued resyncs
        self.held: list[Event] | None = None  # live events held back during a replay
        self.client_id: str | int | None = None  # of the frame being handled
        self.subscriptions: list[Subscription] = []
        self.limits = FrameLimits(settings, agent=agent)
        self.identity: Identity | None = None

    @property
    def last_id(self) -> int:
        return max(self.floor, max(self.seen, default=0))

    def resync_after(self) -> int:
        return max(self.floor, self.last_id - RESYNC_LOOKBACK)

    def offer(self, event: Event) -> None:
        """Queue ``event`` for the client (held back while a replay is being prepared)."""
        if event.get("type") == RESYNC_TYPE:
            self.request_resync(event.get("since"))
            return
        if event.get("type") == "error" and self.client_id is not None:
            event = {**event, "client_id": self.client_id}
        if self.held is not None:
            self.held.append(event)
            if len(self.held) > self.outbox.maxsize:
                self.overflowed.set()
            return
        self.enqueue(event)

    def request_resync(self, since: object) -> None:
        """Replay from the database what may have been missed since ``since`` (epoch seconds;
        None: only the RESYNC_LOOKBACK). One replay covers every request queued before it."""
        if isinstance(since, int | float) and not isinstance(since, bool):
            earliest = self.resync_since
            self.resync_since = float(since) if earliest is None else min(earliest, float(since))
        if self.resync_queued:
            return
        self.resync_queued = True
        if self.held is None:
            self.held = []  # live events from now on follow the replay, in id order
        self.enqueue(RESYNC_MARK)

    def release_held(self) -> None:
        held, self.held = self.held, None
        for event in held or ():
            self.enqueue(event)

    def enqueue(self, event: Event) -> None:
        """Into the outbox, unless it is a message this socket has delivered already."""
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
            self.enqueue(message_event(message, conversation))

    def close_soon(self, code: int, reason: str) -> None:
        if self.close_with is None:
            self.close_with = (code, reason)
        self.closing.set()

    async def subscribe(self, channel: str) -> None:
        self.subscriptions.append(await current_broker().subscribe(channel, self.offer))

    async def unsubscribe_all(self) -> None:
        for subscription in self.subscriptions:
            await subscription.close()
        self.subscriptions.clear()

    async def pump(self) -> None:
        while True:
            event = await self.outbox.get()
            if event is RESYNC_MARK:
                await self.resync()
                continue
            await websocket.send(json.dumps(event))

    async def resync(self) -> None:
        self.resync_queued = False
        since, self.resync_since = self.resync_since, None
        try:
            await self.on_resync(since)
        except Exception:  # the database is down: live events go on, the replay is tried again
            log.warning("Chat resync failed on %s; trying again", websocket.path, exc_info=True)
            retry_since = time.time() - RESYNC_RETRY_SECONDS if since is None else since
            asyncio.get_running_loop().call_later(
                RESYNC_RETRY_SECONDS, self.request_resync, retry_since
            )
        finally:
            self.release_held()

    async def ping(self) -> None:
        while True:
            await asyncio.sleep(self.settings.chat_ping_interval)
            self.offer({"type": "ping", "timestamp": int(time.time() * 1000)})

    async def on_resync(self, since: float | None) -> None:
        """Events may have been missed (since ``since``): subclasses replay them."""

    def acknowledge(self, message: ChatMessage) -> None:
        """The client's message is stored (and will be delivered): tell it, if it asked."""
        if self.client_id is not None:
            self.offer({"type": "ack", "id": message.id, "client_id": self.client_id})

    # --- identity, re-checked --------------------------------------------------------------

    async def identity_problem(self) -> tuple[int, str] | None:
        """Why this socket's user may no longer use it (token expired, user deactivated or no
        longer staff), or None."""
        identity = self.identity
        if identity is None:
            return None
        if time.time() >= identity.expires_at:
            return CLOSE_NOT_AUTHENTICATED, "Token expired"
        user = await User.get_or_none(id=identity.user.id)
        if user is None or not user.is_active:
            return CLOSE_NOT_AUTHENTICATED, "User inactive"
        if identity.staff and not user.is_staff:
            return CLOSE_NOT_STAFF, "Staff only"
        identity.user = user
        return None

    async def still_authorised(self) -> bool:
        problem = await self.identity_problem()
        if problem is not None:
            self.close_soon(*problem)
        return problem is None

    async def watch_identity(self) -> None:
        """Close the socket when its token expires or its user loses access, even if the
        client sends nothing (it would keep receiving otherwise)."""
        identity = self.identity
        while identity is not None and not self.closing.is_set():
            recheck = self.settings.chat_auth_recheck_seconds
            await asyncio.sleep(max(0.0, min(recheck, identity.expires_at - time.time())))
            await self.still_authorised()

    # --- client frames ---------------------------------------------------------------------

    def frame_kind(self, kind: str | None) -> str:
        """The bucket a frame of this ``type`` counts in ("invalid" for unknown types)."""
        return "keepalive" if kind in ("ping", "pong") else "invalid"

    async def receive_frames(self) -> None:
        while not self.closing.is_set():
            raw = await websocket.receive()
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", errors="replace")
            limit, size = self.settings.chat_max_message_bytes, len(raw.encode())
            if size > 4 * limit:
                await websocket.close(CLOSE_TOO_BIG, "Message too big")
                return
            frame = parse_frame(raw) if size <= limit else None
            kind = self.frame_kind(frame_type(frame)) if frame is not None else "invalid"
            self.client_id = client_id_of(frame)
            try:
                await self.handle_frame(frame, kind, size)
            finally:
                self.client_id = None
            if self.close_with is not None:
                return

    async def handle_frame(self, frame: dict[str, Any] | None, kind: str, size: int) -> None:
        verdict = self.limits.check(kind)
        if verdict.abusive:
            log.warning("Chat client flooding on %s: closed with 1008", websocket.path)
            self.close_soon(CLOSE_POLICY_VIOLATION, "Too many frames")
            return
        if not verdict.allowed:
            if verdict.warn:
                text = "Too many messages" if kind == "message" else f"Too many {kind} frames"
                self.error(text, "rate_limited")
            return
        if size > self.settings.chat_max_message_bytes:
            self.error("Message too large", "too_large")
        elif frame is None:
            self.error("Invalid message format", "invalid_format")
        else:
            await self.dispatch(frame)

    async def dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame_type(frame)
        if kind == "ping":
            self.offer({"type": "pong", "timestamp": echoed_timestamp(frame.get("timestamp"))})
            return
        if kind == "pong":
            return
        try:
            if not await self.still_authorised():
                return
            await self.handle(frame)
        except Exception:  # a bug or an outage, not the client's input: tell it, keep going
            log.exception("Chat frame failed on %s", websocket.path)
            if self.frame_kind(kind) == "message":
                self.offer(NOT_SENT)  # nothing was stored: handle() stores last
            else:
                self.error("Something went wrong; please try again", "server_error")

    def error(self, message: str, code: str) -> None:
        self.offer(error_event(message, code))

    async def handle(self, frame: dict[str, Any]) -> None:
        raise NotImplementedError

    async def serve(self) -> None:
        """Run until the client leaves, overflows, floods, loses access or the server stops."""
        stopping = current_app.extensions[DRAINING_KEY]
        tasks = [
            asyncio.create_task(self.receive_frames()),
            asyncio.create_task(self.pump()),
            asyncio.create_task(self.ping()),
            asyncio.create_task(self.overflowed.wait()),
            asyncio.create_task(stopping.wait()),
            asyncio.create_task(self.closing.wait()),
            *self.extra_tasks(),
        ]
        if self.identity is not None:
            tasks.append(asyncio.create_task(self.watch_identity()))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if self.close_with is not None:
                await websocket.close(*self.close_with)
            elif self.overflowed.is_set():
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
    def __init__(self, settings: Settings, department: str) -> None:
        super().__init__(settings)
        self.department = department
        self.user: User | None = None
        self.session_id = uuid.uuid4()  # until the client names its own
        self.conversation: Conversation | None = None
        # Client-chosen ids this socket may not use: their messages went to its own conversation.
        self.forked: dict[uuid.UUID, uuid.UUID] = {}
        self.client = client_key(websocket.remote_addr)
        self.slot = uuid.uuid4().hex
        secret = settings.secret_key
        cookie_key = valid_visitor_key(secret, websocket.cookies.get(VISITOR_KEY_COOKIE))
        query_key = valid_visitor_key(secret, websocket.args.get("resume_token"))
        self.key = cookie_key or query_key or issue_visitor_key(secret)
        self.cookie_outdated = cookie_key != self.key
        self.key_hashes = {visitor_key_hash(k) for k in (self.key, query_key) if k is not None}
        self.typing = TypingCoalescer(self.publish_typing)
        self.typing_name = "Visitor"

    def accept_headers(self) -> dict[str, str]:
        """The visitor key as an HttpOnly cookie: browsers keep cookies set on a WebSocket
        handshake and send them on the next one, so the widget, which keeps nothing itself,
        can continue its conversation after a reconnect."""
        if not self.cookie_outdated:
            return {}
        host = websocket.host.lower()
        host = host if host.endswith("]") else host.rsplit(":", 1)[0]
        cookie = dump_cookie(
            VISITOR_KEY_COOKIE,
            self.key,
            httponly=True,
            secure=host.lower() not in LOOPBACK_HOSTS,
            samesite="Lax",
            path="/",
        )
        return {"Set-Cookie": cookie}

    # --- per-client limits ------------------------------------------------------------------

    async def take_slot(self) -> bool:
        return await current_broker().take_socket_slot(
            self.client, self.slot, self.settings.chat_max_sockets_per_client
        )

    async def release_slot(self) -> None:
        await current_broker().release_socket_slot(self.client, self.slot)

    async def keep_slot(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_RENEW_SECONDS)
            await current_broker().renew_socket_slot(self.client, self.slot)

    def extra_tasks(self) -> list[asyncio.Task[Any]]:
        return [asyncio.create_task(self.keep_slot())]

    async def leave(self) -> None:
        await self.typing.stop()

    # --- access -----------------------------------------------------------------------------

    def allowed(self, conversation: Conversation) -> bool:
        return may_use(conversation, self.department, self.key_hashes, self.user)

    def prove(self, token: object) -> bool:
        """A ``resume_token`` from a frame: True if this server issued it."""
        key = valid_visitor_key(self.settings.secret_key, token)
        if key is not None:
            self.key_hashes.add(visitor_key_hash(key))
        return key is not None

    async def switch_session(self, session_id: uuid.UUID) -> None:
        await self.unsubscribe_all()
        self.session_id = session_id
        await self.subscribe(session_channel(session_id))

    # --- opening and resume -----------------------------------------------------------------

    async def start(self) -> None:
        problems: list[Event] = []
        conversation: Conversation | None = None
        after = parse_after(websocket.args.get("after", "0"))
        if after is None:
            problems.append(INVALID_AFTER)
        requested = websocket.args.get("session_id")
        if requested:
            session_id = parse_uuid(requested)
            if session_id is None:
                problems.append(INVALID_SESSION)
            else:
                conversation = await Conversation.get_or_none(session_id=session_id)
                if conversation is None or self.allowed(conversation):
                    self.session_id = session_id
                else:
                    conversation = None
                    problems.append(FORBIDDEN_SESSION)
        self.offer(
            {
                "type": "connection_established",
                "room": self.department,
                "session_id": str(self.session_id),
                "resume_token": self.key,
                "message": GREETING,
            }
        )
        self.offer({"type": "system", "message": GREETING})
        for problem in problems:
            self.offer(problem)
        await self.subscribe(session_channel(self.session_id))
        if conversation is not None:
            self.conversation = conversation
            await self.replay_missed(conversation, after or 0)

    async def resume(self, session_id: uuid.UUID, after: int) -> None:
        session_id = self.forked.get(session_id, session_id)
        if self.conversation is not None and session_id != self.session_id:
            self.offer(SESSION_MISMATCH)
            return
        conversation = await Conversation.get_or_none(session_id=session_id)
        if conversation is not None and not self.allowed(conversation):
            self.offer(FORBIDDEN_SESSION)
            return
        if session_id != self.session_id:
            await self.switch_session(session_id)
        if conversation is not None:
            self.conversation = conversation
            await self.replay_missed(conversation, after)

    async def replay_missed(
        self, conversation: Conversation, after: int, since: float | None = None
    ) -> None:
        """What the visitor missed after ``after`` (the client's word: nothing before it is
        sent again) or, for a resync, also what was stored since ``since``; live events wait
        until it is queued."""
        holding = self.held is None
        if holding:
            self.held = []
        try:
            if since is None:
                self.floor = max(self.floor, after)
                newer = Q(id__gt=after)
            else:
                newer = Q(id__gt=self.floor) & (Q(id__gt=after) | Q(created_at__gte=moment(since)))
            missed = await ChatMessage.filter(
                newer,
                conversation_id=conversation.id,
                sender_type__in=[SenderType.AGENT, SenderType.SYSTEM],
            ).order_by("id")
            self.replay(list(missed), conversation)
        finally:
            if holding:
                self.release_held()

    async def on_resync(self, since: float | None) -> None:
        conversation = self.conversation
        if conversation is None:
            conversation = await Conversation.get_or_none(session_id=self.session_id)
            if conversation is None or not self.allowed(conversation):
                return
            self.conversation = conversation
        await self.replay_missed(conversation, self.resync_after(), since)

    # --- client frames ----------------------------------------------------------------------

    def frame_kind(self, kind: str | None) -> str:
        if kind in VISITOR_MESSAGE_TYPES:
            return "message"
        if kind in ("typing", "resume"):
            return kind  # type: ignore[return-value]
        return super().frame_kind(kind)

    async def handle(self, frame: dict[str, Any]) -> None:
        kind = frame_type(frame)
        if kind == "resume":
            session_id = parse_uuid(frame.get("session_id"))
            after = parse_after(frame.get("after", 0))
            if session_id is None:
                self.offer(INVALID_SESSION)
            elif after is None:
                self.offer(INVALID_AFTER)
            elif "resume_token" in frame and not self.prove(frame["resume_token"]):
                self.offer(FORBIDDEN_SESSION)
            else:
                await self.resume(session_id, after)
        elif kind == "typing":
            self.typing_name = self.visitor_name(frame)
            self.typing.update(bool(frame.get("is_typing")))
        elif kind in VISITOR_MESSAGE_TYPES:
            await self.visitor_message(frame)
        else:
            self.error("Unknown message type", "unknown_type")

    async def publish_typing(self, is_typing: bool) -> None:
        await current_broker().publish(
            department_channel(self.department),
            {
                "type": "typing",
                "session_id": str(self.session_id),
                "sender": self.typing_name,
                "sender_type": "user",
                "is_typing": is_typing,
            },
        )

    def visitor_name(self, frame: dict[str, Any]) -> str:
        if self.user is not None:
            return display_name(self.user)
        return clean_name(frame.get("visitor_name") or frame.get("sender"), "Visitor")

    async def choose_session(self, frame: dict[str, Any]) -> bool:
        """Talk in the frame's ``session_id`` if this socket may; False if refused."""
        if frame.get("session_id") is None:
            return True
        requested = parse_uuid(frame["session_id"])
        if requested is None:
            self.offer(SESSION_MISMATCH)
            return False
        requested = self.forked.get(requested, requested)
        if requested == self.session_id:
            return True
        if self.conversation is not None:
            self.offer(SESSION_MISMATCH)
            return False
        existing = await Conversation.get_or_none(session_id=requested)
        if existing is None or self.allowed(existing):
            await self.switch_session(requested)
            return True
        # Someone else's conversation, or the widget's own after a reconnect without its
        # cookie: the message starts a conversation of this socket's own instead.
        self.forked[requested] = self.session_id
        self.offer(
            {
                **FORBIDDEN_SESSION,
                "message": "This conversation belongs to another connection: your message "
                "starts a new conversation",
                "session_id": str(self.session_id),
            }
        )
        return True

    async def visitor_message(self, frame: dict[str, Any]) -> None:
        text = frame.get("message")
        if not isinstance(text, str) or not text.strip():
            self.error("Message cannot be empty", "empty_message")
            return
        if not storable_text(text):
            self.offer(INVALID_TEXT)
            return
        if not await self.choose_session(frame):
            return
        broker = current_broker()
        if self.conversation is None and not await Conversation.exists(session_id=self.session_id):
            allowed = await broker.take_new_conversation(
                self.client, self.settings.chat_new_conversations_per_minute
            )
            if not allowed:
                self.error(
                    "Too many new conversations from your address; try again in a minute",
                    "too_many_conversations",
                )
                return
        conversation, created = await open_conversation(
            self.session_id,
            self.department,
            self.visitor_name(frame),
            self.user,
            visitor_key_hash(self.key),
            self.allowed,
        )
        if conversation is None:  # another client created this id a moment ago
            self.offer(FORBIDDEN_SESSION)
            await self.switch_session(uuid.uuid4())
            return
        self.conversation = conversation
        message = await store_message(
            conversation, SenderType.USER, conversation.visitor_name, text.strip()
        )
        # Stored: from here on nothing may report the message as not sent.
        self.acknowledge(message)
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
        try:
            await self.auto_reply(conversation)
        except Exception:
            log.exception("Chat automatic reply failed on %s", websocket.path)

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
    def __init__(self, settings: Settings, identity: Identity) -> None:
        super().__init__(settings, agent=True)
        self.identity = identity
        self.agent = identity.user
        self.member = f"{self.agent.id}:{uuid.uuid4().hex}"
        wanted = [d.strip() for d in websocket.args.get("departments", "").split(",") if d.strip()]
        self.departments = [d for d in settings.chat_departments if not wanted or d in wanted]
        self.typing: dict[uuid.UUID, TypingCoalescer] = {}

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
        for typing in self.typing.values():
            await typing.stop()

    async def on_resync(self, since: float | None) -> None:
        """As a visitor's: back RESYNC_LOOKBACK ids and to ``since``, never before the floor."""
        newer = Q(id__gt=self.resync_after())
        if since is not None:
            newer |= Q(created_at__gte=moment(since))
        missed = (
            await ChatMessage.filter(
                newer, id__gt=self.floor, conversation__department__in=self.departments
            )
            .order_by("id")
            .prefetch_related("conversation")
        )
        for message in missed:
            event = message_event(message, message.conversation)
            if message.sender_type == SenderType.AGENT:
                event["type"] = "agent_message"
            self.enqueue(event)

    async def conversation(self, frame: dict[str, Any]) -> Conversation | None:
        session_id = parse_uuid(frame.get("session_id"))
        conversation = await Conversation.get_or_none(session_id=session_id) if session_id else None
        if conversation is None or conversation.department not in self.departments:
            self.error("Unknown session_id", "unknown_session")
            return None
        return conversation

    def frame_kind(self, kind: str | None) -> str:
        if kind in ("message", "typing", "close"):
            return kind  # type: ignore[return-value]
        return super().frame_kind(kind)

    async def handle(self, frame: dict[str, Any]) -> None:
        kind = frame_type(frame)
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
            if not storable_text(text):
                self.offer(INVALID_TEXT)
                return
            self.acknowledge(await post_agent_reply(conversation, self.agent, text.strip()))
        elif kind == "typing":
            self.typing_towards(conversation).update(bool(frame.get("is_typing")))
        else:
            await close_conversation(conversation, display_name(self.agent))

    def typing_towards(self, conversation: Conversation) -> TypingCoalescer:
        session_id = conversation.session_id
        typing = self.typing.get(session_id)
        if typing is None:
            if len(self.typing) >= TYPING_COALESCERS_KEPT:
                for old in [k for k, t in self.typing.items() if t.task is None or t.task.done()]:
                    del self.typing[old]

            async def publish(is_typing: bool) -> None:
                await current_broker().publish(
                    session_channel(session_id),
                    {
                        "type": "typing",
                        "sender": display_name(self.agent),
                        "sender_type": "agent",
                        "is_typing": is_typing,
                    },
                )

            typing = self.typing[session_id] = TypingCoalescer(publish)
        return typing


# --- routes --------------------------------------------------------------------------------


async def run_visitor_socket(department: str) -> None:
    settings = current_settings()
    if department not in settings.chat_departments:
        abort(404)
    check_origin(settings)
    if current_app.extensions[DRAINING_KEY].is_set():
        abort(503)
    socket = VisitorSocket(settings, department)
    token, subprotocol = offered_token()
    await websocket.accept(headers=socket.accept_headers(), subprotocol=subprotocol)
    # Refused after accept, so that the browser sees why (a refused handshake is only "1006").
    if not await socket.take_slot():
        log.warning("Chat sockets per client exceeded by %s", socket.client)
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "Too many connections from your address")
        return
    try:
        if token is None and department in settings.chat_staff_departments:
            token = await auth_frame_token(settings)
        identity, bad_token = await socket_identity(token)
        if bad_token:
            await websocket.close(CLOSE_NOT_AUTHENTICATED, "Invalid or expired token")
            return
        if department in settings.chat_staff_departments:
            if identity is None:
                await websocket.close(CLOSE_NOT_AUTHENTICATED, "Authentication required")
                return
            if not identity.user.is_staff:
                await websocket.close(CLOSE_NOT_STAFF, "Staff only")
                return
            identity.staff = True
            socket.identity = identity  # re-checked while the socket lives
        socket.user = identity.user if identity else None
        await socket.start()
        await socket.serve()
    finally:
        await socket.release_slot()


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
    """Staff: every conversation of their departments (``?departments=sales,support``).

    The access token: ``Sec-WebSocket-Protocol: bearer, <token>``, or a first frame
    ``{"type": "auth", "token": ...}`` within 5 s (else close 4001), or ``?token=``."""
    settings = current_settings()
    check_origin(settings)
    if current_app.extensions[DRAINING_KEY].is_set():
        abort(503)
    token, subprotocol = offered_token()
    await websocket.accept(subprotocol=subprotocol)
    if token is None:
        token = await auth_frame_token(settings)
    identity, bad_token = await socket_identity(token)
    if identity is None:
        reason = "Invalid or expired token" if bad_token else "Authentication required"
        await websocket.close(CLOSE_NOT_AUTHENTICATED, reason)
        return
    if not identity.user.is_staff:
        await websocket.close(CLOSE_NOT_STAFF, "Staff only")
        return
    identity.staff = True
    socket = AgentSocket(settings, identity)
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

    @field_validator("message")
    @classmethod
    def storable(cls, message: str) -> str:
        if not storable_text(message):
            raise ValueError("contains characters that cannot be sent")
        if not message.strip():
            raise ValueError("cannot be blank")
        return message


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
