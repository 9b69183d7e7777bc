"""Liveness and readiness probes (used by Docker, nginx and the load balancer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from quart import Blueprint
from quart_schema import validate_response

from slyker.database import database_is_ready
from slyker.errors import describe_exception
from slyker.lifecycle import is_draining
from slyker.redis_client import redis_is_ready

blueprint = Blueprint("health", __name__)
log = logging.getLogger(__name__)
# Each readiness check gets this long, whatever the database's own timeouts: a probe that
# hangs is a failed probe (a paused PostgreSQL once left /ready/ without any answer).
READY_CHECK_TIMEOUT = 2.0


@dataclass
class Health:
    status: str
    service: str


@dataclass
class ReadinessChecks:
    database: bool
    redis: bool | None


@dataclass
class Readiness:
    status: str
    checks: ReadinessChecks


@blueprint.get("/health/")
@validate_response(Health)
async def health() -> Health:
    """Liveness: the process answers HTTP; it does not look at the database or Redis. It
    stays 200 during their outages (then /ready/ is 503), because restarting the API would
    not bring them back: a liveness probe that failed with them would restart every worker
    in a loop. Reveals no version or configuration."""
    return Health(status="healthy", service="slyker-api")


@blueprint.get("/ready/")
@validate_response(Readiness, 200)
@validate_response(Readiness, 503)
async def ready() -> tuple[Readiness, int]:
    """Readiness: the database answers and, when REDIS_URL is set, Redis does (``null`` when
    Redis is not configured), each within 2 seconds (the checks run at once, so the answer
    comes within about 2 s). 503 names the failing checks; the cause is only logged. While
    the process is stopping (SIGTERM), 503 with status ``stopping``."""
    database, redis = await asyncio.gather(
        _check("database", database_is_ready), _check("redis", redis_is_ready)
    )
    checks = ReadinessChecks(database=bool(database), redis=redis)
    if is_draining():
        return Readiness(status="stopping", checks=checks), 503
    ok = checks.database and checks.redis is not False
    return Readiness(status="ready" if ok else "not_ready", checks=checks), 200 if ok else 503


async def _check(name: str, probe: Callable[[], Awaitable[bool | None]]) -> bool | None:
    task = asyncio.ensure_future(probe())
    done, _pending = await asyncio.wait({task}, timeout=READY_CHECK_TIMEOUT)
    if not done:
        task.cancel()
        # A cancelled query may still end in an error of its own (asyncpg turns a
        # cancellation it cannot deliver into TimeoutError): take it when it comes, or
        # asyncio logs it with a traceback as "never retrieved".
        task.add_done_callback(_take_late_outcome)
        log.warning("Readiness check %s: no answer within %g s", name, READY_CHECK_TIMEOUT)
        return False
    try:
        return task.result()
    except Exception as error:
        log.warning("Readiness check %s failed: %s", name, describe_exception(error))
        return False


def _take_late_outcome(task: asyncio.Future[bool | None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("Readiness check ended after its timeout: %r", task.exception())
