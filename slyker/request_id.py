"""``X-Request-ID`` on every response, and on every log line written while serving it.

The outermost ASGI layer: it runs before Quart (and before the CORS safety net), so even a
response that no Quart code produced carries the id, and a crash can be matched to its log.
The same pass over the response headers adds the headers of :mod:`slyker.headers` (nosniff):
one send wrapper instead of two (issue 12: each layer re-copied every response's headers).
"""

from __future__ import annotations

import logging
import os
import re
from contextvars import ContextVar

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

from slyker.headers import SECURITY_HEADER_NAMES, SECURITY_HEADERS

HEADER = "X-Request-ID"
_HEADER_BYTES = HEADER.lower().encode()
# Incoming ids are kept only when they are short and plain: they go into logs and headers.
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_ID_MESSAGES = frozenset(
    {"http.response.start", "websocket.http.response.start", "websocket.accept"}
)
# websocket.accept is a handshake answer, not a document: it gets the id only.
_SECURITY_MESSAGES = frozenset({"http.response.start", "websocket.http.response.start"})
_REPLACED = frozenset({_HEADER_BYTES, *SECURITY_HEADER_NAMES})
SCOPE_KEY = "slyker.request_id"

current_request_id: ContextVar[str] = ContextVar("slyker_request_id", default="-")


def request_id_from_scope(scope: Scope) -> str:
    return scope.get(SCOPE_KEY, "-")  # type: ignore[return-value]


class RequestIDMiddleware:
    """The id on every response and handshake answer, and the nosniff header on every
    response."""

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or new_request_id()
        scope[SCOPE_KEY] = request_id  # type: ignore[literal-required]
        token = current_request_id.set(request_id)

        id_header = (_HEADER_BYTES, request_id.encode())

        async def send_with_id(message: dict) -> None:  # type: ignore[type-arg]
            kind = message["type"]
            if kind in _ID_MESSAGES:
                with_security = kind in _SECURITY_MESSAGES
                replaced = _REPLACED if with_security else (_HEADER_BYTES,)
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in replaced
                ]
                headers.append(id_header)
                if with_security:
                    headers += SECURITY_HEADERS
                message = {**message, "headers": headers}
            await send(message)  # type: ignore[arg-type]

        try:
            await self.app(scope, receive, send_with_id)  # type: ignore[arg-type]
        finally:
            current_request_id.reset(token)


def new_request_id() -> str:
    """What ``uuid.uuid4().hex`` gives (32 hex digits, version 4, RFC 4122 variant), without
    building a ``UUID`` object: a fifth of the time, on every request (issue 12)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):  # type: ignore[attr-defined]
        if name.lower() == _HEADER_BYTES and _SANE_ID.fullmatch(value):
            return value.decode()
    return None


def install_log_record_factory() -> None:
    """Give every log record a ``request_id`` attribute (``-`` outside a request)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "from_slyker", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)  # type: ignore[arg-type]
        record.request_id = current_request_id.get()
        return record

    factory.from_slyker = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def configure_logging(level: str) -> None:
    """slyker's loggers (``slyker.*``; the Quart app logger is ``slyker`` too) write to
    stderr with the request id. Only they get a handler: Hypercorn has its own, and a
    root handler would print its lines twice."""
    install_log_record_factory()
    logger = logging.getLogger("slyker")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [request_id=%(request_id)s] %(message)s"
            )
        )
        logger.addHandler(handler)
