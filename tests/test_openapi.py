"""Every HTTP route declares its response: /openapi.json has a response schema for each
operation's success status, and each view validates what it answers (quart-schema's
``validate_response``), so the contract the storefront reads is the one documented."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from quart import Quart
from quart_schema.extension import QUART_SCHEMA_HIDDEN_ATTRIBUTE
from quart_schema.validation import QUART_SCHEMA_RESPONSE_ATTRIBUTE

IMPLICIT_METHODS = {"HEAD", "OPTIONS"}  # answered by Quart (and the CORS layers) for every route
_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
# The code of quart-schema's validate_response wrapper (functools.wraps copies the view's
# names onto it, but not its code).
_VALIDATES_RESPONSE = "validate_response.<locals>.decorator.<locals>.wrapper"


def operation_name(method: str, rule: str) -> str:
    """``GET /api/billing/carts/{cart_id}/``: as /openapi.json names the operation."""
    path = _VARIABLE.sub(r"{\1}", rule)
    return f"{method} {path}"


def validates_response(view: Callable[..., Any]) -> bool:
    function: Any = view
    while function is not None:
        code = getattr(function, "__code__", None)
        if code is not None and code.co_qualname == _VALIDATES_RESPONSE:
            return True
        function = getattr(function, "__wrapped__", None)
    return False


def http_operations(app: Quart) -> dict[str, Callable[..., Any]]:
    """Every HTTP operation of the app (not quart-schema's own pages, not websockets)."""
    operations = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if rule.websocket or getattr(view, QUART_SCHEMA_HIDDEN_ATTRIBUTE, False):
            continue
        for method in sorted((rule.methods or set()) - IMPLICIT_METHODS):
            operations[operation_name(method, rule.rule)] = view
    return operations


async def openapi_document(app_factory: Callable[..., Quart]) -> tuple[Quart, dict[str, Any]]:
    app = app_factory(API_DOCS=True)  # /openapi.json is served only with the docs on
    response = await app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return app, await response.get_json()


def success_responses(operation: dict[str, Any]) -> dict[str, Any]:
    return {
        status: response
        for status, response in operation["responses"].items()
        if str(status).startswith("2")
    }


async def test_every_operation_has_a_response_schema_for_its_success_status(
    app_factory: Callable[..., Quart],
) -> None:
    app, document = await openapi_document(app_factory)
    documented = {
        f"{method.upper()} {path}": operation
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    assert set(documented) == set(http_operations(app)), "an HTTP route is missing from OpenAPI"
    missing = []
    for name, operation in sorted(documented.items()):
        successes = success_responses(operation)
        described = successes and all(
            status == "204" or "schema" in response.get("content", {}).get("application/json", {})
            for status, response in successes.items()
        )
        if not described:
            missing.append(name)
    assert not missing, f"operations without a response schema: {missing}"


async def test_every_operation_declares_the_error_body(
    app_factory: Callable[..., Quart],
) -> None:
    _app, document = await openapi_document(app_factory)
    schemas = document["components"]["schemas"]
    assert {"error", "detail", "status", "code"} <= set(schemas["ErrorBody"]["required"])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for statuses in ("4XX", "5XX"):
                schema = operation["responses"][statuses]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)


async def test_every_http_route_validates_its_response(
    app_factory: Callable[..., Quart],
) -> None:
    app = app_factory()
    operations = http_operations(app)
    assert len(operations) > 50, sorted(operations)
    undeclared = sorted(
        name
        for name, view in operations.items()
        if not (getattr(view, QUART_SCHEMA_RESPONSE_ATTRIBUTE, None) and validates_response(view))
    )
    assert undeclared == [], "routes without validate_response"
