"""Where every CORS header of every response comes from.

The origin decision itself is :mod:`slyker.origins` (one policy for HTTP and WebSocket);
this module only applies it, in layers, so that an allowed origin always gets exactly one
correct set of headers and any other origin gets none, whatever the status:

1. quart-cors, asking the policy through :class:`_PolicyOrigin`, decorates ordinary responses.
2. :func:`answer_preflight` (the first ``before_request``) answers every CORS preflight
   before routing, authentication, strict-slash redirects and 405 handling; a preflight's
   headers are decided there and nowhere else.
3. :func:`fill_in_cors_headers` (``after_request``) adds whatever an ordinary response still
   lacks and merges ``Vary: Origin``.
4. :class:`CORSSafetyNet`, an ASGI wrapper around the whole app, corrects any
   ``http.response.start`` whose CORS headers are missing, duplicated or wrong, turns a
   crash (or a non-JSON error page such as Quart's debug traceback) into the generic JSON
   error, and logs a WARNING each time, because it means an inner layer missed a case.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import quart_cors
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from quart import Quart, Response, current_app, request

from slyker.errors import JSON_CONTENT_TYPE, error_body_bytes, error_response
from slyker.origins import OriginPolicy
from slyker.settings import Settings

log = logging.getLogger(__name__)

EXTENSION_KEY = "slyker.cors"
ALLOW_ORIGIN = "Access-Control-Allow-Origin"
ALLOW_CREDENTIALS = "Access-Control-Allow-Credentials"
EXPOSE_HEADERS = "Access-Control-Expose-Headers"
ALLOW_METHODS = "Access-Control-Allow-Methods"
ALLOW_HEADERS = "Access-Control-Allow-Headers"
MAX_AGE = "Access-Control-Max-Age"
REQUEST_METHOD = "Access-Control-Request-Method"
REQUEST_HEADERS = "Access-Control-Request-Headers"
CORS_RESPONSE_HEADERS = frozenset(
    name.lower()
    for name in (
        ALLOW_ORIGIN,
        ALLOW_CREDENTIALS,
        EXPOSE_HEADERS,
        ALLOW_METHODS,
        ALLOW_HEADERS,
        MAX_AGE,
    )
)
PREFLIGHT_VARY = ("Origin", REQUEST_METHOD, REQUEST_HEADERS)
# quart-cors skips a response carrying this attribute; set on preflight answers so that no
# other layer touches headers decided by answer_preflight.
_QUART_CORS_DONE = "_QUART_CORS_APPLIED"


@dataclass(frozen=True)
class CORSConfig:
    policy: OriginPolicy
    allow_credentials: bool
    allow_methods: tuple[str, ...]
    allow_headers: tuple[str, ...]
    expose_headers: tuple[str, ...]
    max_age: int

    @classmethod
    def from_settings(cls, settings: Settings) -> CORSConfig:
        return cls(
            policy=settings.origin_policy,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=settings.cors_allow_methods,
            allow_headers=settings.cors_allow_headers,
            expose_headers=settings.cors_expose_headers,
            max_age=settings.cors_preflight_max_age,
        )

    def allowed_origin(self, values: Sequence[str | bytes]) -> str | None:
        """The Origin to echo, or None: there must be exactly one Origin and it must be allowed."""
        if len(values) != 1 or not self.policy.is_allowed(values[0]):
            return None
        value = values[0]
        return value.decode("ascii") if isinstance(value, bytes) else value

    def response_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """The CORS headers of an ordinary (non-preflight) response for an allowed ``origin``."""
        if origin is None:
            return []
        headers = [(ALLOW_ORIGIN, origin)]
        if self.allow_credentials:
            headers.append((ALLOW_CREDENTIALS, "true"))
        if self.expose_headers:
            headers.append((EXPOSE_HEADERS, ", ".join(self.expose_headers)))
        return headers

    def preflight_rejection(self, origin: str | None, method: str, requested: str) -> str | None:
        """Why a preflight is refused (``origin``, ``method`` or ``headers``), or None."""
        if origin is None:
            return "origin"
        if method.strip().upper() not in self.allow_methods:
            return "method"
        allowed = {header.lower() for header in self.allow_headers}
        asked = {item.strip().lower() for item in requested.split(",") if item.strip()}
        if not asked <= allowed:
            return "headers"
        return None

    def preflight_headers(self, origin: str) -> list[tuple[str, str]]:
        headers = [(ALLOW_ORIGIN, origin)]
        if self.allow_credentials:
            headers.append((ALLOW_CREDENTIALS, "true"))
        headers += [
            (ALLOW_METHODS, ", ".join(self.allow_methods)),
            (ALLOW_HEADERS, ", ".join(self.allow_headers)),
            (MAX_AGE, str(self.max_age)),
        ]
        return headers


def _config() -> CORSConfig:
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def _is_preflight(method: str, has_origin: bool, has_request_method: bool) -> bool:
    return method == "OPTIONS" and has_origin and has_request_method


def request_is_preflight() -> bool:
    return _is_preflight(
        request.method, "Origin" in request.headers, REQUEST_METHOD in request.headers
    )


def merge_vary(existing: Iterable[str], *names: str) -> str:
    """One Vary value holding every existing entry once plus ``names``."""
    merged: dict[str, str] = {}
    for value in existing:
        for item in value.split(","):
            if item.strip():
                merged.setdefault(item.strip().lower(), item.strip())
    for name in names:
        merged.setdefault(name.lower(), name)
    return ", ".join(merged.values())


def _log_value(value: object) -> str:
    """Origins come from clients: keep them short and on one line in logs."""
    return repr(value)[:300]


async def answer_preflight() -> Response | None:
    """Answer a CORS preflight for any path, before anything else looks at the request."""
    if not request_is_preflight():
        return None
    cors = _config()
    values = request.headers.getlist("Origin")
    origin = cors.allowed_origin(values)
    reason = cors.preflight_rejection(
        origin, request.headers[REQUEST_METHOD], request.headers.get(REQUEST_HEADERS, "")
    )
    if reason is not None:
        log.warning(
            "CORS preflight rejected: %s (origin=%s, method=%s, headers=%s, path=%s)",
            reason,
            _log_value(", ".join(values)),
            _log_value(request.headers.get(REQUEST_METHOD)),
            _log_value(request.headers.get(REQUEST_HEADERS)),
            request.path,
        )
        response = error_response(403, f"CORS preflight rejected: {reason} not allowed.")
    else:
        assert origin is not None
        response = Response(status=204)
        del response.headers["Content-Type"]
        for name, value in cors.preflight_headers(origin):
            response.headers[name] = value
    response.headers["Vary"] = merge_vary(response.headers.getlist("Vary"), *PREFLIGHT_VARY)
    setattr(response, _QUART_CORS_DONE, True)
    return response


async def fill_in_cors_headers(response: Response) -> Response:
    """Add what quart-cors left out of an ordinary response; never duplicate a header."""
    if request_is_preflight():
        return response
    response.headers["Vary"] = merge_vary(response.headers.getlist("Vary"), "Origin")
    origin = _config().allowed_origin(request.headers.getlist("Origin"))
    for name, value in _config().response_headers(origin):
        if name not in response.headers:
            log.debug("CORS header %s filled in after quart-cors on %s", name, request.path)
            response.headers[name] = value
    return response


class _PolicyOrigin:
    """quart-cors compares the request's Origin with each configured entry using ``==``;
    this entry makes that comparison ask the one origin policy instead, so quart-cors never
    uses its own prefix-matching (``re.match``) rule."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other == _config().allowed_origin(
            request.headers.getlist("Origin")
        )

    def __hash__(self) -> int:
        return id(self)


def init_cors(app: Quart, settings: Settings) -> CORSConfig:
    """Install layers 1-3 on ``app``; the factory wraps the app in :class:`CORSSafetyNet`."""
    config = CORSConfig.from_settings(settings)
    app.extensions[EXTENSION_KEY] = config
    app.before_request(answer_preflight)
    # after_request hooks run in reverse order: registered first, this one runs last.
    app.after_request(fill_in_cors_headers)
    quart_cors.cors(
        app,
        allow_origin=[_PolicyOrigin()],  # type: ignore[list-item]
        allow_credentials=config.allow_credentials,
        allow_methods=config.allow_methods,
        allow_headers=config.allow_headers,
        expose_headers=config.expose_headers,
        max_age=config.max_age,
        send_origin_wildcard=False,
    )
    return config


def _header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key.lower() == name]


class CORSSafetyNet:
    """The last net: an ASGI wrapper that makes every HTTP response keep the CORS promise."""

    def __init__(self, app: ASGIFramework, config: CORSConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers = scope["headers"]
        preflight = _is_preflight(
            scope["method"],
            bool(_header_values(request_headers, b"origin")),
            bool(_header_values(request_headers, REQUEST_METHOD.lower().encode())),
        )
        origin = self.config.allowed_origin(_header_values(request_headers, b"origin"))
        expected = [] if preflight else self.config.response_headers(origin)
        where = f"{scope['method']} {scope['path']}"
        state = {"started": False, "replacing": False}

        async def send_error(status: int, headers: list[tuple[bytes, bytes]]) -> None:
            body = b"" if scope["method"] == "HEAD" else error_body_bytes(status)
            kept = [
                (key, value)
                for key, value in headers
                if key.lower() not in (b"content-type", b"content-length", b"transfer-encoding")
            ]
            kept += [
                (b"content-type", JSON_CONTENT_TYPE.encode()),
                (b"content-length", str(len(error_body_bytes(status))).encode()),
            ]
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": self._corrected(kept, expected, preflight, where, status),
                    "trailers": False,
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})

        async def guarded_send(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                state["started"] = True
                status = message["status"]
                headers = list(message.get("headers", []))
                content_type = b"".join(_header_values(headers, b"content-type"))
                if status >= 400 and not content_type.startswith(JSON_CONTENT_TYPE.encode()):
                    log.warning(
                        "CORS safety net replaced a non-JSON %s error body on %s", status, where
                    )
                    state["replacing"] = True
                    await send_error(status, headers)
                    return
                message = {
                    **message,
                    "headers": self._corrected(headers, expected, preflight, where, status),
                }
            elif message["type"] == "http.response.body" and state["replacing"]:
                return
            await send(message)  # type: ignore[arg-type]

        try:
            await self.app(scope, receive, guarded_send)  # type: ignore[arg-type]
        except Exception:
            log.exception("Unhandled exception escaped the app on %s", where)
            if state["started"]:
                raise  # part of the response is out: let the server abort the connection
            await send_error(500, [])
            return
        if not state["started"]:
            log.error("The app returned no response on %s", where)
            await send_error(500, [])

    def _corrected(
        self,
        headers: list[tuple[bytes, bytes]],
        expected: list[tuple[str, str]],
        preflight: bool,
        where: str,
        status: int,
    ) -> list[tuple[bytes, bytes]]:
        vary = [value.decode("latin-1") for value in _header_values(headers, b"vary")]
        others = [(key, value) for key, value in headers if key.lower() != b"vary"]
        if preflight:
            return [*others, (b"vary", merge_vary(vary, *PREFLIGHT_VARY).encode())]
        present = [
            (key.decode("latin-1").lower(), value.decode("latin-1"))
            for key, value in others
            if key.decode("latin-1").lower() in CORS_RESPONSE_HEADERS
        ]
        wanted = [(name.lower(), value) for name, value in expected]
        if sorted(present) != sorted(wanted):
            log.warning(
                "CORS safety net corrected headers on %s (status %s): had %s, set %s",
                where,
                status,
                present,
                wanted,
            )
            others = [
                (key, value)
                for key, value in others
                if key.decode("latin-1").lower() not in CORS_RESPONSE_HEADERS
            ]
            others += [(name.encode(), value.encode()) for name, value in wanted]
        return [*others, (b"vary", merge_vary(vary, "Origin").encode())]
