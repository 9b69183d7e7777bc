"""One chat socket's transport: a bounded outbox drained by one sender task, a receive loop
that counts every client frame against its kind's limit before anything else, delivery of
stored messages at most once (live and replayed alike, replays in id order), and the end of
the socket (the client left, overflowed, flooded, lost access, or the server stops).

Tasks per socket: the handler's own, which reads the client's frames; the sender runs only
while frames are waiting to go out (an idle socket has none). Periodic work (pings,
renewals, identity re-checks) is done by :mod:`slyker.chat.lifecycle`. Memory per idle socket
matters (a department may keep thousands of widgets open): the sockets use ``__slots__``, and
what only some sockets need (the outbox's sender, seen ids, rate-limit buckets) is made when
first needed.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

from quart import websocket

from slyker.chat.broker import RESYNC_TYPE, Event, Subscription
from slyker.chat.handshake import Identity
from slyker.chat.lifecycle import live_sockets
from slyker.chat.limits import FrameLimits
from slyker.chat.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_NOT_AUTHENTICATED,
    CLOSE_NOT_STAFF,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    MESSAGE_EVENT_TYPES,
    NOT_SENT,
    SERVER_ERROR,
    client_id_of,
    echoed_timestamp,
    error_event,
    frame_type,
    parse_frame,
)
from slyker.chat.service import current_broker, message_event
from slyker.models.accounts import User
from slyker.models.chat import ChatMessage, Conversation
from slyker.settings import Settings

log = logging.getLogger(__name__)

PRESENCE_RENEW_SECONDS = 10
# Events from different workers may arrive slightly out of id order; a resync looks back
# this many ids behind the newest one seen, and at everything stored since the broker says
# events may have been missed (duplicates are dropped by id anyway).
RESYNC_LOOKBACK = 100
RESYNC_RETRY_SECONDS = 2.0  # a resync that failed (the database is down) is tried again
# Put in a socket's outbox where a resync is due: live events after it wait for the replay.
RESYNC_MARK: Event = {"type": RESYNC_TYPE}
SEEN_IDS_KEPT = 5000
AGENT_OUTBOX_FACTOR = 50  # ~8 s of a busy department (600 events a second)
CLOSE_FLUSH_SECONDS = 1.0  # before a close, frames already queued get this long to go out
END_OF_SOCKET = "chat socket ending"  # the message of end()'s cancellation of the handler


def moment(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


class ChatSocket:
    """A bounded outbox drained by one task (while it has frames); a client that cannot keep
    up is closed (1013) instead of growing memory or slowing the others. Events carrying a
    message id are delivered at most once, replays and live events alike, and replays come in
    id order.

    Every client frame is counted in a token bucket of its kind first (FrameLimits): excess
    frames are dropped with one error frame, and a socket that keeps flooding is closed (1008).
    """

    __slots__ = (
        "checking_identity",
        "client_id",
        "close_with",
        "context",
        "done",
        "ending",
        "floor",
        "handler",
        "held",
        "identity",
        "interrupted",
        "limits",
        "next_identity_check",
        "next_ping",
        "outbox",
        "outbox_size",
        "overflowed",
        "receiving",
        "resync_queued",
        "resync_since",
        "seen",
        "seen_order",
        "send_error",
        "sender",
        "settings",
        "subscriptions",
    )

    def __init__(self, settings: Settings, *, agent: bool = False) -> None:
        self.settings = settings
        # An agent socket receives a whole department (every visitor's messages, the acks of
        # its own replies and their echoes): its outbox holds that many more events.
        self.outbox_size = settings.chat.send_queue_size * (AGENT_OUTBOX_FACTOR if agent else 1)
        self.outbox: deque[Event] | None = None  # made when needed, dropped once sent
        self.sender: asyncio.Task[None] | None = None  # drains the outbox while it has events
        # The sender runs in this socket's context (its ``websocket``, its database context),
        # not in that of whoever queued the event (another socket, the message writer).
        self.context = contextvars.copy_context()
        self.send_error: Exception | None = None  # why the sender stopped, if it failed
        self.done = False  # the socket is gone: nothing is queued any more
        self.ending = False  # the socket must close: see close_with / overflowed / send_error
        self.handler: asyncio.Task[Any] | None = None  # the task that reads the client's frames
        self.receiving = False  # the handler waits for the client's next frame
        self.interrupted = False  # end() cancelled that wait
        self.overflowed = False
        self.close_with: tuple[int, str] | None = None
        self.floor = 0  # the client said it has everything up to here (resume "after")
        self.seen: set[int] | None = None  # made with the first message id
        self.seen_order: deque[int] | None = None
        self.resync_queued = False
        self.resync_since: float | None = None  # the earliest "missed since" of queued resyncs
        self.held: list[Event] | None = None  # live events held back during a replay
        self.client_id: str | int | None = None  # of the frame being handled
        self.subscriptions: list[Subscription] = []
        self.limits = FrameLimits(settings, agent=agent)
        self.identity: Identity | None = None
        now = time.monotonic()
        self.next_ping = now + settings.chat.ping_interval
        self.next_identity_check = now + settings.chat.auth_recheck_seconds
        self.checking_identity = False

    @property
    def last_id(self) -> int:
        return max(self.floor, max(self.seen or (), default=0))

    def resync_after(self) -> int:
        return max(self.floor, self.last_id - RESYNC_LOOKBACK)

    # --- the outbox --------------------------------------------------------------------------

    def offer(self, event: Event) -> None:
        """Queue ``event`` for the client (held back while a replay is being prepared)."""
        if event.get("type") == RESYNC_TYPE:
            self.request_resync(event.get("since"))
            return
        if event.get("type") == "error" and self.client_id is not None:
            event = {**event, "client_id": self.client_id}
        if self.held is not None:
            self.held.append(event)
            if len(self.held) > self.outbox_size:
                self.overflow()
            return
        self.enqueue(event)

    def answer(self, client_id: str | int | None, event: Event) -> None:
        """:meth:`offer` an answer to the frame that carried ``client_id``."""
        self.client_id = client_id
        try:
            self.offer(event)
        finally:
            self.client_id = None

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
        if self.done:
            return
        message_id = event.get("id")
        if isinstance(message_id, int) and event.get("type") in MESSAGE_EVENT_TYPES:
            seen, order = self.seen, self.seen_order
            if seen is None or order is None:
                seen, order = self.seen, self.seen_order = set(), deque()
            if message_id <= self.floor or message_id in seen:
                return
            seen.add(message_id)
            order.append(message_id)
            if len(order) > SEEN_IDS_KEPT:
                seen.discard(order.popleft())
        outbox = self.outbox
        if outbox is None:
            outbox = self.outbox = deque()
        elif len(outbox) >= self.outbox_size:
            self.overflow()
            return
        outbox.append(event)
        if self.sender is None:
            loop = asyncio.get_running_loop()
            self.sender = loop.create_task(self.pump(), context=self.context)

    def replay(self, messages: list[ChatMessage], conversation: Conversation) -> None:
        for message in messages:
            self.enqueue(message_event(message, conversation))

    def overflow(self) -> None:
        self.overflowed = True
        self.end()

    def close_soon(self, code: int, reason: str) -> None:
        if self.close_with is None:
            self.close_with = (code, reason)
        self.end()

    def end(self) -> None:
        """The socket must close: the handler stops reading (at once if it is waiting for a
        frame, else once the frame it is handling is done) and closes it."""
        if self.ending:
            return
        self.ending = True
        if self.receiving and self.handler is not None:
            self.interrupted = True
            self.handler.cancel(END_OF_SOCKET)

    async def subscribe(self, channel: str) -> None:
        self.subscriptions.append(await current_broker().subscribe(channel, self.offer))

    async def subscribed(self) -> None:
        """Every channel of this socket receives what any worker publishes from now on."""
        for subscription in list(self.subscriptions):
            await subscription.ready()

    async def unsubscribe_all(self) -> None:
        for subscription in self.subscriptions:
            await subscription.close()
        self.subscriptions.clear()

    async def pump(self) -> None:
        """Send what the outbox holds, in order, then end (the next event starts another).
        Nothing awaits between the last look at the outbox and ``sender = None``: an event
        queued meanwhile cannot be left without a sender."""
        outbox = self.outbox
        try:
            while outbox:
                event = outbox.popleft()
                if event is RESYNC_MARK:
                    await self.resync()
                else:
                    await websocket.send(json.dumps(event))
        except Exception as error:  # the connection is gone: the socket ends
            self.send_error = error
            self.done = True
            self.end()
        finally:
            self.outbox = None
            self.sender = None

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

    async def on_resync(self, since: float | None) -> None:
        """Events may have been missed (since ``since``): subclasses replay them."""

    def acknowledge(self, message: ChatMessage) -> None:
        """The client's message is stored (and will be delivered): tell it, if it asked."""
        if self.client_id is not None:
            self.offer({"type": "ack", "id": message.id, "client_id": self.client_id})

    # --- periodic work (called by slyker.chat.lifecycle) ------------------------------------

    def tick(self, now: float) -> list[Awaitable[None]]:
        work: list[Awaitable[None]] = []
        if now >= self.next_ping:
            self.next_ping = now + self.settings.chat.ping_interval
            self.offer({"type": "ping", "timestamp": int(time.time() * 1000)})
        identity = self.identity
        if identity is not None and not self.checking_identity:
            expired = time.time() >= identity.expires_at
            if expired or now >= self.next_identity_check:
                self.next_identity_check = now + self.settings.chat.auth_recheck_seconds
                work.append(self.recheck_identity())
        return work

    def stop_for_draining(self) -> None:
        self.close_soon(CLOSE_GOING_AWAY, "Server shutting down; reconnect")

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

    async def recheck_identity(self) -> None:
        """Close the socket when its token expires or its user loses access, even if the
        client sends nothing (it would keep receiving otherwise)."""
        self.checking_identity = True
        try:
            await self.still_authorised()
        finally:
            self.checking_identity = False

    # --- client frames ---------------------------------------------------------------------

    def frame_kind(self, kind: str | None) -> str:
        """The bucket a frame of this ``type`` counts in ("invalid" for unknown types)."""
        return "keepalive" if kind in ("ping", "pong") else "invalid"

    async def receive_frames(self) -> None:
        while not self.ending:
            self.receiving = True
            try:
                raw = await websocket.receive()
            finally:
                self.receiving = False
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", errors="replace")
            limit, size = self.settings.chat.max_message_bytes, len(raw.encode())
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
        if size > self.settings.chat.max_message_bytes:
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
            self.offer(NOT_SENT if self.frame_kind(kind) == "message" else SERVER_ERROR)

    def error(self, message: str, code: str) -> None:
        self.offer(error_event(message, code))

    async def handle(self, frame: dict[str, Any]) -> None:
        raise NotImplementedError

    # --- the socket's life -------------------------------------------------------------------

    async def serve(self) -> None:
        """Run until the client leaves, overflows, floods, loses access or the server stops."""
        sockets = live_sockets()
        handler = self.handler = asyncio.current_task()
        sockets.add(self)
        try:
            try:
                await self.receive_frames()
            except asyncio.CancelledError:
                # end() woke the handler from its wait for a frame: not a cancellation of it.
                # (Had the handler been cancelled too, that is delivered at its next await.)
                if not self.interrupted or handler is None:
                    raise
                handler.uncancel()
            self.ending = True
            if self.close_with is not None:
                # What the client was told before (the error that explains a 1008) goes first.
                sender = self.sender
                if sender is not None:
                    await asyncio.wait([sender], timeout=CLOSE_FLUSH_SECONDS)
                await websocket.close(*self.close_with)
            elif self.overflowed:
                log.warning("Chat client too slow on %s: closed with 1013", websocket.path)
                await websocket.close(CLOSE_TRY_AGAIN_LATER, "Too slow; reconnect")
            if self.send_error is not None:
                raise self.send_error
        finally:
            sockets.discard(self)
            self.done = True  # events still published to it are dropped, no sender restarts
            self.outbox = None
            self.handler = None
            sender = self.sender
            if sender is not None:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            await self.unsubscribe_all()
            await self.leave()

    async def leave(self) -> None:
        """Clean-up when the socket ends."""
