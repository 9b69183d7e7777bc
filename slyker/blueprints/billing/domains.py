"""Domain search: is a name free to register? (The storefront's "/api/domain-search" route
calls this from its server, so usually without an Origin header.)"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field
from quart import Blueprint, current_app
from quart.blueprints import BlueprintSetupState
from quart_rate_limiter import rate_limit
from quart_schema import validate_request, validate_response

from slyker.outbound import http_client
from slyker.ratelimit import SettingRateLimit, client_address
from slyker.redis_client import current_redis
from slyker.services.whois import (
    HTTP_CLIENT_KEY,
    AnswerCache,
    DomainChecker,
    MemoryCache,
    RedisCache,
)
from slyker.settings import current_settings
from slyker.validation import checks_own_text

blueprint = Blueprint("domains", __name__, url_prefix="/api/services")
MEMORY_CACHE_KEY = "slyker.whois_cache"


@blueprint.record_once
def _create_memory_cache(state: BlueprintSetupState) -> None:
    state.app.extensions[MEMORY_CACHE_KEY] = MemoryCache()


class DomainCheckRequest(BaseModel):
    domains: list[str]
    parallel: bool = True
    # Capped by WHOIS_MAX_PARALLEL; the storefront sends 5.
    max_workers: int | None = Field(default=None, ge=1)


class DomainAvailability(BaseModel):
    domain: str
    available: bool | None
    tld: str
    whoisServer: str  # the storefront's field name
    message: str | None
    error: str | None
    cached: bool


class DomainCheckResponse(BaseModel):
    results: list[DomainAvailability]


def answer_cache() -> AnswerCache:
    redis = current_redis()
    return RedisCache(redis) if redis is not None else current_app.extensions[MEMORY_CACHE_KEY]


@blueprint.post("/whois/check/")
@checks_own_text  # every name is checked, and all bad ones named, by the service
@rate_limit(
    limits=[
        SettingRateLimit(
            "billing.whois_rate_limit",
            timedelta(minutes=1),
            key_function=client_address,
            shared=False,
        )
    ]
)
@validate_request(DomainCheckRequest)
@validate_response(DomainCheckResponse)
async def check_domains(data: DomainCheckRequest) -> DomainCheckResponse:
    """Check whether domain names are free to register: RDAP where the registry has it,
    WHOIS otherwise. ``{domains: [...], parallel?, max_workers?}`` → ``{results: [{domain,
    available, tld, whoisServer, message, error, cached}]}``, one result per name in order.

    ``available`` is ``null`` with an ``error`` when that name's registry could not be asked
    (timeout, refused, an unreadable answer, no lookup for its extension); the other names
    are still answered. A name that is not a domain name, no names, or more than
    WHOIS_MAX_DOMAINS is a 400 for the whole request. WHOIS_RATE_LIMIT requests a minute
    per client address (429 with Retry-After); answers are cached WHOIS_CACHE_SECONDS."""
    checker = DomainChecker.from_settings(
        current_settings(), answer_cache(), http_client(HTTP_CLIENT_KEY)
    )
    results = await checker.check(
        data.domains, max_workers=data.max_workers, parallel=data.parallel
    )
    return DomainCheckResponse(
        results=[DomainAvailability(**result.as_json()) for result in results]
    )
