"""The one place an error body is shaped.

Every error slyker sends is JSON::

    {"error": "<message for humans>", "detail": "<same>", "status": 404, "code": "not_found"}

plus ``"errors": {field: [messages]}`` for validation failures. ``error`` is always a string
(the old backend sent ``true`` and the storefront printed "true"). A 5xx body never carries
exception text: the exception is logged with the request id instead.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import redis.exceptions
from quart import Quart, Response, has_request_context, redirect, request, websocket
from quart_schema import RequestSchemaValidationError
from tortoise.exceptions import DBConnectionError
from tortoise.exceptions import OperationalError as TortoiseOperationalError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import RequestRedirect

from slyker.services import errors as domain

log = logging.getLogger(__name__)

SERVER_ERROR_MESSAGE = "Internal server error. The error has been logged; quote the X-Request-ID."
JSON_CONTENT_TYPE = "application/json"
# Codes a client may branch on; anything else is the status phrase in snake case.
_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "unprocessable_entity",
    429: "rate_limited",
    500: "server_error",
}
# Headers of an HTTPException that describe the error and must survive (Allow, Retry-After,
# WWW-Authenticate); its Content-Type describes werkzeug's HTML page and must not.
_DROPPED_EXCEPTION_HEADERS = {"content-type", "content-length"}


class APIError(HTTPException):
    """The one error type views raise: ``raise APIError(404, "Cart not found.")``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        errors: Mapping[str, Sequence[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(description=message)
        self.code = status
        self.error_code = code
        self.errors = dict(errors) if errors else None
        self.extra_headers = dict(headers or {})


def invalid(field_name: str, message: str) -> APIError:
    """A 400 about one field: the storefront shows ``error`` ("field: message")."""
    return APIError(400, f"{field_name}: {message}", code="invalid", errors={field_name: [message]})


def status_code_name(status: int) -> str:
    return _CODES.get(status) or HTTP_STATUS_CODES.get(status, "error").lower().replace(" ", "_")


def error_body(
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    errors: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    if not message:
        message = HTTP_STATUS_CODES.get(status, "Error")
    body: dict[str, Any] = {
        "error": str(message),
        "detail": str(message),
        "status": status,
        "code": code or status_code_name(status),
    }
    if errors:
        body["errors"] = {field: [str(m) for m in messages] for field, messages in errors.items()}
    return body


def error_body_bytes(status: int, message: str | None = None) -> bytes:
    """The body for layers below Quart (the ASGI safety net), which have no Response class."""
    if status >= 500:
        message = SERVER_ERROR_MESSAGE if status == 500 else HTTP_STATUS_CODES.get(status, "Error")
    return json.dumps(error_body(status, message)).encode()


async def send_asgi_error(
    scope: Any, send: Any, status: int, message: str, code: str | None = None
) -> None:
    """An error answered by an ASGI layer below Quart: a JSON error response, or for a
    WebSocket handshake the same JSON as its denial response (a close where the server does
    not support denial responses)."""
    body = json.dumps(error_body(status, message, code=code)).encode()
    headers = [
        (b"content-type", JSON_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if scope.get("method") == "HEAD":
            body = b""
        await send({"type": "http.response.body", "body": body, "more_body": False})
    elif "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
    else:
        await send({"type": "websocket.close", "code": 1008})


def error_response(
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    errors: Mapping[str, Sequence[str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    response = Response(
        json.dumps(error_body(status, message, code=code, errors=errors)),
        status=status,
        content_type=JSON_CONTENT_TYPE,
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def validation_errors(error: Exception) -> dict[str, list[str]]:
    """``{field: [messages]}`` from a pydantic (or other) validation error."""
    details = getattr(error, "errors", None)
    if not callable(details):
        return {"non_field_errors": [str(error) or "Invalid input."]}
    fields: dict[str, list[str]] = {}
    for item in details():
        field = ".".join(str(part) for part in item.get("loc", ())) or "non_field_errors"
        message = str(item.get("msg", "Invalid value."))
        fields.setdefault(field, []).append(message.removeprefix("Value error, "))
    return fields


async def handle_validation_error(error: RequestSchemaValidationError) -> Response:
    fields = validation_errors(error.validation_error)
    field, messages = next(iter(fields.items()))
    message = messages[0] if field == "non_field_errors" else f"{field}: {messages[0]}"
    return error_response(400, message, code="invalid", errors=fields)


async def handle_http_exception(error: HTTPException) -> Response:
    if isinstance(error, RequestRedirect):  # strict slashes: a redirect, not an error
        return redirect(error.new_url, error.code)  # type: ignore[return-value]
    status = error.code or 500
    if status >= 500 and not isinstance(error, APIError):
        original = getattr(error, "original_exception", None)
        if original is not None or isinstance(error, InternalServerError):
            return error_response(status, SERVER_ERROR_MESSAGE)
    headers = {
        name: value
        for name, value in error.get_headers()
        if name.lower() not in _DROPPED_EXCEPTION_HEADERS
    }
    if isinstance(error, APIError):
        headers.update(error.extra_headers)
        return error_response(
            status, error.description, code=error.error_code, errors=error.errors, headers=headers
        )
    return error_response(status, error.description, headers=headers)


# Domain errors (raised by services) → HTTP status; the most specific class wins.
_DOMAIN_STATUS: tuple[tuple[type[domain.ServiceError], int], ...] = (
    (domain.NotFound, 404),
    (domain.InvalidInput, 400),
    (domain.PermissionDenied, 403),
    (domain.Conflict, 409),
    (domain.RateLimited, 429),
    (domain.UpstreamError, 502),
    (domain.Unavailable, 503),
)


def domain_error_status(error: domain.ServiceError) -> int:
    for kind, status in _DOMAIN_STATUS:
        if isinstance(error, kind):
            return status
    return 400


async def handle_domain_error(error: domain.ServiceError) -> Response:
    status = domain_error_status(error)
    headers = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if status >= 500:
        log.warning("%s: %s", type(error).__name__, error.message)
    if not error.extra:
        return error_response(
            status, error.message, code=error.code, errors=error.errors, headers=headers
        )
    body = error_body(status, error.message, code=error.code, errors=error.errors)
    body.update({name: value for name, value in error.extra.items() if name not in body})
    response = Response(json.dumps(body), status=status, content_type=JSON_CONTENT_TYPE)
    for name, value in headers.items():
        response.headers[name] = value
    return response


# The one place that knows which driver exceptions mean "a dependency is unavailable" (not a
# bug): the database or Redis refused, dropped or did not answer in time. They become 503 with
# Retry-After (a client can tell an outage from a bug, and retry), logged as one line.
_DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    DBConnectionError,  # Tortoise could not open the pool
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: connection failures
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.QueryCanceledError,  # 57014: statement_timeout (DATABASE_QUERY_TIMEOUT)
    asyncpg.TooManyConnectionsError,  # 53300
)
_REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
UNAVAILABLE_RETRY_AFTER = 5  # seconds


def unavailable_dependency(error: BaseException) -> str | None:
    """``"database"`` or ``"Redis"`` when ``error`` (or what it was raised from) says that one
    is unavailable, else None. A ``TimeoutError`` that reaches here is a dependency that did
    not answer in time (the database's timeouts raise it; other waits handle their own)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _REDIS_UNAVAILABLE):
            return "Redis"
        if isinstance(current, _DATABASE_UNAVAILABLE) or _is_connection_state(current):
            return "database"
        current = current.__cause__ or current.__context__
    if isinstance(error, TimeoutError | ConnectionError):
        return "database"  # asyncpg's connect and statement timeouts, a refused connection
    return None


# asyncpg's InterfaceError is also raised for client-side mistakes (bugs); only these are
# about the connection: closed under us, or still busy with a timed-out statement.
_ASYNCPG_CONNECTION_STATES = (
    "connection is closed",
    "another operation is in progress",
    "pool is clos",
)


def _is_connection_state(error: BaseException) -> bool:
    if isinstance(error, asyncpg.InterfaceError):
        return any(state in str(error) for state in _ASYNCPG_CONNECTION_STATES)
    # SQLite's busy timeout ran out: another process holds the write lock.
    sqlite_errors = (TortoiseOperationalError, sqlite3.OperationalError)
    return isinstance(error, sqlite_errors) and "database is locked" in str(error)


def describe_exception(error: BaseException) -> str:
    """One line: the exception's type and message (for outages, where a traceback would only
    repeat the driver's internals on every request)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def unavailable_response(what: str) -> Response:
    return error_response(
        503,
        f"The service is temporarily unavailable ({what}). Please try again shortly.",
        code="unavailable",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )


async def handle_unexpected_exception(error: Exception) -> Response:
    where = f"{request.method} {request.path}" if has_request_context() else websocket.path
    dependency = unavailable_dependency(error)
    if dependency is not None:
        log.warning("%s unavailable on %s: %s", dependency, where, describe_exception(error))
        return unavailable_response(dependency)
    log.exception("Unhandled %s on %s", type(error).__name__, where, exc_info=error)
    return error_response(500, SERVER_ERROR_MESSAGE)


def register_error_handlers(app: Quart) -> None:
    app.register_error_handler(RequestSchemaValidationError, handle_validation_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(domain.ServiceError, handle_domain_error)
    app.register_error_handler(Exception, handle_unexpected_exception)
