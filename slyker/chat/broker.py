"""Fan-out of chat events between sockets, agent presence, and the per-client limits.

Two implementations of one interface: :class:`InProcessBroker` (the embedded default: one
worker) and :class:`RedisBroker` (``REDIS_URL``: any number of workers and hosts). Events are
published only after they are stored, so losing a broker message never loses a chat message:
when a Redis subscriber reconnects, every subscription is told to resync from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

Event = dict[str, Any]
Deliver = Callable[[Event], None]  # must not block: sockets queue what they receive
RESYNC = {"type": "_resync"}  # delivered to every subscription after a broker reconnect
PRESENCE_TTL_SECONDS = 30
# A socket's slot in its client's count expires unless renewed (every PRESENCE_RENEW_SECONDS by
# the socket), so slots held by a worker that crashed free themselves.
SOCKET_SLOT_TTL_SECONDS = 30
NEW_CONVERSATION_WINDOW_SECONDS = 60
# A limit check waits this long for Redis at most, then lets the client through: a slow
# Redis must not hold every handshake (there is no fan-out without it anyway).
LIMIT_CHECK_TIMEOUT_SECONDS = 1.0


class Subscription:
    def __init__(self, broker: Broker, channel: str, deliver: Deliver) -> None:
        self.broker = broker
        self.channel = channel
        self.deliver = deliver

    async def close(self) -> None:
        await self.broker._unsubscribe(self)


class Broker(ABC):
    def __init__(self) -> None:
        self._subscriptions: dict[str, set[Subscription]] = defaultdict(set)

    async def start(self) -> None:  # noqa: B027 - optional hook
        pass

    async def stop(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    async def publish(self, channel: str, event: Event) -> None: ...

    async def subscribe(self, channel: str, deliver: Deliver) -> Subscription:
        subscription = Subscription(self, channel, deliver)
        first = not self._subscriptions[channel]
        self._subscriptions[channel].add(subscription)
        if first:
            await self._listen(channel)
        return subscription

    async def _unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscriptions.get(subscription.channel)
        if not subscribers or subscription not in subscribers:
            return
        subscribers.discard(subscription)
        if not subscribers:
            del self._subscriptions[subscription.channel]
            await self._unlisten(subscription.channel)

    def _dispatch(self, channel: str, event: Event) -> None:
        for subscription in list(self._subscriptions.get(channel, ())):
            try:
                subscription.deliver(event)
            except Exception:
                log.exception("Chat subscriber on %s failed", channel)

    async def _listen(self, channel: str) -> None:  # noqa: B027 - optional hook
        pass

    async def _unlisten(self, channel: str) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    async def set_present(self, department: str, member: str) -> None:
        """Mark ``member`` (one agent socket) online in ``department`` for a while; sockets
        renew it every few seconds."""

    @abstractmethod
    async def set_absent(self, department: str, member: str) -> None: ...

    @abstractmethod
    async def agents_online(self, department: str) -> int: ...

    @abstractmethod
    async def take_socket_slot(self, client: str, slot: str, limit: int) -> bool:
        """Count socket ``slot`` for ``client`` unless it already has ``limit`` sockets."""

    @abstractmethod
    async def renew_socket_slot(self, client: str, slot: str) -> None: ...

    @abstractmethod
    async def release_socket_slot(self, client: str, slot: str) -> None: ...

    @abstractmethod
    async def take_new_conversation(self, client: str, per_minute: int) -> bool:
        """Count one new conversation for ``client`` unless it started ``per_minute`` in the
        current minute (a fixed window of NEW_CONVERSATION_WINDOW_SECONDS)."""


def _window() -> int:
    return int(time.time() // NEW_CONVERSATION_WINDOW_SECONDS)


class InProcessBroker(Broker):
    """Everything in this process: correct for one worker, the embedded default."""

    def __init__(self) -> None:
        super().__init__()
        self._presence: dict[str, dict[str, float]] = defaultdict(dict)
        self._socket_slots: dict[str, set[str]] = defaultdict(set)
        self._new_conversations: dict[str, tuple[int, int]] = {}  # client: (window, count)

    async def publish(self, channel: str, event: Event) -> None:
        self._dispatch(channel, event)

    async def set_present(self, department: str, member: str) -> None:
        self._presence[department][member] = time.monotonic() + PRESENCE_TTL_SECONDS

    async def set_absent(self, department: str, member: str) -> None:
        self._presence[department].pop(member, None)

    async def agents_online(self, department: str) -> int:
        now = time.monotonic()
        return sum(1 for expiry in self._presence[department].values() if expiry > now)

    async def take_socket_slot(self, client: str, slot: str, limit: int) -> bool:
        slots = self._socket_slots[client]
        if len(slots) >= limit:
            return False
        slots.add(slot)
        return True

    async def renew_socket_slot(self, client: str, slot: str) -> None:
        pass  # in-process slots end with the socket (and with the process)

    async def release_socket_slot(self, client: str, slot: str) -> None:
        slots = self._socket_slots.get(client)
        if slots is not None:
            slots.discard(slot)
            if not slots:
                del self._socket_slots[client]

    async def take_new_conversation(self, client: str, per_minute: int) -> bool:
        window = _window()
        if len(self._new_conversations) > 10_000:  # forget old windows of other clients
            self._new_conversations = {
                key: value for key, value in self._new_conversations.items() if value[0] == window
            }
        seen_window, count = self._new_conversations.get(client, (window, 0))
        if seen_window != window:
            count = 0
        if count >= per_minute:
            return False
        self._new_conversations[client] = (window, count + 1)
        return True


class RedisBroker(Broker):
    """Redis pub/sub for events, a sorted set per department for presence.

    One pub/sub connection per process, listened to by one task that reconnects by itself
    (with backoff) and then tells every subscription to resync from the database.
    """

    PREFIX = "slyker:chat:"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._redis: Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._connected = asyncio.Event()

    def _redis_client(self) -> Redis:
        if self._redis is None:
            # After a Redis restart the pooled connections are dead: the first command on one
            # fails, so retry on a fresh connection instead of dropping the event.
            self._redis = Redis.from_url(
                self.url,
                socket_connect_timeout=2,
                socket_timeout=5,
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )
        return self._redis

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen_forever(), name="chat-redis-listener")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._redis is not None:
            await self._redis.aclose()

    async def publish(self, channel: str, event: Event) -> None:
        try:
            await self._redis_client().publish(self.PREFIX + channel, json.dumps(event))
        except RedisError as error:
            # Stored already: receivers resync from the database when Redis is back.
            log.warning("Chat event on %s not published (Redis: %s)", channel, error)

    async def _listen(self, channel: str) -> None:
        if self._pubsub is not None and self._connected.is_set():
            with contextlib.suppress(RedisError):
                await self._pubsub.subscribe(self.PREFIX + channel)

    async def _unlisten(self, channel: str) -> None:
        if self._pubsub is not None and self._connected.is_set():
            with contextlib.suppress(RedisError):
                await self._pubsub.unsubscribe(self.PREFIX + channel)

    async def _listen_forever(self) -> None:
        delay = 0.2
        first = True
        while True:
            pubsub = self._redis_client().pubsub(ignore_subscribe_messages=True)
            try:
                # A placeholder channel keeps the connection in subscribed mode.
                await pubsub.subscribe(self.PREFIX + "_")
                self._pubsub = pubsub
                self._connected.set()
                # Every channel wanted now, including those added while connecting (their
                # _listen found no connection): subscribing twice is harmless.
                if self._subscriptions:
                    await pubsub.subscribe(*(self.PREFIX + c for c in self._subscriptions))
                if not first:
                    log.warning("Chat broker reconnected to Redis; clients resync")
                    for channel in list(self._subscriptions):
                        self._dispatch(channel, RESYNC)
                first, delay = False, 0.2
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    channel = message["channel"].decode()[len(self.PREFIX) :]
                    try:
                        event = json.loads(message["data"])
                    except ValueError:
                        log.warning("Undecodable chat event on %s", channel)
                        continue
                    self._dispatch(channel, event)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                log.warning("Chat broker lost Redis (%s); reconnecting in %.1f s", error, delay)
            finally:
                self._connected.clear()
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _presence_key(self, department: str) -> str:
        return f"{self.PREFIX}presence:{department}"

    async def set_present(self, department: str, member: str) -> None:
        with contextlib.suppress(RedisError):
            await self._redis_client().zadd(
                self._presence_key(department), {member: time.time() + PRESENCE_TTL_SECONDS}
            )

    async def set_absent(self, department: str, member: str) -> None:
        with contextlib.suppress(RedisError):
            await self._redis_client().zrem(self._presence_key(department), member)

    async def agents_online(self, department: str) -> int:
        try:
            return int(
                await self._redis_client().zcount(
                    self._presence_key(department), time.time(), "+inf"
                )
            )
        except RedisError:
            return 0  # unknown: the visitor gets the automatic reply rather than silence

    # A sorted set per client address: member = socket slot, score = its expiry time. Expired
    # members (a crashed worker's) are dropped before counting; the key itself expires too.
    _TAKE_SLOT = """
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
        if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
        redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
        redis.call('EXPIRE', KEYS[1], ARGV[5])
        return 1
    """

    def _slots_key(self, client: str) -> str:
        return f"{self.PREFIX}sockets:{client}"

    async def take_socket_slot(self, client: str, slot: str, limit: int) -> bool:
        now = time.time()
        try:
            taken = await asyncio.wait_for(
                self._redis_client().eval(
                    self._TAKE_SLOT,
                    1,
                    self._slots_key(client),
                    now,
                    limit,
                    now + SOCKET_SLOT_TTL_SECONDS,
                    slot,
                    SOCKET_SLOT_TTL_SECONDS,
                ),
                LIMIT_CHECK_TIMEOUT_SECONDS,
            )
        except (RedisError, TimeoutError) as error:
            # Without Redis there is no chat fan-out either; do not lock everyone out.
            log.warning("Chat socket limit not checked (Redis: %s)", error)
            return True
        return bool(taken)

    async def renew_socket_slot(self, client: str, slot: str) -> None:
        key = self._slots_key(client)
        with contextlib.suppress(RedisError):
            async with self._redis_client().pipeline(transaction=True) as pipe:
                pipe.zadd(key, {slot: time.time() + SOCKET_SLOT_TTL_SECONDS})
                pipe.expire(key, SOCKET_SLOT_TTL_SECONDS)
                await pipe.execute()

    async def release_socket_slot(self, client: str, slot: str) -> None:
        with contextlib.suppress(RedisError, TimeoutError):
            # bounded: it runs when the socket ends; if it fails, the slot expires by itself
            await asyncio.wait_for(
                self._redis_client().zrem(self._slots_key(client), slot),
                LIMIT_CHECK_TIMEOUT_SECONDS,
            )

    async def take_new_conversation(self, client: str, per_minute: int) -> bool:
        key = f"{self.PREFIX}new-conversations:{client}:{_window()}"
        try:
            async with self._redis_client().pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, 2 * NEW_CONVERSATION_WINDOW_SECONDS)
                count, _ = await asyncio.wait_for(pipe.execute(), LIMIT_CHECK_TIMEOUT_SECONDS)
        except (RedisError, TimeoutError) as error:
            log.warning("Chat conversation limit not checked (Redis: %s)", error)
            return True
        return int(count) <= per_minute
