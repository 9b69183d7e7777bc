"""Liveness and readiness probes (used by Docker, nginx and the load balancer)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from quart import Blueprint
from quart_schema import validate_response

from slyker.database import database_is_ready
from slyker.lifecycle import is_draining
from slyker.redis_client import redis_is_ready

blueprint = Blueprint("health", __name__)
log = logging.getLogger(__name__)


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
    """Liveness: the process answers HTTP. Reveals no version or configuration."""
    return Health(status="healthy", service="slyker-api")


@blueprint.get("/ready/")
@validate_response(Readiness, 200)
@validate_response(Readiness, 503)
async def ready() -> tuple[Readiness, int]:
    """Readiness: the database answers and, when REDIS_URL is set, Redis does (``null`` when
    Redis is not configured). 503 names the failing checks; the cause is only logged. While
    the process is stopping (SIGTERM), 503 with status ``stopping``."""
    checks = ReadinessChecks(
        database=await _check("database", database_is_ready),
        redis=await _check("redis", redis_is_ready),
    )
    if is_draining():
        return Readiness(status="stopping", checks=checks), 503
    ok = checks.database and checks.redis is not False
    return Readiness(status="ready" if ok else "not_ready", checks=checks), 200 if ok else 503


async def _check(name: str, probe: Callable[[], Awaitable[bool | None]]) -> bool | None:
    try:
        return await probe()
    except Exception:
        log.warning("Readiness check %s failed", name, exc_info=True)
        return False
