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
from collections.abc import Mapping, Sequence
from typing import Any

from quart import Quart, Response, has_request_context, redirect, request, websocket
from quart_schema import RequestSchemaValidationError
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
    return error_response(
        status, error.message, code=error.code, errors=error.errors, headers=headers
    )


async def handle_unexpected_exception(error: Exception) -> Response:
    where = f"{request.method} {request.path}" if has_request_context() else websocket.path
    log.exception("Unhandled %s on %s", type(error).__name__, where, exc_info=error)
    return error_response(500, SERVER_ERROR_MESSAGE)


def register_error_handlers(app: Quart) -> None:
    app.register_error_handler(RequestSchemaValidationError, handle_validation_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(domain.ServiceError, handle_domain_error)
    app.register_error_handler(Exception, handle_unexpected_exception)
