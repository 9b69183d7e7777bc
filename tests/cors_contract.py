"""The CORS contract as one assertion, shared by the in-process matrix and the live tests.

It reads the raw header list (name, value) pairs so that a duplicated header fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tests.contract_app import ALLOWED_ORIGIN, REGEX_ORIGIN, SECRET_MARKER

ORIGIN_CLASSES: dict[str, str | None] = {
    "allowed-exact": ALLOWED_ORIGIN,
    "allowed-regex": REGEX_ORIGIN,
    "disallowed": "https://evil.example",
    "missing": None,
    "null": "null",
    "malformed": f"{ALLOWED_ORIGIN}, https://evil.example",
}
ALLOWED_CLASSES = frozenset({"allowed-exact", "allowed-regex"})
# Unsafe requests from these are refused by the CSRF check before any view runs.
FOREIGN_CLASSES = frozenset({"disallowed", "null", "malformed"})
ACCESS_CONTROL_PREFIX = "access-control-"


def values(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name.lower()]


def vary_items(headers: Iterable[tuple[str, str]]) -> list[str]:
    return [
        item.strip().lower()
        for value in values(headers, "Vary")
        for item in value.split(",")
        if item.strip()
    ]


def assert_cors_contract(
    origin_class: str,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    method: str = "GET",
    preflight: bool = False,
) -> None:
    """The promise, for one response: exactly one correct set of CORS headers for an allowed
    origin, none for any other; Vary: Origin once; one X-Request-ID; JSON error bodies."""
    context = f"{origin_class} {method} -> {status} {headers} {body[:300]!r}"
    origin = ORIGIN_CLASSES[origin_class]
    cors_names = {
        key.lower() for key, _ in headers if key.lower().startswith(ACCESS_CONTROL_PREFIX)
    }
    if origin_class in ALLOWED_CLASSES and not (preflight and status == 403):
        assert values(headers, "Access-Control-Allow-Origin") == [origin], context
        assert values(headers, "Access-Control-Allow-Credentials") == ["true"], context
        if preflight:
            assert status == 204, context
            assert len(values(headers, "Access-Control-Allow-Methods")) == 1, context
            assert len(values(headers, "Access-Control-Allow-Headers")) == 1, context
            assert len(values(headers, "Access-Control-Max-Age")) == 1, context
        else:
            expose = values(headers, "Access-Control-Expose-Headers")
            assert len(expose) == 1, context
            assert "x-request-id" in [item.strip().lower() for item in expose[0].split(",")]
            assert cors_names == {
                "access-control-allow-origin",
                "access-control-allow-credentials",
                "access-control-expose-headers",
            }, context
    else:
        assert cors_names == set(), context
    assert vary_items(headers).count("origin") == 1, context
    if preflight:
        for item in ("access-control-request-method", "access-control-request-headers"):
            assert vary_items(headers).count(item) == 1, context
    assert len(values(headers, "X-Request-ID")) == 1, context
    if status >= 400 and method != "HEAD":
        assert values(headers, "Content-Type")[0].startswith("application/json"), context
        payload = json.loads(body)
        assert isinstance(payload["error"], str) and payload["error"], context
        assert payload["detail"] == payload["error"], context
        assert payload["status"] == status, context
        assert isinstance(payload["code"], str) and payload["code"], context
    assert SECRET_MARKER.encode() not in body, context
