"""Rate limits: quart-rate-limiter's decorators and GCRA, with an atomic check-and-count.

quart-rate-limiter checks a request against its limits (``store.get``) and counts it later
(``store.get`` + ``store.set``), with awaits in between. Concurrent requests all read the
same state before any of them wrote: 30 logins at once against a limit of 10 a minute were
all let through (and with Redis gone every limited route answered 500). Here:

* :class:`RateLimiter` replaces that check-then-count with one call, :meth:`acquire`, of the
  store: every limit of the request is checked and, only when none refuses, counted, as one
  atomic step (the routes keep ``@rate_limit`` as they are);
* :class:`MemoryStore` does it without an ``await`` (atomic on the worker's event loop);
* :class:`RedisStore` does it in one Lua script (atomic in Redis, shared by every worker);
* :class:`FallbackStore` (what the app uses with ``REDIS_URL``) counts in Redis while it
  answers and per process while it does not: logged once at WARNING when Redis goes away and
  once when it is back, and Redis is tried again every :attr:`FallbackStore.RETRY_INTERVAL`
  seconds. A restarted Redis is reconnected on the next request.

Each store still implements quart-rate-limiter's store interface (``get``/``set``), which
its ``after_request`` hook uses for the ``RateLimit-*`` headers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import ceil
from typing import Any

import redis.exceptions
from quart import Response, current_app, request
from quart_rate_limiter import KeyCallable, RateLimit, RateLimitExceeded, SkipCallable
from quart_rate_limiter import RateLimiter as BaseRateLimiter
from quart_rate_limiter.store import RateLimiterStoreABC
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from slyker.settings import current_settings

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 0.5  # a limit check must never hold a request for long
_PRUNE_EVERY = 1000  # memory store: drop expired keys every this many acquisitions


async def client_address() -> str:
    """The key of per-address limits: the peer address. Not X-Forwarded-For, which any client
    can write: behind a proxy, slyker/proxy.py turns the trusted proxy's header into this
    address."""
    return request.remote_addr or "unknown"


@dataclass(frozen=True)
class Allowance:
    """One limit applied to one request: the store key, the period and the spacing."""

    key: str
    period: float  # seconds
    inverse: float  # seconds per request: period / count

    @classmethod
    def of(cls, key: str, limit: RateLimit) -> Allowance:
        return cls(key, limit.period.total_seconds(), limit.inverse)


def gcra(stored: float | None, now: float, allowance: Allowance) -> tuple[float | None, float]:
    """The generic cell rate algorithm for one limit: (seconds to wait when refused, else
    None; the theoretical arrival time to store when the request is counted)."""
    tat = max(stored if stored is not None else now, now)
    max_interval = allowance.period - allowance.inverse
    if tat - now > max_interval:
        return tat - max_interval - now, tat
    return None, tat + allowance.inverse


class AtomicStore(RateLimiterStoreABC):
    async def acquire(self, allowances: Sequence[Allowance], now: float) -> float | None:
        """Check every allowance and, when none refuses, count the request in each, as one
        atomic step; the seconds until a retry may pass when refused, else None."""
        raise NotImplementedError


class MemoryStore(AtomicStore):
    """Per process. :meth:`acquire` has no ``await``: nothing interleaves with it."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._acquisitions = 0

    async def before_serving(self) -> None:
        pass

    async def after_serving(self) -> None:
        pass

    async def get(self, key: str, default: datetime) -> datetime:
        tat = self._tats.get(key)
        return default if tat is None else datetime.fromtimestamp(tat, UTC)

    async def set(self, key: str, tat: datetime) -> None:
        self._tats[key] = tat.timestamp()

    async def acquire(self, allowances: Sequence[Allowance], now: float) -> float | None:
        return self.acquire_now(allowances, now)

    def acquire_now(self, allowances: Sequence[Allowance], now: float) -> float | None:
        self._acquisitions += 1
        if self._acquisitions % _PRUNE_EVERY == 0:
            self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        new_tats = []
        for allowance in allowances:
            wait, new_tat = gcra(self._tats.get(allowance.key), now, allowance)
            if wait is not None:
                return wait
            new_tats.append((allowance.key, new_tat))
        self._tats.update(new_tats)
        return None


# KEYS: one per limit; ARGV[2i], ARGV[2i+1]: period, inverse (ARGV[1] is unused).
# The same GCRA as gcra(); each key expires once its TAT has passed (nothing left to remember).
# "Now" is Redis's own clock, read inside the script: concurrent requests reach Redis in an
# order of their own, and a caller's earlier timestamp arriving later would be refused early.
_ACQUIRE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local tats = {}
for i, key in ipairs(KEYS) do
    local period = tonumber(ARGV[2 * i])
    local inverse = tonumber(ARGV[2 * i + 1])
    local tat = tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
    local max_interval = period - inverse
    if tat - now > max_interval then
        return tostring(tat - max_interval - now)
    end
    tats[i] = tat + inverse
end
for i, key in ipairs(KEYS) do
    local ttl = math.ceil((tats[i] - now) * 1000)
    redis.call('SET', key, string.format('%.6f', tats[i]), 'PX', math.max(ttl, 1))
end
return false
"""


class RedisStore(AtomicStore):
    """Shared by every worker; :meth:`acquire` is one Lua script (atomic in Redis)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Redis | None = None
        self._script = None

    async def before_serving(self) -> None:
        # One retry on a fresh connection: a restarted Redis leaves every pooled connection
        # dead, and the first command on each would otherwise fail.
        self.client = Redis.from_url(
            self.url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 1),
        )
        self._script = self.client.register_script(_ACQUIRE_SCRIPT)

    async def after_serving(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def get(self, key: str, default: datetime) -> datetime:
        assert self.client is not None
        value = await self.client.get(key)
        return default if value is None else datetime.fromtimestamp(float(value), UTC)

    async def set(self, key: str, tat: datetime) -> None:
        assert self.client is not None
        ttl = max(1, ceil(tat.timestamp() - time.time()))
        await self.client.set(key, f"{tat.timestamp():.6f}", ex=ttl)

    async def acquire(self, allowances: Sequence[Allowance], now: float) -> float | None:
        assert self._script is not None
        args: list[float] = [now]
        for allowance in allowances:
            args += [allowance.period, allowance.inverse]
        wait = await self._script(keys=[a.key for a in allowances], args=args)
        return None if wait is None else float(wait)


# Redis refused, dropped or did not answer; OSError covers a refused socket under redis-py.
REDIS_UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class FallbackStore(AtomicStore):
    """Redis while it answers, else per process (see the module docstring)."""

    RETRY_INTERVAL = 5.0  # seconds between attempts to use Redis again

    def __init__(self, url: str) -> None:
        self.redis = RedisStore(url)
        self.memory = MemoryStore()
        self._down_since: float | None = None
        self._retry_at = 0.0

    async def before_serving(self) -> None:
        await self.redis.before_serving()

    async def after_serving(self) -> None:
        await self.redis.after_serving()

    @property
    def using_redis(self) -> bool:
        return self._down_since is None or time.monotonic() >= self._retry_at

    def _failed(self, error: BaseException) -> None:
        now = time.monotonic()
        self._retry_at = now + self.RETRY_INTERVAL
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "Rate limits: Redis unavailable (%s: %s); counting per process until it is back",
                type(error).__name__,
                error,
            )

    def _succeeded(self) -> None:
        if self._down_since is not None:
            log.warning(
                "Rate limits: Redis is back after %.0f s; counting shared again",
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    async def acquire(self, allowances: Sequence[Allowance], now: float) -> float | None:
        if self.using_redis:
            try:
                wait = await self.redis.acquire(allowances, now)
            except REDIS_UNAVAILABLE as error:
                self._failed(error)
            else:
                self._succeeded()
                return wait
        return self.memory.acquire_now(allowances, now)

    async def get(self, key: str, default: datetime) -> datetime:
        if self.using_redis:
            try:
                value = await self.redis.get(key, default)
            except REDIS_UNAVAILABLE as error:
                self._failed(error)
            else:
                self._succeeded()
                return value
        return await self.memory.get(key, default)

    async def set(self, key: str, tat: datetime) -> None:
        await self.memory.set(key, tat)  # unused by RateLimiter; kept for the interface


# Whether a limit counted the current request: set by RateLimiter._before_request for a
# route with limits (each request runs in a task of its own, with a copy of a context in
# which this was never set: None, "unknown").
_counted: ContextVar[bool | None] = ContextVar("slyker_rate_limit_counted", default=None)


class RateLimiter(BaseRateLimiter):
    """quart-rate-limiter's limiter with one atomic :meth:`AtomicStore.acquire` per request."""

    store: AtomicStore

    def __init__(self, store: AtomicStore) -> None:
        super().__init__(store=store)
        # Whether an endpoint has any limit: fixed once routes are registered (Quart refuses
        # new ones after the first request), so both hooks answer routes without limits
        # (/health/, most reads) from this dict instead of looking up the view, its
        # blueprint and their limits on every request (issue 12).
        self._limited_endpoints: dict[str | None, bool] = {}

    def _has_limits(self) -> bool:
        endpoint = request.endpoint
        limited = self._limited_endpoints.get(endpoint)
        if limited is None:
            view_func = current_app.view_functions.get(endpoint)  # type: ignore[arg-type]
            blueprint = current_app.blueprints.get(request.blueprint)  # type: ignore[arg-type]
            limited = view_func is not None and bool(
                self._get_limits_for_view_function(view_func, blueprint)
            )
            self._limited_endpoints[endpoint] = limited
        return limited

    async def _after_request(self, response: Response) -> Response:
        if not self._has_limits():
            return response
        # Every limit of the route skipped this request (cart current/ with a cart: only
        # new carts are limited): nothing counted it, so no RateLimit-* headers to give, and
        # no key function and store read to work them out (issue 12). Unknown (the before
        # hook did not get that far: an earlier hook refused): as quart-rate-limiter does.
        if _counted.get() is False:
            return response
        return await super()._after_request(response)

    async def _create_key(self, endpoint: str, rate_limit: RateLimit) -> str:
        if isinstance(rate_limit, SettingRateLimit) and rate_limit.shared:
            assert rate_limit.key_function is not None
            key = await rate_limit.key_function()
            return f"{current_app.import_name}-shared-{rate_limit.key}-{key}"
        return await super()._create_key(endpoint, rate_limit)

    async def _before_request(self) -> None:
        if not current_app.config["QUART_RATE_LIMITER_ENABLED"] or not self._has_limits():
            return
        endpoint = request.endpoint
        view_func = current_app.view_functions.get(endpoint)
        if view_func is None:
            return
        blueprint = current_app.blueprints.get(request.blueprint)
        allowances = [
            Allowance.of(await self._create_key(endpoint, limit), limit)
            for limit in self._get_limits_for_view_function(view_func, blueprint)
            if not await self._should_skip(limit)
        ]
        _counted.set(bool(allowances))  # read by _after_request, in this request's task
        if not allowances:
            return
        # Every await (key functions may read the body) is behind us: one atomic step.
        wait = await self.store.acquire(allowances, time.time())
        if wait is not None:
            raise RateLimitExceeded(max(1, ceil(wait)))


def make_store(redis_url: str | None) -> AtomicStore:
    return FallbackStore(redis_url) if redis_url else MemoryStore()


class SettingRateLimit(RateLimit):
    """quart-rate-limiter's limit with its count read from the app's settings (``setting`` is
    the attribute path, ``"billing.cart_writes_per_minute"``) when a request
    is checked (the decorator runs once, at import; apps differ in settings). The store key
    names the setting, so two limits of one route never share a count; and every route
    decorated with one instance shares its count (quart-rate-limiter counts per route):
    ``shared=False`` counts per route."""

    def __init__(
        self,
        setting: str,
        period: timedelta,
        key_function: KeyCallable,
        skip_function: SkipCallable | None = None,
        shared: bool = True,
    ) -> None:
        super().__init__(1, period, key_function, skip_function)
        self.setting = setting
        self.shared = shared

    @property  # type: ignore[override]
    def count(self) -> int:
        value: Any = current_settings()
        for name in self.setting.split("."):  # a section's field: "billing.cart_max_lines"
            value = getattr(value, name)
        return int(value)

    @count.setter
    def count(self, _value: int) -> None:
        pass  # the dataclass __init__ assigns it; the settings own the number

    @property
    def key(self) -> str:
        return f"{self.setting}-{self.period.total_seconds()}"
