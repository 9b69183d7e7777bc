"""A staff member's agent socket: every conversation of their departments, live; replies,
typing and closing conversations.

An agent answering many visitors sends many frames: they are not handled one at a time, each
waiting for its own round trips. The receiver only checks a frame's limit and queues it; one
task works through what is queued, in batches, in order: one identity check per batch, one
query for the conversations it has not seen yet, and all its replies handed to the message
writer together (one commit). Each reply is acknowledged once stored and published, or
answered with ``not_sent`` if it was not stored; order within a conversation is the order
the agent sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable
from typing import Any

from quart import websocket
from tortoise.expressions import Q

from slyker.chat.handshake import (
    Identity,
    auth_frame_token,
    check_origin,
    decline_compression,
    offered_token,
    socket_identity,
)
from slyker.chat.lifecycle import refuse_when_draining
from slyker.chat.limits import TypingCoalescer
from slyker.chat.protocol import (
    AGENT_FRAME_TYPES,
    CLOSE_NOT_AUTHENTICATED,
    CLOSE_NOT_STAFF,
    NOT_SENT,
    SERVER_ERROR,
    UNKNOWN_SESSION,
    UNKNOWN_TYPE,
    frame_type,
    message_text,
    parse_uuid,
)
from slyker.chat.schemas import ConversationOut
from slyker.chat.service import (
    agent_reply,
    close_conversation,
    current_broker,
    department_channel,
    display_name,
    message_event,
    session_channel,
)
from slyker.chat.sockets import PRESENCE_RENEW_SECONDS, ChatSocket, moment
from slyker.chat.writer import NewMessage, current_writer
from slyker.models.chat import ChatMessage, Conversation, ConversationStatus, SenderType
from slyker.settings import Settings, current_settings

log = logging.getLogger(__name__)

TYPING_COALESCERS_KEPT = 200
MAX_BATCH = 100  # frames handled together
MAX_WAITING_FRAMES = 1000  # beyond that the database is not keeping up: frames are refused
CONVERSATIONS_KEPT = 1000  # looked-up conversations remembered per socket

Waiting = tuple[dict[str, Any], str | int | None]  # a frame and its client_id


class AgentSocket(ChatSocket):
    __slots__ = (
        "agent",
        "departments",
        "known",
        "member",
        "next_presence",
        "typing",
        "waiting",
        "working",
    )

    def __init__(self, settings: Settings, identity: Identity) -> None:
        super().__init__(settings, agent=True)
        self.identity = identity
        self.agent = identity.user
        self.member = f"{self.agent.id}:{uuid.uuid4().hex}"
        wanted = [d.strip() for d in websocket.args.get("departments", "").split(",") if d.strip()]
        self.departments = [d for d in settings.chat.departments if not wanted or d in wanted]
        self.typing: dict[uuid.UUID, TypingCoalescer] = {}
        self.waiting: deque[Waiting] = deque()
        self.working: asyncio.Task[None] | None = None
        # Only immutable fields of these are used (id, session_id, department).
        self.known: dict[uuid.UUID, Conversation] = {}
        self.next_presence = time.monotonic() + PRESENCE_RENEW_SECONDS

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
                "conversations": [ConversationOut.of(c).frame() for c in active],
            }
        )

    async def newest_message_id(self) -> int:
        newest = await ChatMessage.all().order_by("-id").first()
        return newest.id if newest else 0

    async def mark_present(self) -> None:
        for department in self.departments:
            await current_broker().set_present(department, self.member)

    def tick(self, now: float) -> list[Awaitable[None]]:
        work = super().tick(now)
        if now >= self.next_presence:
            self.next_presence = now + PRESENCE_RENEW_SECONDS
            work.append(self.mark_present())
        return work

    async def leave(self) -> None:
        if self.working is not None:
            self.working.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.working
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

    # --- client frames: queued, then worked through in batches -----------------------------

    def frame_kind(self, kind: str | None) -> str:
        if kind in AGENT_FRAME_TYPES:
            return kind  # type: ignore[return-value]
        return super().frame_kind(kind)

    async def dispatch(self, frame: dict[str, Any]) -> None:
        if frame_type(frame) in ("ping", "pong"):
            await super().dispatch(frame)
            return
        if len(self.waiting) >= MAX_WAITING_FRAMES:
            self.offer(self.failure(frame))
            return
        self.waiting.append((frame, self.client_id))
        if self.working is None or self.working.done():
            self.working = asyncio.create_task(self.work_through())

    def failure(self, frame: dict[str, Any]) -> dict[str, Any]:
        """What a frame that could not be handled is answered with."""
        return NOT_SENT if frame_type(frame) == "message" else SERVER_ERROR

    async def work_through(self) -> None:
        while self.waiting and not self.ending:
            batch = [self.waiting.popleft() for _ in range(min(MAX_BATCH, len(self.waiting)))]
            try:
                authorised = await self.still_authorised()
            except Exception:  # the database is down: nothing of the batch was done
                log.exception("Chat agent frames failed on %s", websocket.path)
                for frame, client_id in batch:
                    self.answer(client_id, self.failure(frame))
                continue
            if not authorised:  # closing (4001 / 4003): nothing queued is acted on
                self.waiting.clear()
                return
            await self.handle_batch(batch)

    async def handle_batch(self, batch: list[Waiting]) -> None:
        try:
            await self.look_up(frame for frame, _ in batch)
        except Exception:
            log.exception("Chat agent frames failed on %s", websocket.path)
            for frame, client_id in batch:
                self.answer(client_id, self.failure(frame))
            return
        replies: list[tuple[NewMessage, str | int | None]] = []
        name = display_name(self.agent)
        for frame, client_id in batch:
            kind = frame_type(frame)
            if kind not in AGENT_FRAME_TYPES:
                self.answer(client_id, UNKNOWN_TYPE)
                continue
            conversation = self.conversation_of(frame)
            if conversation is None:
                self.answer(client_id, UNKNOWN_SESSION)
                continue
            if kind == "message":
                text = message_text(frame)
                if isinstance(text, str):
                    replies.append((agent_reply(conversation, self.agent, text, name), client_id))
                else:
                    self.answer(client_id, text)
                continue
            await self.store(replies)  # what came before this frame, first
            replies = []
            try:
                if kind == "typing":
                    self.typing_towards(conversation).update(bool(frame.get("is_typing")))
                else:
                    await close_conversation(conversation, name)
            except Exception:
                log.exception("Chat agent frame failed on %s", websocket.path)
                self.answer(client_id, SERVER_ERROR)
        await self.store(replies)

    async def store(self, replies: list[tuple[NewMessage, str | int | None]]) -> None:
        if not replies:
            return
        futures = current_writer().submit([reply for reply, _ in replies])
        for (_, client_id), future in zip(replies, futures, strict=True):
            try:
                stored = await future
            except Exception:
                log.warning("Chat agent reply not stored on %s", websocket.path, exc_info=True)
                self.answer(client_id, NOT_SENT)
                continue
            if client_id is not None:
                self.answer(client_id, {"type": "ack", "id": stored.id, "client_id": client_id})

    async def look_up(self, frames: Any) -> None:
        """Remember the conversations of ``frames`` not seen yet (one query)."""
        wanted = {parse_uuid(frame.get("session_id")) for frame in frames} - {None}
        unknown = [session_id for session_id in wanted if session_id not in self.known]
        if not unknown:
            return
        for conversation in await Conversation.filter(
            session_id__in=unknown, department__in=self.departments
        ):
            self.known[conversation.session_id] = conversation
        while len(self.known) > CONVERSATIONS_KEPT:
            del self.known[next(iter(self.known))]

    def conversation_of(self, frame: dict[str, Any]) -> Conversation | None:
        session_id = parse_uuid(frame.get("session_id"))
        return self.known.get(session_id) if session_id is not None else None

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

            interval = self.settings.chat.typing_interval
            typing = self.typing[session_id] = TypingCoalescer(publish, interval)
        return typing


async def serve_agent() -> None:
    """An agent socket, from the handshake to its end.

    The access token: ``Sec-WebSocket-Protocol: bearer, <token>``, or a first frame
    ``{"type": "auth", "token": ...}`` within 5 s (else close 4001), or ``?token=``."""
    settings = current_settings()
    check_origin(settings)
    refuse_when_draining()
    token, subprotocol = offered_token()
    decline_compression()
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
