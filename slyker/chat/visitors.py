"""A visitor's chat socket: its conversation (chosen by the widget's ``session_id``, bound to
the browser's visitor key and to the department), resume after a reconnect, and its messages.

A conversation's ``session_id`` is chosen by the widget and is not a secret. Only the browser
that started a conversation (its visitor key: an HttpOnly cookie set on the handshake, also
sent as ``resume_token`` in ``connection_established``) or the same signed-in user may read or
post to it, and only in its own department.

The handshake of a fresh socket does no database query and does not wait for Redis: the
session channel's subscription is awaited only before the conversation's first message is
stored (no reply can exist before it) or a replay is read.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable
from typing import Any

from quart import abort, websocket
from tortoise.expressions import Q

from slyker.chat.broker import Event
from slyker.chat.handshake import (
    VisitorKey,
    auth_frame_token,
    check_origin,
    decline_compression,
    offered_token,
    socket_identity,
)
from slyker.chat.lifecycle import refuse_when_draining
from slyker.chat.limits import TypingCoalescer, client_key
from slyker.chat.protocol import (
    CLOSE_NOT_AUTHENTICATED,
    CLOSE_NOT_STAFF,
    CLOSE_TRY_AGAIN_LATER,
    FORBIDDEN_SESSION,
    GREETING,
    INVALID_AFTER,
    INVALID_SESSION,
    NOT_SENT,
    SESSION_MISMATCH,
    VISITOR_MESSAGE_TYPES,
    clean_name,
    frame_type,
    message_text,
    parse_after,
    parse_uuid,
)
from slyker.chat.schemas import ConversationOut
from slyker.chat.service import (
    current_broker,
    department_channel,
    display_name,
    may_use,
    message_event,
    open_conversation,
    session_channel,
    store_message,
    valid_visitor_key,
    visitor_key_hash,
)
from slyker.chat.sockets import PRESENCE_RENEW_SECONDS, ChatSocket, moment
from slyker.chat.writer import NewMessage, current_writer
from slyker.models.accounts import User
from slyker.models.chat import ChatMessage, Conversation, SenderType
from slyker.settings import Settings, current_settings

log = logging.getLogger(__name__)

AGENTS_SEEN_SECONDS = 2.0  # an agent seen online this recently: no automatic reply yet


class VisitorSocket(ChatSocket):
    __slots__ = (
        "agents_seen_at",
        "client",
        "conversation",
        "department",
        "forked",
        "issued_session",
        "key",
        "key_hashes",
        "next_slot_renewal",
        "session_id",
        "slot",
        "typing",
        "typing_name",
        "user",
        "visitor_key",
    )

    def __init__(self, settings: Settings, department: str) -> None:
        super().__init__(settings)
        self.department = department
        self.user: User | None = None
        self.session_id = uuid.uuid4()  # until the client names its own
        # The session id is one this socket made (not the client's): no conversation has it
        # unless another socket took it from this one, so its first message looks nothing up.
        self.issued_session = True
        self.conversation: Conversation | None = None
        # Client-chosen ids this socket may not use: their messages went to its own conversation.
        self.forked: dict[uuid.UUID, uuid.UUID] = {}
        self.client = client_key(websocket.remote_addr)
        self.slot = uuid.uuid4().hex
        self.visitor_key = VisitorKey.of_handshake(settings.secret_key)
        self.key = self.visitor_key.key
        self.key_hashes = self.visitor_key.hashes
        self.typing: TypingCoalescer | None = None  # made with the first typing frame
        self.typing_name = "Visitor"
        self.next_slot_renewal = time.monotonic() + PRESENCE_RENEW_SECONDS
        self.agents_seen_at = -AGENTS_SEEN_SECONDS  # when an agent was last seen online

    def accept_headers(self) -> dict[str, str]:
        return self.visitor_key.accept_headers()

    # --- per-client limits ------------------------------------------------------------------

    async def take_slot(self) -> bool:
        return await current_broker().take_socket_slot(
            self.client, self.slot, self.settings.chat.max_sockets_per_client
        )

    async def release_slot(self) -> None:
        await current_broker().release_socket_slot(self.client, self.slot)

    def tick(self, now: float) -> list[Awaitable[None]]:
        work = super().tick(now)
        if now >= self.next_slot_renewal:
            self.next_slot_renewal = now + PRESENCE_RENEW_SECONDS
            work.append(current_broker().renew_socket_slot(self.client, self.slot))
        return work

    async def leave(self) -> None:
        if self.typing is not None:
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

    async def switch_session(self, session_id: uuid.UUID, issued: bool = False) -> None:
        await self.unsubscribe_all()
        self.session_id = session_id
        self.issued_session = issued
        await self.subscribe(session_channel(session_id))

    # --- opening and resume -----------------------------------------------------------------

    async def start(self) -> None:
        problems: list[Event] = []
        conversation: Conversation | None = None
        after = parse_after(websocket.args.get("after", "0"))
        if after is None:
            problems.append(INVALID_AFTER)
        requested = websocket.args.get("session_id")
        if requested:  # a resume: the only handshake that looks at the database
            session_id = parse_uuid(requested)
            if session_id is None:
                problems.append(INVALID_SESSION)
            else:
                conversation = await Conversation.get_or_none(session_id=session_id)
                if conversation is None or self.allowed(conversation):
                    self.session_id = session_id
                    self.issued_session = False
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
            await self.subscribed()  # what is stored after the query arrives live
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
            if self.typing is None:
                self.typing = TypingCoalescer(
                    self.publish_typing, self.settings.chat.typing_interval
                )
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

    async def open(self, frame: dict[str, Any]) -> tuple[Conversation | None, bool]:
        """This socket's conversation, created (or continued) by its first message; None if
        refused (the client was told)."""
        if self.conversation is not None:
            return self.conversation, False
        broker = current_broker()
        if self.issued_session or not await Conversation.exists(session_id=self.session_id):
            allowed = await broker.take_new_conversation(
                self.client, self.settings.chat.new_conversations_per_minute
            )
            if not allowed:
                self.error(
                    "Too many new conversations from your address; try again in a minute",
                    "too_many_conversations",
                )
                return None, False
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
            await self.switch_session(uuid.uuid4(), issued=True)
            return None, False
        # Replies to this conversation can exist only once its first message is stored: from
        # then on they must reach this socket, whichever worker stores them.
        await self.subscribed()
        self.conversation = conversation
        return conversation, created

    async def visitor_message(self, frame: dict[str, Any]) -> None:
        text = message_text(frame)
        if not isinstance(text, str):
            self.offer(text)
            return
        if not await self.choose_session(frame):
            return
        conversation, created = await self.open(frame)
        if conversation is None:
            return
        broker = current_broker()
        channel = department_channel(self.department)

        def deliver(message: ChatMessage) -> None:
            if created:
                event = {
                    "type": "new_conversation",
                    "conversation": ConversationOut.of(conversation).frame(),
                }
                broker.publish_now(channel, event)
            event = {
                **message_event(message, conversation),
                "visitor_name": conversation.visitor_name,
            }
            broker.publish_now(channel, event)

        new = NewMessage(
            conversation,
            SenderType.USER,
            conversation.visitor_name,
            text,
            reopen=True,
            on_stored=deliver,
        )
        try:
            message = await current_writer().store(new)
        except Exception:  # an outage, not the client's input: nothing was stored
            log.warning("Chat message not stored on %s", websocket.path, exc_info=True)
            self.offer(NOT_SENT)
            return
        # Stored and published: from here on nothing may report the message as not sent.
        self.acknowledge(message)
        try:
            await self.auto_reply(conversation)
        except Exception:
            log.exception("Chat automatic reply failed on %s", websocket.path)

    async def auto_reply(self, conversation: Conversation) -> None:
        """One automatic reply per conversation when no agent of the department is online."""
        if conversation.auto_reply_sent:
            return
        now = time.monotonic()
        if now - self.agents_seen_at < AGENTS_SEEN_SECONDS:
            return  # not a presence query (a Redis round trip) per message of a busy visitor
        if await current_broker().agents_online(self.department):
            self.agents_seen_at = now
            return
        claimed = await Conversation.filter(id=conversation.id, auto_reply_sent=False).update(
            auto_reply_sent=True
        )
        conversation.auto_reply_sent = True
        if not claimed:
            return
        text = self.settings.chat.auto_replies[self.department]
        broker = current_broker()
        await store_message(
            conversation,
            SenderType.SYSTEM,
            "Slyker Tech",
            text,
            on_stored=lambda reply: broker.publish_now(
                session_channel(conversation.session_id), message_event(reply, conversation)
            ),
        )


async def serve_visitor(department: str) -> None:
    """A visitor socket, from the handshake to its end."""
    settings = current_settings()
    if department not in settings.chat.departments:
        abort(404)
    check_origin(settings)
    refuse_when_draining()
    socket = VisitorSocket(settings, department)
    token, subprotocol = offered_token()
    decline_compression()
    await websocket.accept(headers=socket.accept_headers(), subprotocol=subprotocol)
    # Refused after accept, so that the browser sees why (a refused handshake is only "1006").
    if not await socket.take_slot():
        log.warning("Chat sockets per client exceeded by %s", socket.client)
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "Too many connections from your address")
        return
    try:
        if token is None and department in settings.chat.staff_departments:
            token = await auth_frame_token(settings)
        identity, bad_token = await socket_identity(token)
        if bad_token:
            await websocket.close(CLOSE_NOT_AUTHENTICATED, "Invalid or expired token")
            return
        if department in settings.chat.staff_departments:
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
