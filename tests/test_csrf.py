"""Unsafe requests from foreign pages are refused before any view runs."""

from __future__ import annotations

from typing import Any

import pytest
from quart import Quart
from werkzeug.datastructures import Headers

from tests.contract_app import ALLOWED_ORIGIN, create_contract_app

BODY = b'{"name": "vps", "quantity": 1}'
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def app(tmp_path: Any) -> Any:
    application = create_contract_app(
        {"DATA_DIR": str(tmp_path), "CSRF_TRUSTED_ORIGINS": "https://admin.slykertech.co.zw"}
    )
    async with application.test_app():
        yield application


def writes(app: Quart) -> int:
    return app.extensions["probe.recorder"].writes  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": f"{ALLOWED_ORIGIN}.evil.example"},
        {"Referer": "https://evil.example/shop/cart"},
        {"Referer": f"https://user@{ALLOWED_ORIGIN[8:]}/"},
        {"Referer": "not a url"},
    ],
    ids=["origin", "null", "suffix", "referer", "referer-userinfo", "referer-garbage"],
)
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_foreign_unsafe_request_changes_nothing(
    app: Quart, headers: dict[str, str], method: str
) -> None:
    response = await app.test_client().open(
        "/_probe/items/", method=method, headers={**JSON, **headers}, data=BODY
    )
    assert response.status_code == 403
    body = await response.get_json()
    assert body["code"] == "csrf_failed"
    assert writes(app) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": ALLOWED_ORIGIN},
        {"Origin": "https://pr-9.preview.slykertech.co.zw"},
        {"Origin": "https://admin.slykertech.co.zw"},  # CSRF_TRUSTED_ORIGINS
        {"Origin": "https://api.slykertech.co.zw", "Host": "api.slykertech.co.zw"},  # own origin
        {"Referer": f"{ALLOWED_ORIGIN}/cart/"},
        {},  # curl, a server-side client: no browser page to protect from
    ],
    ids=["allowed", "regex", "trusted", "own-origin", "referer", "no-origin"],
)
async def test_known_or_non_browser_unsafe_request_goes_through(
    app: Quart, headers: dict[str, str]
) -> None:
    response = await app.test_client().post(
        "/_probe/items/", headers={**JSON, **headers}, data=BODY
    )
    assert response.status_code == 201
    assert writes(app) == 1


async def test_own_origin_needs_the_host_in_allowed_hosts(app: Quart) -> None:
    """A Host outside ALLOWED_HOSTS is refused before anything else (slyker/hosts.py)."""
    response = await app.test_client().post(
        "/_probe/items/",
        headers={**JSON, "Origin": "https://attacker.example", "Host": "attacker.example"},
        data=BODY,
    )
    assert response.status_code == 400
    assert (await response.get_json())["code"] == "host_not_allowed"
    assert writes(app) == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_json_endpoints_refuse_simple_request_bodies(
    app: Quart, content_type: str | None
) -> None:
    headers = {"Origin": ALLOWED_ORIGIN}
    if content_type:
        headers["Content-Type"] = content_type
    response = await app.test_client().post("/_probe/raw-json/", headers=headers, data=BODY)
    assert response.status_code == 415
    assert (await response.get_json())["error"] == "Content-Type must be application/json."
    assert writes(app) == 0


@pytest.mark.parametrize(
    "pairs",
    [
        [("Origin", ALLOWED_ORIGIN), ("Origin", "https://evil.example")],
        [("Origin", "https://evil.example"), ("Origin", ALLOWED_ORIGIN)],
        [("Origin", ALLOWED_ORIGIN), ("Origin", ALLOWED_ORIGIN)],
        [("Referer", f"{ALLOWED_ORIGIN}/cart/"), ("Referer", "https://evil.example/")],
    ],
    ids=["allowed-first", "allowed-second", "same-twice", "two-referers"],
)
async def test_two_origin_headers_are_refused(app: Quart, pairs: list[tuple[str, str]]) -> None:
    """Which of two values would a check read? Whichever it is, the other may be the
    browser's: exactly one is required."""
    response = await app.test_client().post(
        "/_probe/items/", headers=Headers([*JSON.items(), *pairs]), data=BODY
    )
    assert response.status_code == 403
    assert (await response.get_json())["code"] == "csrf_failed"
    assert writes(app) == 0
