"""The CORS contract as a matrix, in process (the live Hypercorn sample is elsewhere).

Part 1 walks every HTTP route registered in the app's URL map, so a route added by a later
blueprint is covered without editing this file: route x method x origin class x mode.
Part 2 forces every outcome (2xx, 308, 400, 401, 403, 404, 405, 413, 415, 422, 429, 500
from a view, a before_request and an after_request hook, 503) x origin class x mode.
Modes: defaults, then DEBUG, TESTING, PROPAGATE_EXCEPTIONS each on, then all three on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart_rate_limiter import QUART_RATE_LIMITER_LIMITS_ATTRIBUTE
from werkzeug.routing import Rule

from tests.conftest import TEST_SECRET_KEY, prepare_database
from tests.contract_app import (
    ABORT_STATUSES,
    CRASH_IN_AFTER_REQUEST,
    CRASH_IN_BEFORE_REQUEST,
    MAX_CONTENT_LENGTH,
    create_contract_app,
)
from tests.cors_contract import (
    ALLOWED_CLASSES,
    FOREIGN_CLASSES,
    ORIGIN_CLASSES,
    assert_cors_contract,
)

MODES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "debug": {"DEBUG": True},
    "testing": {"TESTING": True},
    "propagate": {"PROPAGATE_EXCEPTIONS": True},
    "debug+testing+propagate": {"DEBUG": True, "TESTING": True, "PROPAGATE_EXCEPTIONS": True},
}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PREFLIGHT")
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SAMPLE_ARGUMENTS = {
    "IntegerConverter": 1,
    "RowIdConverter": 1,  # slyker's <int:...>: an IntegerConverter bounded to INTEGER
    "FloatConverter": 1.5,
    "UUIDConverter": "00000000-0000-4000-8000-000000000001",
}
# What the probe routes answer when reached with an allowed method and no body.
PROBE_OUTCOMES = {f"probe.status_{status}": status for status in ABORT_STATUSES} | {
    "probe.crash": 500,
    "probe.create_item": 415,
    "probe.raw_json": 415,
}


def _http_rules() -> list[Rule]:
    app = create_contract_app({"SECRET_KEY": TEST_SECRET_KEY})
    return [rule for rule in app.url_map.iter_rules() if not rule.websocket]


def sample_path(rule: Rule) -> str:
    arguments = {
        name: SAMPLE_ARGUMENTS.get(type(converter).__name__, "sample")
        for name, converter in rule._converters.items()
    }
    built = rule.build(arguments, append_unknown=False)
    assert built is not None, rule.rule
    return built[1]


RULES = _http_rules()


def assert_safety_net_use(caplog: pytest.LogCaptureFixture, status: int, path: str) -> None:
    """The ASGI net must only be needed where Quart's own layers cannot act: an after_request
    hook that raises (in every mode: with DEBUG/TESTING/PROPAGATE_EXCEPTIONS the exception
    escapes Quart, without them Quart sends its 500 without running the hooks again).
    Anywhere else a correction means an inner layer regressed."""
    corrections = [r for r in caplog.records if r.getMessage().startswith("CORS safety net")]
    expected = status == 500 and path == CRASH_IN_AFTER_REQUEST
    assert bool(corrections) == expected, [r.getMessage() for r in corrections]
    assert all(record.levelname == "WARNING" for record in corrections)


def is_rate_limited(app: Quart, rule: Rule) -> bool:
    view = app.view_functions[rule.endpoint]
    return bool(getattr(view, QUART_RATE_LIMITER_LIMITS_ATTRIBUTE, None))


def is_preflight(method: str, origin_class: str) -> bool:
    return method == "PREFLIGHT" and ORIGIN_CLASSES[origin_class] is not None


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


async def send(
    app: Quart, origin_class: str, call: Call
) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = dict(call.headers)
    origin = ORIGIN_CLASSES[origin_class]
    if origin is not None:
        headers["Origin"] = origin
    method = call.method
    if method == "PREFLIGHT":
        method = "OPTIONS"
        headers["Access-Control-Request-Method"] = "POST"
        headers["Access-Control-Request-Headers"] = "authorization, content-type, x-cart-token"
    response = await app.test_client().open(
        call.path, method=method, headers=headers, data=call.body
    )
    return response.status_code, list(response.headers.items()), await response.get_data()


@pytest.fixture(scope="module", params=list(MODES), ids=list(MODES))
async def contract_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Quart]:
    data_dir: Path = tmp_path_factory.mktemp(f"contract-{request.param}")
    app = create_contract_app({"DATA_DIR": str(data_dir), **MODES[request.param]})
    async with app.test_app():
        await prepare_database(app)
        yield app


def expected_route_status(app: Quart, method: str, origin_class: str, path: str) -> int | None:
    """The status the contract predicts, or None where only "not a 5xx" can be said."""
    if method == "PREFLIGHT" and origin_class != "missing":
        return 204 if origin_class in ALLOWED_CLASSES else 403
    if method == "PREFLIGHT":
        method = "OPTIONS"  # without an Origin it is an ordinary OPTIONS request
    if path == CRASH_IN_AFTER_REQUEST:
        return 500  # whatever the view or the CSRF check answered, the hook then fails
    if method in UNSAFE and origin_class in FOREIGN_CLASSES:
        return 403
    if path == CRASH_IN_BEFORE_REQUEST:
        return 500  # runs after the CSRF check, before routing errors are raised
    # Several rules may share a path (a GET list and a POST create): ask the whole map.
    adapter = app.url_map.bind("localhost")
    if method not in adapter.allowed_methods(path):
        return 405
    if method == "OPTIONS":
        return 200
    endpoint, _ = adapter.match(path, method=method)
    return PROBE_OUTCOMES.get(endpoint)


@pytest.mark.parametrize("origin_class", list(ORIGIN_CLASSES))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rule", RULES, ids=[f"{r.endpoint}:{r.rule}" for r in RULES])
async def test_every_route_every_method(
    contract_app: Quart,
    rule: Rule,
    method: str,
    origin_class: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = sample_path(rule)
    status, headers, body = await send(contract_app, origin_class, Call(method, path))
    expected = expected_route_status(contract_app, method, origin_class, path)
    if status == 429 and is_rate_limited(contract_app, rule) and expected != 403:
        expected = 429  # the matrix itself exhausts the login and register limits
    if expected is None:
        assert status < 500, (status, body[:300])
    else:
        assert status == expected, (status, body[:300])
    assert_cors_contract(
        origin_class,
        status,
        headers,
        body,
        method=method,
        preflight=is_preflight(method, origin_class),
    )
    assert_safety_net_use(caplog, status, path)


STRICT_SLASH_RULES = [rule for rule in RULES if rule.rule.endswith("/") and rule.rule != "/"]


@pytest.mark.parametrize("origin_class", list(ORIGIN_CLASSES))
@pytest.mark.parametrize(
    "rule", STRICT_SLASH_RULES, ids=[f"{r.endpoint}:{r.rule}" for r in STRICT_SLASH_RULES]
)
async def test_strict_slash_redirects_carry_the_headers(
    contract_app: Quart, rule: Rule, origin_class: str
) -> None:
    path = sample_path(rule)
    methods = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
    method = "GET" if "GET" in methods else sorted(methods)[0]
    status, headers, body = await send(contract_app, origin_class, Call(method, path[:-1]))
    if method in UNSAFE and origin_class in FOREIGN_CLASSES:
        assert status == 403
    else:
        assert status == 308, (status, body[:300])
        location = [value for key, value in headers if key.lower() == "location"]
        assert location and location[0].endswith(path), headers
    assert_cors_contract(origin_class, status, headers, body, method=method)


JSON = {"Content-Type": "application/json"}
OUTCOMES: dict[str, tuple[Call, int]] = {
    "200": (Call("GET", "/_probe/ok/"), 200),
    "201": (Call("POST", "/_probe/items/", JSON, b'{"name": "vps", "quantity": 2}'), 201),
    "308-redirect": (Call("GET", "/_probe/ok"), 308),
    "400-bad-json": (Call("POST", "/_probe/items/", JSON, b'{"name": "vps",'), 400),
    "400-validation": (Call("POST", "/_probe/items/", JSON, b'{"name": "x", "quantity": 0}'), 400),
    "401": (Call("GET", "/_probe/status/401/"), 401),
    "403": (Call("GET", "/_probe/status/403/"), 403),
    "404": (Call("GET", "/no/such/path/"), 404),
    "405": (Call("DELETE", "/_probe/ok/"), 405),
    "413": (
        Call("POST", "/_probe/items/", JSON, b'{"name": "' + b"x" * MAX_CONTENT_LENGTH + b'"}'),
        413,
    ),
    "415": (Call("POST", "/_probe/items/", {"Content-Type": "text/plain"}, b"name=vps"), 415),
    "422": (Call("GET", "/_probe/status/422/"), 422),
    "429": (Call("GET", "/_probe/status/429/"), 429),
    "500-view": (Call("GET", "/_probe/crash/"), 500),
    "500-before-request": (Call("GET", CRASH_IN_BEFORE_REQUEST), 500),
    "500-after-request": (Call("GET", CRASH_IN_AFTER_REQUEST), 500),
    "503": (Call("GET", "/_probe/status/503/"), 503),
    "preflight-unknown-path": (Call("PREFLIGHT", "/api/not/a/route/"), 204),
}


@pytest.mark.parametrize("origin_class", list(ORIGIN_CLASSES))
@pytest.mark.parametrize("outcome", list(OUTCOMES))
async def test_every_outcome(
    contract_app: Quart, outcome: str, origin_class: str, caplog: pytest.LogCaptureFixture
) -> None:
    call, expected = OUTCOMES[outcome]
    if call.method in UNSAFE and origin_class in FOREIGN_CLASSES:
        expected = 403  # the CSRF check refuses before the view runs
    if call.method == "PREFLIGHT" and origin_class not in ALLOWED_CLASSES:
        # Without an Origin it is an ordinary OPTIONS request to an unknown path.
        expected = 404 if origin_class == "missing" else 403
    status, headers, body = await send(contract_app, origin_class, call)
    assert status == expected, (status, body[:300])
    assert_cors_contract(
        origin_class,
        status,
        headers,
        body,
        method=call.method,
        preflight=is_preflight(call.method, origin_class),
    )
    assert_safety_net_use(caplog, status, call.path)
    if outcome.startswith("500"):
        assert json.loads(body)["code"] == "server_error"
    if outcome == "400-validation" and status == 400:
        assert json.loads(body)["errors"] == {
            "quantity": ["Input should be greater than or equal to 1"]
        }
    if outcome == "429":
        assert [value for key, value in headers if key.lower() == "retry-after"] == ["7"]
    if outcome == "405" and status == 405:
        allow = [value for key, value in headers if key.lower() == "allow"]
        assert len(allow) == 1 and set(allow[0].split(", ")) == {"GET", "HEAD", "OPTIONS"}
