"""Per-socket flood control: a token bucket per kind of client frame, strikes that end a socket
which keeps flooding, and typing events coalesced before they reach the other side; and the
per-client counts of one process (:class:`ClientLimits`)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from slyker.settings import Settings

# A frame over its kind's limit is one strike; strikes drain at STRIKES_DRAINED_PER_SECOND.
# More than MAX_STRIKES outstanding is sustained abuse: the socket is closed with 1008.
MAX_STRIKES = 50
STRIKES_DRAINED_PER_SECOND = 1.0


class TokenBucket:
    __slots__ = ("burst", "rate", "refilled_at", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.refilled_at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.refilled_at) * self.rate)
        self.refilled_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    warn: bool = False  # send the client one error frame about it
    abusive: bool = False  # close the socket (1008)


# (rate per second, burst) of the kinds whose limit is fixed: no widget needs more.
FIXED_LIMITS = {
    "typing": (10, 20),
    "resume": (1, 5),
    "close": (2, 10),
    "keepalive": (2, 10),  # ping and pong
    "invalid": (2, 10),  # frames answered with an error
}
ALLOWED = Verdict(True)


class FrameLimits:
    """One bucket per frame kind for one socket. ``message`` follows the settings (agents have
    their own, higher rate); the others are fixed (FIXED_LIMITS). A bucket is made when its
    kind is first seen (a full bucket and a bucket not made yet allow the same): most sockets
    only ever send a few kinds, and an idle one none."""

    __slots__ = ("agent", "buckets", "settings", "strikes", "struck_at", "warned")

    def __init__(self, settings: Settings, agent: bool = False) -> None:
        self.settings = settings
        self.agent = agent
        self.buckets: dict[str, TokenBucket] = {}
        self.warned: set[str] | None = None
        self.strikes = 0.0
        self.struck_at = 0.0

    def bucket(self, kind: str) -> TokenBucket:
        bucket = self.buckets.get(kind)
        if bucket is None:
            if kind != "message":
                bucket = TokenBucket(*FIXED_LIMITS[kind])
            elif self.agent:
                rate = self.settings.chat.agent_messages_per_second
                bucket = TokenBucket(rate, max(2 * rate, self.settings.chat.message_burst))
            else:
                settings = self.settings
                bucket = TokenBucket(settings.chat.messages_per_second, settings.chat.message_burst)
            self.buckets[kind] = bucket
        return bucket

    def check(self, kind: str) -> Verdict:
        if self.bucket(kind).take():
            if self.warned:
                self.warned.discard(kind)
            return ALLOWED
        now = time.monotonic()
        self.strikes = max(0.0, self.strikes - (now - self.struck_at) * STRIKES_DRAINED_PER_SECOND)
        self.struck_at = now
        self.strikes += 1
        if self.strikes > MAX_STRIKES:
            return Verdict(False, abusive=True)
        # Every refused chat message is reported (the client must know it was not delivered);
        # for the other kinds one error per run of refusals is enough.
        if self.warned is None:
            self.warned = set()
        warn = kind == "message" or kind not in self.warned
        self.warned.add(kind)
        return Verdict(False, warn=warn)


Publish = Callable[[bool], Awaitable[None]]


class TypingCoalescer:
    """Typing state of one conversation towards the other side: the first change goes out at
    once, later ones at most every ``interval`` seconds (CHAT_TYPING_INTERVAL), and the latest
    state always wins."""

    __slots__ = ("interval", "pending", "publish", "sent", "sent_at", "task")

    def __init__(self, publish: Publish, interval: float) -> None:
        self.publish = publish
        self.interval = interval
        self.pending: bool | None = None
        self.sent: bool | None = None
        self.sent_at = -interval
        self.task: asyncio.Task[None] | None = None

    def update(self, is_typing: bool) -> None:
        self.pending = is_typing
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self.pending is not None:
            wait = self.sent_at + self.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            state, self.pending = self.pending, None
            if state is None:
                return
            if state == self.sent and time.monotonic() - self.sent_at < 5:
                continue  # "still typing" at most every few seconds
            self.sent, self.sent_at = state, time.monotonic()
            await self.publish(state)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


NEW_CONVERSATION_WINDOW_SECONDS = 60


def conversation_window() -> int:
    """The current fixed window of the new-conversation count."""
    return int(time.time() // NEW_CONVERSATION_WINDOW_SECONDS)


class ClientLimits:
    """Per-client counts of this process: sockets open and conversations started this
    window. The in-process broker's limits, and the Redis broker's while Redis cannot be
    asked: it records what Redis allowed (``checked=False``), so that in an outage the
    sockets and conversations of this worker still count."""

    MAX_CLIENTS_REMEMBERED = 10_000  # beyond that, other clients' old windows are forgotten

    def __init__(self) -> None:
        self.socket_slots: dict[str, set[str]] = defaultdict(set)
        self.new_conversations: dict[str, tuple[int, int]] = {}  # client: (window, count)

    def take_socket_slot(self, client: str, slot: str, limit: int, *, checked: bool = True) -> bool:
        slots = self.socket_slots[client]
        if checked and len(slots) >= limit:
            return False
        slots.add(slot)
        return True

    def release_socket_slot(self, client: str, slot: str) -> None:
        slots = self.socket_slots.get(client)
        if slots is not None:
            slots.discard(slot)
            if not slots:
                del self.socket_slots[client]

    def take_new_conversation(self, client: str, per_minute: int, *, checked: bool = True) -> bool:
        window = conversation_window()
        if len(self.new_conversations) > self.MAX_CLIENTS_REMEMBERED:
            self.new_conversations = {
                key: value for key, value in self.new_conversations.items() if value[0] == window
            }
        seen_window, count = self.new_conversations.get(client, (window, 0))
        if seen_window != window:
            count = 0
        if checked and count >= per_minute:
            return False
        self.new_conversations[client] = (window, count + 1)
        return True


def client_key(address: str | None) -> str:
    """What the per-client limits count by: the IPv4 address, or the /64 of an IPv6 one (one
    subscriber's network: counting single IPv6 addresses would be no limit at all)."""
    try:
        parsed = ipaddress.ip_address((address or "").strip("[]"))
    except ValueError:
        return "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)
