"""Fan-out of chat events between sockets, agent presence, and the per-client limits.

Two implementations of one interface: :class:`InProcessBroker` (the embedded default: one
worker) and :class:`RedisBroker` (``REDIS_URL``: any number of workers and hosts). Events are
published only after they are stored, so losing a broker message never loses a chat message:
a socket that may have missed events is told to resync from the database (a ``_resync`` event
carrying the time since when it may have missed them).

Redis never decides whether a message is accepted: events reach the sockets of the same worker
directly, publishing to the other workers happens in the background, and while Redis is
unavailable a circuit breaker skips every Redis call at once instead of retrying each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from slyker.chat.limits import NEW_CONVERSATION_WINDOW_SECONDS, ClientLimits, conversation_window

log = logging.getLogger(__name__)
T = TypeVar("T")

Event = dict[str, Any]
Deliver = Callable[[Event], None]  # must not block: sockets queue what they receive
RESYNC_TYPE = "_resync"  # an event telling a socket to replay what it missed from the database
PRESENCE_TTL_SECONDS = 30
# A socket's slot in its client's count expires unless renewed (every PRESENCE_RENEW_SECONDS by
# the socket), so slots held by a worker that crashed free themselves.
SOCKET_SLOT_TTL_SECONDS = 30
# Any Redis call waits this long at most; a call that fails or times out opens the circuit
# (every later call is skipped at once) until the listener has reconnected. A limit check
# that cannot ask Redis is decided by this worker's own counts (ClientLimits).
COMMAND_TIMEOUT_SECONDS = 1.0
LISTEN_POLL_SECONDS = 1.0  # the listener looks this often whether a command tripped the circuit
MAX_RECONNECT_DELAY_SECONDS = 2.0
REDIS_CONNECTIONS = 100  # per worker (the listener's subscription holds one of them)
HEALTH_CHECK_SECONDS = 5  # an idle connection is PINGed before use after this long
MAX_UNPUBLISHED = 10_000  # events waiting for Redis; beyond that Redis is too slow: trip
PUBLISH_BATCH = 500  # events per Redis pipeline
STOP_FLUSH_SECONDS = 1.0  # on stop, events still waiting get this long to go out
# Resyncs look back this much further than the moment events may have been missed: message
# times come from the clock of the worker that stored them.
CLOCK_MARGIN_SECONDS = 30.0


def resync_event(since: float) -> Event:
    """Tell a socket to replay from the database what was stored since ``since`` (epoch s)."""
    return {"type": RESYNC_TYPE, "since": since}


class Subscription:
    __slots__ = ("broker", "channel", "deliver")

    def __init__(self, broker: Broker, channel: str, deliver: Deliver) -> None:
        self.broker = broker
        self.channel = channel
        self.deliver = deliver

    async def close(self) -> None:
        await self.broker._unsubscribe(self)

    async def ready(self) -> None:
        """Events published to the channel anywhere reach this subscription from now on."""
        await self.broker.listening(self.channel)


class Broker(ABC):
    def __init__(self) -> None:
        self._subscriptions: dict[str, set[Subscription]] = defaultdict(set)

    async def start(self) -> None:  # noqa: B027 - optional hook
        pass

    async def stop(self) -> None:  # noqa: B027 - optional hook
        pass

    async def publish(self, channel: str, event: Event) -> None:
        """Deliver ``event`` to the subscribers of ``channel``: at once on this worker; the
        other workers get it through the broker. Never raises, never waits for Redis."""
        self.publish_now(channel, event)

    def publish_now(self, channel: str, event: Event) -> None:
        """:meth:`publish`, for callers that cannot await (the message writer's callbacks)."""
        self._dispatch(channel, event)

    async def subscribe(self, channel: str, deliver: Deliver) -> Subscription:
        """Subscribe at once on this worker; the broker's own subscription (Redis) follows in
        the background: :meth:`Subscription.ready` waits for it."""
        subscription = Subscription(self, channel, deliver)
        first = not self._subscriptions[channel]
        self._subscriptions[channel].add(subscription)
        if first:
            await self._listen(channel)
        return subscription

    async def listening(self, channel: str) -> None:  # noqa: B027 - optional hook
        """Return once events published to ``channel`` by any worker reach this one."""

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


class InProcessBroker(Broker):
    """Everything in this process: correct for one worker, the embedded default."""

    def __init__(self) -> None:
        super().__init__()
        self._presence: dict[str, dict[str, float]] = defaultdict(dict)
        self._limits = ClientLimits()

    async def set_present(self, department: str, member: str) -> None:
        self._presence[department][member] = time.monotonic() + PRESENCE_TTL_SECONDS

    async def set_absent(self, department: str, member: str) -> None:
        self._presence[department].pop(member, None)

    async def agents_online(self, department: str) -> int:
        now = time.monotonic()
        return sum(1 for expiry in self._presence[department].values() if expiry > now)

    async def take_socket_slot(self, client: str, slot: str, limit: int) -> bool:
        return self._limits.take_socket_slot(client, slot, limit)

    async def renew_socket_slot(self, client: str, slot: str) -> None:
        pass  # in-process slots end with the socket (and with the process)

    async def release_socket_slot(self, client: str, slot: str) -> None:
        self._limits.release_socket_slot(client, slot)

    async def take_new_conversation(self, client: str, per_minute: int) -> bool:
        return self._limits.take_new_conversation(client, per_minute)


class RedisBroker(Broker):
    """Redis pub/sub for events between workers, a sorted set per department for presence.

    One pub/sub connection per process, read by one task that reconnects by itself (with
    backoff). The circuit is closed (Redis calls are made) only while that connection is
    subscribed; a failed or slow call, or the connection's loss, opens it. When the listener
    is subscribed again every socket of this worker resyncs from the database, the first
    connection included (events may have been missed before it, too), and if this worker
    could not publish some events it tells the other workers to resync as well.
    """

    PREFIX = "slyker:chat:"
    RESYNC_CHANNEL = "_resync"  # a worker back on Redis asks the others to resync

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.origin = uuid.uuid4().hex  # this worker's own events come back from Redis: skipped
        self._redis: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub: Any = None
        self._available = False  # the circuit: closed only while the listener is subscribed
        self._connected = asyncio.Event()  # the same, to wait for
        self._broken = asyncio.Event()  # a call failed: the listener must reconnect
        self._unreceived_since: float | None = time.time()  # events from others may be missed
        self._unpublished_since: float | None = None  # this worker's events may not have gone out
        self._unpublished: deque[tuple[str, str, float]] = deque()  # (channel, payload, when)
        self._unpublished_ready = asyncio.Event()
        self._local_presence: dict[str, set[str]] = defaultdict(set)
        self._local_limits = ClientLimits()  # decides while Redis cannot be asked
        self._limits_fallback_logged = False  # once per outage
        self._reported_down = False
        self._remote_channels: set[str] = set()  # subscribed on the listener's connection
        self._changed_channels: set[str] = set()  # to (un)subscribe in the background
        self._channels_changed = asyncio.Event()
        self._listening: dict[str, asyncio.Future[None]] = {}

    @property
    def available(self) -> bool:
        return self._available

    def _redis_client(self) -> Redis:
        if self._redis is None:
            # No retries: a call that fails opens the circuit instead of waiting. A blocking
            # pool: when every connection is busy (sockets opened or closed together each
            # take or release a slot) a call waits for one, within the command timeout,
            # instead of failing at once with "Too many connections" and opening the circuit.
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=REDIS_CONNECTIONS,
                timeout=COMMAND_TIMEOUT_SECONDS,
                socket_connect_timeout=COMMAND_TIMEOUT_SECONDS,
                socket_timeout=COMMAND_TIMEOUT_SECONDS * 5,
                health_check_interval=HEALTH_CHECK_SECONDS,
            )
            self._redis = Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        return self._redis

    def _key(self, channel: str) -> str:
        return self.PREFIX + channel

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="chat-redis-listener"),
            asyncio.create_task(self._publish_forever(), name="chat-redis-publisher"),
            asyncio.create_task(self._subscribe_forever(), name="chat-redis-subscriber"),
        ]

    async def stop(self) -> None:
        if self._available and self._unpublished:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_FLUSH_SECONDS):
                    while self._unpublished and self._available:  # noqa: ASYNC110 - bounded, once
                        await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._redis is not None:
            await self._redis.aclose()

    # --- the circuit ---------------------------------------------------------------------------

    def _trip(self, what: str, error: BaseException | str) -> None:
        """Redis failed: skip it until the listener is subscribed again."""
        now = time.time()
        if self._available:
            log.warning(
                "Chat broker: Redis unavailable (%s: %s); this worker delivers to its own sockets "
                "only until it is back, then every socket resyncs",
                what,
                str(error) or type(error).__name__,
            )
        self._available = False
        self._connected.clear()
        if self._unreceived_since is None:
            self._unreceived_since = now
        self._broken.set()
        self._channels_settled()  # nobody waits for a subscription while Redis is down

    def _not_published(self, since: float) -> None:
        if self._unpublished_since is None or since < self._unpublished_since:
            self._unpublished_since = since

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]], fallback: T) -> T:
        """``operation()`` if the circuit is closed, bounded; else, or if it fails, ``fallback``."""
        if not self._available:
            return fallback
        try:
            return await asyncio.wait_for(operation(), COMMAND_TIMEOUT_SECONDS)
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as error:
            self._trip(what, error)
        except RedisError as error:  # an answer, not an outage: the circuit stays closed
            log.warning("Chat broker: Redis %s failed: %s", what, error)
        return fallback

    # --- events ------------------------------------------------------------------------------

    def publish_now(self, channel: str, event: Event) -> None:
        self._dispatch(channel, event)
        now = time.time()
        if not self._available:
            self._not_published(now)  # the others resync when this worker is back on Redis
            return
        if len(self._unpublished) >= MAX_UNPUBLISHED:
            self._trip("publish", f"{len(self._unpublished)} events waiting")
            self._not_published(now)
            return
        payload = json.dumps({"origin": self.origin, "event": event})
        self._unpublished.append((channel, payload, now))
        self._unpublished_ready.set()

    async def _publish_forever(self) -> None:
        """Send waiting events in order; while the circuit is open they are dropped (stored
        already: the other workers resync when this one is back)."""
        while True:
            await self._unpublished_ready.wait()
            self._unpublished_ready.clear()
            while self._unpublished:
                when = self._unpublished[0][2]
                if not self._available:
                    self._not_published(when)
                    self._unpublished.clear()
                    break
                # Whatever is waiting goes in one pipeline: one round trip, not one per event.
                batch = list(itertools.islice(self._unpublished, PUBLISH_BATCH))
                try:
                    async with self._redis_client().pipeline(transaction=False) as pipe:
                        for channel, payload, _ in batch:
                            pipe.publish(self._key(channel), payload)
                        await asyncio.wait_for(pipe.execute(), COMMAND_TIMEOUT_SECONDS)
                except asyncio.CancelledError:
                    raise
                except (RedisError, TimeoutError, OSError) as error:
                    self._trip("publish", error)
                    self._not_published(when)
                    self._unpublished.clear()
                    break
                for item in batch:  # a control event may have been put first meanwhile
                    if self._unpublished and self._unpublished[0] is item:
                        self._unpublished.popleft()
                    else:
                        with contextlib.suppress(ValueError):
                            self._unpublished.remove(item)

    # Channels are (un)subscribed on Redis in the background, many per command: a handshake
    # never waits for a SUBSCRIBE. Who needs the subscription in place (before a visitor's
    # first message is stored, or a replay is read) waits with ``listening``.

    async def _listen(self, channel: str) -> None:
        self._changed_channels.add(channel)
        self._channels_changed.set()

    async def _unlisten(self, channel: str) -> None:
        self._changed_channels.add(channel)
        self._channels_changed.set()

    async def listening(self, channel: str) -> None:
        if channel in self._remote_channels or not self._available:
            return  # subscribed; or Redis is down, and every socket resyncs once it is back
        waiter = self._listening.get(channel)
        if waiter is None or waiter.done():
            waiter = self._listening[channel] = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), COMMAND_TIMEOUT_SECONDS)

    def _channels_settled(self, channels: list[str] | None = None) -> None:
        """Wake whoever waits for these channels (all: the circuit opened, or reconnected)."""
        for channel in list(self._listening) if channels is None else channels:
            waiter = self._listening.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _subscribe_forever(self) -> None:
        """Bring Redis's subscriptions in line with this worker's channels, in batches."""
        while True:
            await self._channels_changed.wait()
            self._channels_changed.clear()
            changed, self._changed_channels = self._changed_channels, set()
            pubsub = self._pubsub
            if pubsub is None or not self._available:
                self._channels_settled(list(changed))  # the reconnect subscribes them all
                continue
            wanted = [c for c in changed if c in self._subscriptions]
            wanted = [c for c in wanted if c not in self._remote_channels]
            unwanted = [c for c in changed if c not in self._subscriptions]
            unwanted = [c for c in unwanted if c in self._remote_channels]
            if wanted:
                keys = [self._key(channel) for channel in wanted]
                await self._call("subscribe", lambda k=keys, p=pubsub: p.subscribe(*k), None)
                self._remote_channels.update(wanted)
            if unwanted:
                keys = [self._key(channel) for channel in unwanted]
                await self._call("unsubscribe", lambda k=keys, p=pubsub: p.unsubscribe(*k), None)
                self._remote_channels.difference_update(unwanted)
            self._channels_settled(list(changed))

    async def _listen_forever(self) -> None:
        delay = 0.2
        while True:
            pubsub = self._redis_client().pubsub(ignore_subscribe_messages=True)
            try:
                await asyncio.wait_for(
                    pubsub.subscribe(self._key(self.RESYNC_CHANNEL)), COMMAND_TIMEOUT_SECONDS
                )
                # Every channel wanted now; one added meanwhile is subscribed by
                # _subscribe_forever once this connection is published (twice is harmless).
                wanted = list(self._subscriptions)
                if wanted:
                    keys = [self._key(channel) for channel in wanted]
                    await asyncio.wait_for(pubsub.subscribe(*keys), COMMAND_TIMEOUT_SECONDS)
                self._remote_channels = set(wanted)
                self._pubsub = pubsub
                self._broken.clear()
                self._reported_down = False
                await self._on_connected()
                delay = 0.2
                while not self._broken.is_set():
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=LISTEN_POLL_SECONDS
                    )
                    if message is not None and message.get("type") == "message":
                        self._receive(message["channel"].decode(), message["data"])
            except asyncio.CancelledError:
                self._available = False
                self._connected.clear()
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise
            except (RedisError, OSError, TimeoutError) as error:
                if not self._reported_down:
                    log.warning("Chat broker cannot reach Redis (%s); reconnecting", error)
                    self._reported_down = True
            self._pubsub = None
            self._trip("listen", "connection lost")
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RECONNECT_DELAY_SECONDS)

    async def _on_connected(self) -> None:
        """Subscribed: close the circuit, then resync whatever may have been missed."""
        with contextlib.suppress(Exception):  # pooled connections from before an outage
            await self._redis_client().connection_pool.disconnect(inuse_connections=False)
        self._available = True
        self._limits_fallback_logged = False
        self._connected.set()
        # Channels added while the connection was being set up.
        self._changed_channels.update(
            c for c in self._subscriptions if c not in self._remote_channels
        )
        self._channels_changed.set()
        self._channels_settled([c for c in list(self._listening) if c in self._remote_channels])
        unpublished, self._unpublished_since = self._unpublished_since, None
        if unpublished is not None:
            log.warning("Chat broker back on Redis; other workers resync what they missed")
            control = {"origin": self.origin, "resync_since": unpublished}
            self._unpublished.appendleft((self.RESYNC_CHANNEL, json.dumps(control), unpublished))
            self._unpublished_ready.set()
        unreceived, self._unreceived_since = self._unreceived_since, None
        if unreceived is not None:
            if self._subscriptions:
                log.warning("Chat broker connected to Redis; this worker's sockets resync")
            self._resync_all(unreceived)
        for department, members in self._local_presence.items():
            for member in list(members):  # Redis may have come back empty
                await self._call(
                    "presence", lambda d=department, m=member: self._mark_present(d, m), None
                )

    def _resync_all(self, since: float) -> None:
        event = resync_event(since - CLOCK_MARGIN_SECONDS)
        for channel in list(self._subscriptions):
            self._dispatch(channel, event)

    def _receive(self, key: str, data: bytes) -> None:
        channel = key[len(self.PREFIX) :]
        try:
            envelope = json.loads(data)
            origin = envelope["origin"]
        except (ValueError, KeyError, TypeError):
            log.warning("Undecodable chat event on %s", channel)
            return
        if origin == self.origin:
            return  # delivered on this worker already
        if channel == self.RESYNC_CHANNEL:
            since = envelope.get("resync_since")
            if isinstance(since, int | float):
                self._resync_all(float(since))
            return
        event = envelope.get("event")
        if isinstance(event, dict):
            self._dispatch(channel, event)

    def _presence_key(self, department: str) -> str:
        return f"{self.PREFIX}presence:{department}"

    async def _mark_present(self, department: str, member: str) -> None:
        await self._redis_client().zadd(
            self._presence_key(department), {member: time.time() + PRESENCE_TTL_SECONDS}
        )

    async def set_present(self, department: str, member: str) -> None:
        self._local_presence[department].add(member)
        await self._call("presence", lambda: self._mark_present(department, member), None)

    async def set_absent(self, department: str, member: str) -> None:
        self._local_presence[department].discard(member)
        key = self._presence_key(department)
        await self._call("presence", lambda: self._redis_client().zrem(key, member), None)

    async def agents_online(self, department: str) -> int:
        key = self._presence_key(department)
        count = await self._call(
            "presence", lambda: self._redis_client().zcount(key, time.time(), "+inf"), None
        )
        # Without Redis only this worker's agents are known; with none, the visitor gets the
        # automatic reply rather than silence.
        return len(self._local_presence[department]) if count is None else int(count)

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

    def _limits_without_redis(self) -> ClientLimits:
        if not self._limits_fallback_logged:
            self._limits_fallback_logged = True
            log.warning(
                "Chat limits: Redis cannot be asked; sockets and new conversations per client "
                "are counted by this worker alone until it is back"
            )
        return self._local_limits

    async def take_socket_slot(self, client: str, slot: str, limit: int) -> bool:
        now = time.time()
        taken: int | None = await self._call(
            "socket limit",
            lambda: self._redis_client().eval(
                self._TAKE_SLOT,
                1,
                self._slots_key(client),
                now,
                limit,
                now + SOCKET_SLOT_TTL_SECONDS,
                slot,
                SOCKET_SLOT_TTL_SECONDS,
            ),
            None,
        )
        if taken is None:  # this worker's count decides (not everyone let through)
            return self._limits_without_redis().take_socket_slot(client, slot, limit)
        if taken:
            self._local_limits.take_socket_slot(client, slot, limit, checked=False)
        return bool(taken)

    async def renew_socket_slot(self, client: str, slot: str) -> None:
        key = self._slots_key(client)

        async def renew() -> None:
            async with self._redis_client().pipeline(transaction=True) as pipe:
                pipe.zadd(key, {slot: time.time() + SOCKET_SLOT_TTL_SECONDS})
                pipe.expire(key, SOCKET_SLOT_TTL_SECONDS)
                await pipe.execute()

        await self._call("socket limit", renew, None)

    async def release_socket_slot(self, client: str, slot: str) -> None:
        # If it fails, the slot expires by itself.
        self._local_limits.release_socket_slot(client, slot)
        key = self._slots_key(client)
        await self._call("socket limit", lambda: self._redis_client().zrem(key, slot), None)

    async def take_new_conversation(self, client: str, per_minute: int) -> bool:
        key = f"{self.PREFIX}new-conversations:{client}:{conversation_window()}"

        async def count() -> int:
            async with self._redis_client().pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, 2 * NEW_CONVERSATION_WINDOW_SECONDS)
                counted, _ = await pipe.execute()
            return int(counted)

        counted: int | None = await self._call("conversation limit", count, None)
        if counted is None:  # this worker's count decides (not everyone let through)
            return self._limits_without_redis().take_new_conversation(client, per_minute)
        allowed = counted <= per_minute
        if allowed:
            self._local_limits.take_new_conversation(client, per_minute, checked=False)
        return allowed
