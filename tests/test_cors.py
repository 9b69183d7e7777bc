"""slyker.cors in detail: preflight answers, the ASGI safety net on misbehaving inner apps,
logging, and the request id. The contract matrix is in test_cors_contract.py."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from quart import Quart, jsonify

from slyker.cors import (
    _UNDECIDED,
    CORSConfig,
    CORSMiddleware,
    _decided_origin,
    _PolicyOrigin,
    request_origin,
)
from slyker.request_id import RequestIDMiddleware, new_request_id
from slyker.settings import load_settings
from tests.conftest import TEST_SECRET_KEY
from tests.contract_app import ALLOWED_ORIGIN, create_contract_app
from tests.cors_contract import assert_cors_contract, values, vary_items

PREFLIGHT = {
    "Origin": ALLOWED_ORIGIN,
    "Access-Control-Request-Method": "DELETE",
    "Access-Control-Request-Headers": "Authorization, Content-Type, X-CSRFToken, "
    "X-Requested-With, X-Request-ID, X-Cart-Token",
}


@pytest.fixture
async def app(tmp_path: Any) -> Any:
    application = create_contract_app({"DATA_DIR": str(tmp_path)})
    async with application.test_app():
        yield application


async def test_preflight_answer_lists_everything_the_front_end_sends(app: Quart) -> None:
    response = await app.test_client().options(
        "/api/billing/carts/7/remove_item/", headers=PREFLIGHT
    )
    assert response.status_code == 204
    headers = list(response.headers.items())
    assert values(headers, "Access-Control-Allow-Origin") == [ALLOWED_ORIGIN]
    assert values(headers, "Access-Control-Allow-Credentials") == ["true"]
    methods = {m.strip() for m in values(headers, "Access-Control-Allow-Methods")[0].split(",")}
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= methods
    allowed = {
        h.strip().lower() for h in values(headers, "Access-Control-Allow-Headers")[0].split(",")
    }
    assert {
        "authorization",
        "content-type",
        "x-csrftoken",
        "x-requested-with",
        "x-request-id",
        "x-cart-token",
    } <= allowed
    assert values(headers, "Access-Control-Max-Age") == ["86400"]
    assert vary_items(headers) == [
        "origin",
        "access-control-request-method",
        "access-control-request-headers",
    ]
    assert await response.get_data() == b""


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"Origin": "https://evil.example"}, "origin"),
        ({"Origin": "null"}, "origin"),
        ({"Access-Control-Request-Method": "TRACE"}, "method"),
        ({"Access-Control-Request-Headers": "authorization, x-evil"}, "headers"),
    ],
)
async def test_refused_preflight_is_403_json_without_cors_and_logged(
    app: Quart, caplog: pytest.LogCaptureFixture, change: dict[str, str], reason: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="slyker.cors"):
        response = await app.test_client().options("/health/", headers={**PREFLIGHT, **change})
    assert response.status_code == 403
    headers = list(response.headers.items())
    assert not [k for k, _ in headers if k.lower().startswith("access-control-")]
    body = await response.get_json()
    assert body["error"] == f"CORS preflight rejected: {reason} not allowed."
    assert body["code"] == "permission_denied"
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith(f"CORS preflight rejected: {reason}") for m in messages), messages


async def test_options_without_request_method_is_an_ordinary_request(app: Quart) -> None:
    response = await app.test_client().options("/health/", headers={"Origin": ALLOWED_ORIGIN})
    assert response.status_code == 200
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert_cors_contract(
        "allowed-exact", 200, list(response.headers.items()), b"", method="OPTIONS"
    )


async def test_preflight_wins_over_redirects_405_and_failing_hooks(app: Quart) -> None:
    client = app.test_client()
    for path in (
        "/health",
        "/_probe/items/",
        "/_probe/crash-in-before-request/",
        "/_probe/crash-in-after-request/",
    ):
        response = await client.options(path, headers=PREFLIGHT)
        assert response.status_code == 204, path
        assert response.headers.getlist("Access-Control-Allow-Origin") == [ALLOWED_ORIGIN]


async def test_vary_is_merged_not_clobbered(app: Quart) -> None:
    @app.get("/_probe/varies/")
    async def varies() -> Any:
        return {"ok": True}, 200, {"Vary": "Accept-Encoding, Cookie"}

    response = await app.test_client().get("/_probe/varies/", headers={"Origin": ALLOWED_ORIGIN})
    assert vary_items(list(response.headers.items())) == ["accept-encoding", "cookie", "origin"]


async def test_fill_in_skips_what_quart_cors_decorated_and_fills_what_it_skipped(
    app: Quart, caplog: pytest.LogCaptureFixture
) -> None:
    """The fill-in hook leaves a response quart-cors decorated alone (nothing filled in); a
    view quart-cors skips still gets every header from the fill-in, so the net has nothing
    to correct."""
    from quart_cors import cors_exempt

    @app.get("/_probe/exempt/")
    @cors_exempt
    async def exempt() -> Any:
        return {"ok": True}

    client = app.test_client()
    with caplog.at_level(logging.DEBUG, logger="slyker.cors"):
        decorated = await client.get("/health/", headers={"Origin": ALLOWED_ORIGIN})
        skipped = await client.get("/_probe/exempt/", headers={"Origin": ALLOWED_ORIGIN})
    for response in (decorated, skipped):
        assert response.headers.getlist("Access-Control-Allow-Origin") == [ALLOWED_ORIGIN]
        assert response.headers.getlist("Access-Control-Allow-Credentials") == ["true"]
        assert "origin" in vary_items(list(response.headers.items()))
    filled = [r.getMessage() for r in caplog.records if "filled in" in r.getMessage()]
    assert filled and all("/_probe/exempt/" in message for message in filled)
    assert not [r for r in caplog.records if "safety net" in r.getMessage()]


async def test_request_id_is_kept_when_sane_and_replaced_otherwise(app: Quart) -> None:
    client = app.test_client()
    kept = await client.get("/health/", headers={"X-Request-ID": "lb-1234.abc:9"})
    assert kept.headers.getlist("X-Request-ID") == ["lb-1234.abc:9"]
    for bad in ("x" * 200, "has space", "new\u2028line", ""):
        replaced = await client.get("/health/", headers={"X-Request-ID": bad})
        [generated] = replaced.headers.getlist("X-Request-ID")
        assert generated != bad and len(generated) == 32
        # The same kind of id as uuid.uuid4().hex (slyker.request_id.new_request_id).
        assert uuid.UUID(hex=generated).version == 4 and uuid.UUID(hex=generated).hex == generated
    generated_ids = {new_request_id() for _ in range(1000)}
    assert len(generated_ids) == 1000
    assert all(uuid.UUID(hex=i).variant == uuid.RFC_4122 for i in generated_ids)


async def test_server_error_is_logged_with_the_request_id_and_not_sent(
    app: Quart, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await app.test_client().get(
            "/_probe/crash/", headers={"Origin": ALLOWED_ORIGIN, "X-Request-ID": "trace-500"}
        )
    assert response.status_code == 500
    body = await response.get_json()
    assert body["error"].startswith("Internal server error")
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.request_id == "trace-500"  # type: ignore[attr-defined]
    assert "RuntimeError" in record.getMessage()


# The safety net against inner apps that misbehave the way real deployments did.


def net(inner: Any) -> Any:
    settings = load_settings(
        environ={},
        overrides={"SECRET_KEY": TEST_SECRET_KEY, "CORS_ALLOWED_ORIGINS": ALLOWED_ORIGIN},
    )
    return RequestIDMiddleware(CORSMiddleware(inner, CORSConfig.from_settings(settings)))


async def call(
    app: Any, origin: str | None, method: str = "GET"
) -> tuple[list[dict[str, Any]], Exception | None]:
    headers = [(b"origin", origin.encode())] if origin else []
    scope = {"type": "http", "method": method, "path": "/x/", "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    except Exception as error:
        return sent, error
    return sent, None


def decoded(start: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k.decode(), v.decode()) for k, v in start["headers"]]


def responder(status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"{}") -> Any:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return inner


async def test_net_collapses_a_duplicated_allow_origin(caplog: pytest.LogCaptureFixture) -> None:
    # What nginx "add_header ... always" plus the app produced in the old system.
    inner = responder(
        200,
        [
            (b"content-type", b"application/json"),
            (b"access-control-allow-origin", ALLOWED_ORIGIN.encode()),
            (b"access-control-allow-origin", ALLOWED_ORIGIN.encode()),
        ],
    )
    with caplog.at_level(logging.WARNING):
        sent, error = await call(net(inner), ALLOWED_ORIGIN)
    assert error is None
    assert_cors_contract("allowed-exact", 200, decoded(sent[0]), sent[1]["body"])
    assert "CORS safety net corrected headers" in caplog.text


async def test_net_strips_headers_an_inner_layer_gave_a_foreign_origin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = responder(
        200,
        [
            (b"content-type", b"application/json"),
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-credentials", b"true"),
        ],
    )
    with caplog.at_level(logging.WARNING):
        sent, _ = await call(net(inner), "https://evil.example")
    assert_cors_contract("disallowed", 200, decoded(sent[0]), sent[1]["body"])
    assert "CORS safety net corrected headers" in caplog.text


async def test_net_turns_a_crash_before_the_response_into_json_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def crashing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("secret dsn postgres://user:pw@db/prod")

    with caplog.at_level(logging.ERROR):
        sent, error = await call(net(crashing), ALLOWED_ORIGIN)
    assert error is None
    assert sent[0]["status"] == 500
    assert_cors_contract("allowed-exact", 500, decoded(sent[0]), sent[1]["body"])
    assert b"postgres" not in sent[1]["body"]
    assert "Unhandled exception escaped the app" in caplog.text


async def test_net_replaces_a_non_json_error_page_keeping_its_status() -> None:
    inner = responder(502, [(b"content-type", b"text/html")], b"<h1>Bad Gateway</h1>")
    sent, _ = await call(net(inner), ALLOWED_ORIGIN)
    assert sent[0]["status"] == 502
    assert_cors_contract("allowed-exact", 502, decoded(sent[0]), sent[1]["body"])
    assert json.loads(sent[1]["body"])["code"] == "bad_gateway"
    assert len(sent) == 2  # the inner body was dropped, not appended


async def test_net_answers_when_the_app_sends_nothing() -> None:
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None

    sent, _ = await call(net(silent), None)
    assert sent[0]["status"] == 500
    assert_cors_contract("missing", 500, decoded(sent[0]), sent[1]["body"])


async def test_net_lets_a_crash_after_the_response_started_abort_the_connection() -> None:
    async def half(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[1,", "more_body": True})
        raise RuntimeError("stream broke")

    sent, error = await call(net(half), ALLOWED_ORIGIN)
    assert isinstance(error, RuntimeError)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


async def test_head_error_replacement_has_no_body() -> None:
    inner = responder(500, [(b"content-type", b"text/html")], b"")
    sent, _ = await call(net(inner), ALLOWED_ORIGIN, method="HEAD")
    assert sent[0]["status"] == 500
    assert sent[1]["body"] == b""


async def test_the_middlewares_decision_reaches_the_hooks_and_ends_with_the_request(
    tmp_path: Path,
) -> None:
    """quart-cors's comparisons and the fill-in hook read CORSMiddleware's decision from a
    context variable of slyker's (issue 12), set for the request only."""
    application = create_contract_app({"DATA_DIR": str(tmp_path)})
    seen: list[tuple[object, str | None, bool]] = []

    @application.get("/_probe/decision/")
    async def decision() -> Any:
        seen.append((_decided_origin.get(), request_origin(), _PolicyOrigin() == ALLOWED_ORIGIN))
        return jsonify({})

    client = application.test_client()
    allowed = await client.get("/_probe/decision/", headers={"Origin": ALLOWED_ORIGIN})
    refused = await client.get("/_probe/decision/", headers={"Origin": "https://evil.example"})
    without = await client.get("/_probe/decision/")
    assert seen == [
        (ALLOWED_ORIGIN, ALLOWED_ORIGIN, True),
        (None, None, False),
        (None, None, False),
    ]
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert "Access-Control-Allow-Origin" not in without.headers
    assert _decided_origin.get() is _UNDECIDED  # nothing left once the request is answered
    assert (_PolicyOrigin() == ALLOWED_ORIGIN) is False  # outside any request: never allowed
