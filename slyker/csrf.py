"""Refuse state-changing requests sent by pages on origins we do not know.

A browser attaches the visitor's cookies (the anonymous cart) to a cross-site POST even
when CORS then hides the response, so the write must be refused before it happens.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from quart import request

from slyker.errors import APIError
from slyker.origins import OriginPolicy, parse_origin
from slyker.settings import current_settings

log = logging.getLogger(__name__)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _referer_origin(referer: str) -> str:
    parts = urlsplit(referer)
    if parts.username is not None or parts.password is not None:
        return referer  # parse_origin will refuse it
    return f"{parts.scheme}://{parts.netloc}"


async def check_request_origin() -> None:
    if request.method not in UNSAFE_METHODS:
        return
    origins = request.headers.getlist("Origin")
    referers = [referer for referer in request.headers.getlist("Referer") if referer]
    if not origins and not referers:
        return  # not sent by a browser page: nothing to protect against
    settings = current_settings()
    # Exactly one value: with two, a check of the first could pass what the browser sent second.
    single = len(origins) == 1 or (not origins and len(referers) == 1)
    origin = origins[0] if origins else _referer_origin(referers[0])
    parsed = parse_origin(origin)
    if single and (
        settings.origin_policy.is_allowed(origin)
        or (parsed is not None and parsed.serialise() in settings.csrf_trusted_origins)
        or OriginPolicy.is_same_host(origin, request.headers.get("Host"), settings.allowed_hosts)
    ):
        return
    log.warning(
        "CSRF check refused %s %s from origin %s",
        request.method,
        request.path,
        repr(", ".join(origins or referers))[:300],
    )
    await request.discard_body()
    raise APIError(403, "Cross-site request refused: origin not allowed.", code="csrf_failed")
