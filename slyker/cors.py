"""Where every CORS header of every response comes from.

The origin decision itself is :mod:`slyker.origins` (one policy for HTTP and WebSocket);
this module only applies it, in layers, so that an allowed origin always gets exactly one
correct set of headers and any other origin gets none, whatever the status:

1. quart-cors, asking the policy through :class:`_PolicyOrigin`, decorates ordinary responses.
2. :func:`fill_in_cors_headers` (``after_request``) adds whatever an ordinary response still
   lacks and merges ``Vary: Origin``. (The error handlers of :mod:`slyker.errors` return
   ordinary responses, so layers 1 and 2 cover every handled error status.)
3. :class:`CORSMiddleware`, an ASGI wrapper around the whole app:
   - answers every CORS preflight itself, so before routing, authentication, strict-slash
     redirects, 405 handling and any hook that could fail; a preflight's headers are decided
     there and nowhere else;
   - is the last net for everything else: it corrects any ``http.response.start`` whose CORS
     headers are missing, duplicated or wrong, turns a crash (or a non-JSON error page such
     as Quart's debug traceback) into the generic JSON error, and logs a WARNING each time,
     because it means an inner layer missed a case.

The origin decision is taken once per request, by :class:`CORSMiddleware` (which runs
first), and kept in the ASGI scope; layers 1 and 2 read it from there instead of asking the
policy again (issue 12: quart-cors alone asked it twice per response).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import quart_cors
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    Scope,
)
from quart import Quart, Response, current_app, has_request_context, request, websocket
from werkzeug.exceptions import NotFound
from werkzeug.routing import WebsocketMismatch

from slyker.errors import JSON_CONTENT_TYPE, error_body_bytes
from slyker.origins import OriginPolicy
from slyker.settings import Settings

log = logging.getLogger(__name__)
_JSON_CONTENT_TYPE_BYTES = JSON_CONTENT_TYPE.encode()

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
_CORS_RESPONSE_HEADER_BYTES = frozenset(name.encode() for name in CORS_RESPONSE_HEADERS)
_REQUEST_METHOD_BYTES = REQUEST_METHOD.lower().encode()
_REQUEST_HEADERS_BYTES = REQUEST_HEADERS.lower().encode()
_ERROR_BODY_HEADERS = (b"content-type", b"content-length", b"transfer-encoding")
# The scope key holding the request's decision: the Origin to echo, or None.
ORIGIN_SCOPE_KEY = "slyker.cors_origin"
_EXPECTED_CACHE_SIZE = 256  # allowed origins seen recently (regex rules allow many)
# The same decision for the code of the HTTP request CORSMiddleware is passing to the app:
# read without Quart's ``request`` proxy (a context look-up, then the scope), three times per
# response (issue 12). Unset (``_UNDECIDED``) anywhere else: WebSocket handshakes, requests
# that did not pass through the middleware, code outside any request.
_UNDECIDED = object()
_decided_origin: ContextVar[object] = ContextVar("slyker_cors_origin", default=_UNDECIDED)


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


def request_origin() -> str | None:
    """The current request's allowed Origin (to echo), or None: the decision
    :class:`CORSMiddleware` took for it, else (a request that did not pass through it) taken
    now."""
    decided = _decided_origin.get()
    if decided is not _UNDECIDED:
        return decided  # type: ignore[return-value]
    scope = request.scope
    if ORIGIN_SCOPE_KEY in scope:
        return scope[ORIGIN_SCOPE_KEY]  # type: ignore[no-any-return]
    return _config().allowed_origin(request.headers.getlist("Origin"))


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


async def fill_in_cors_headers(response: Response) -> Response:
    """Add what quart-cors left out of a response; never duplicate a header.

    A response that already allows this request's origin was decorated by quart-cors: it
    asked the same decision (:class:`_PolicyOrigin`) and set every CORS header and ``Vary:
    Origin`` together, and no hook runs between it and this one. One header look-up then
    (issue 12); anything else (a cors-exempt view, a refused origin) is filled in header by
    header, and :class:`CORSMiddleware` still checks every response."""
    allowed = response.headers.get("Access-Control-Allow-Origin")
    if allowed is not None and allowed == request_origin():
        return response
    response.headers["Vary"] = merge_vary(response.headers.getlist("Vary"), "Origin")
    for name, value in _config().response_headers(request_origin()):
        if name not in response.headers:
            log.debug("CORS header %s filled in after quart-cors on %s", name, request.path)
            response.headers[name] = value
    return response


class _PolicyOrigin:
    """quart-cors compares the request's Origin with each configured entry using ``==``;
    this entry makes that comparison ask the one origin policy instead, so quart-cors never
    uses its own prefix-matching (``re.match``) rule."""

    def __eq__(self, other: object) -> bool:
        decided = _decided_origin.get()
        if decided is _UNDECIDED:
            if not has_request_context():  # WebSocket handshakes: the chat routes check them
                return False
            decided = request_origin()
        return isinstance(other, str) and other == decided

    def __hash__(self) -> int:
        return id(self)


def init_cors(app: Quart, settings: Settings) -> CORSConfig:
    """Install layers 1 and 2 on ``app``; the factory wraps the app in :class:`CORSMiddleware`."""
    config = CORSConfig.from_settings(settings)
    app.extensions[EXTENSION_KEY] = config
    # after_request hooks run in reverse order: registered first, this one runs last.
    app.after_request(fill_in_cors_headers)
    app.before_websocket(raise_websocket_routing_error)  # before quart-cors's own hook
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


async def raise_websocket_routing_error() -> None:
    """A WebSocket handshake to a path with no WebSocket route gets the routing error (the
    JSON 404) an HTTP request gets.

    Quart runs the ``before_websocket`` hooks before it raises the routing error in
    ``dispatch_websocket``, and quart-cors's hook refuses (``abort(400)``) every handshake
    whose endpoint is not ``cors_exempt``: an unmatched path has endpoint None, and its
    origin check never passes outside a request context (``_PolicyOrigin``). So every unknown
    path was a bare 400. Raised here, first, the routing error wins; on a matched route this
    does nothing, and quart-cors's hook still refuses any route that is not ``cors_exempt``
    (the chat routes are, and check the Origin in their handshake before accept). A path
    with only HTTP routes is a missing WebSocket route too: 404, not Werkzeug's 400
    ``WebsocketMismatch`` ("could not understand")."""
    error = websocket.routing_exception
    if isinstance(error, WebsocketMismatch):
        raise NotFound()
    if error is not None:
        raise error


def _split_cors_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]], list[str]]:
    """A response's headers in one pass: the others (as given), the CORS ones (lower-case
    names) and the Vary values (text)."""
    others: list[tuple[bytes, bytes]] = []
    present: list[tuple[bytes, bytes]] = []
    vary: list[str] = []
    for key, value in headers:
        name = key.lower()
        if name == b"vary":
            vary.append(value.decode("latin-1"))
        elif name in _CORS_RESPONSE_HEADER_BYTES:
            present.append((name, value))
        else:
            others.append((key, value))
    return others, present, vary


def _where(scope: Scope) -> str:
    """The request, for log lines (built only when one is written)."""
    return f"{scope['method']} {scope['path']}"  # type: ignore[typeddict-item]


def _header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key.lower() == name]


async def _send_json(
    send: ASGISendCallable,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    head: bool = False,
) -> None:
    headers = [
        *headers,
        (b"content-type", JSON_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})  # type: ignore[typeddict-item]
    await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})


class CORSMiddleware:
    """Answers preflights; the last net that makes every other response keep the promise."""

    def __init__(self, app: ASGIFramework, config: CORSConfig) -> None:
        self.app = app
        self.config = config
        # The CORS headers for each allowed origin (and None), encoded once.
        self._expected: dict[str | None, tuple[tuple[bytes, bytes], ...]] = {}
        # The policy's answer per Origin value (the policy never changes; issue 12: parsing
        # and canonicalising the same Origin on every request was a tenth of this layer).
        self._decisions: dict[bytes, str | None] = {}
        # Vary values as sent by the app -> the merged value and whether it named Origin.
        self._vary: dict[tuple[str, ...], tuple[bytes, bool]] = {}

    def _decision(self, origins: list[bytes]) -> str | None:
        if len(origins) != 1:
            return None
        value = origins[0]
        try:
            return self._decisions[value]
        except KeyError:
            pass
        if len(self._decisions) >= _EXPECTED_CACHE_SIZE:
            self._decisions.clear()
        decision = self._decisions[value] = self.config.allowed_origin(origins)
        return decision

    def _merged_vary(self, vary: list[str]) -> tuple[bytes, bool]:
        key = tuple(vary)
        merged = self._vary.get(key)
        if merged is None:
            if len(self._vary) >= _EXPECTED_CACHE_SIZE:
                self._vary.clear()
            varies_on_origin = "origin" in merge_vary(vary).lower().split(", ")
            merged = self._vary[key] = (merge_vary(vary, "Origin").encode(), varies_on_origin)
        return merged

    def _expected_headers(self, origin: str | None) -> tuple[tuple[bytes, bytes], ...]:
        expected = self._expected.get(origin)
        if expected is None:
            if len(self._expected) >= _EXPECTED_CACHE_SIZE:
                self._expected.clear()
            expected = tuple(
                (name.lower().encode(), value.encode())
                for name, value in self.config.response_headers(origin)
            )
            self._expected[origin] = expected
        return expected

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origins: list[bytes] = []
        requested_method: list[bytes] = []
        for name, value in scope["headers"]:  # one pass over the request headers
            name = name.lower()
            if name == b"origin":
                origins.append(value)
            elif name == _REQUEST_METHOD_BYTES:
                requested_method.append(value)
        origin = self._decision(origins) if origins else None
        scope[ORIGIN_SCOPE_KEY] = origin  # type: ignore[literal-required]
        if scope["method"] == "OPTIONS" and origins and requested_method:
            where = _where(scope)
            await self._answer_preflight(scope, send, origins, origin, requested_method, where)
            return
        expected = self._expected_headers(origin)
        state = {"started": False, "replacing": False, "disconnected": False}

        async def watched_receive() -> ASGIReceiveEvent:
            message = await receive()
            if message["type"] == "http.disconnect":
                state["disconnected"] = True
            return message

        async def send_error(status: int, headers: list[tuple[bytes, bytes]]) -> None:
            kept = [
                (key, value) for key, value in headers if key.lower() not in _ERROR_BODY_HEADERS
            ]
            await _send_json(
                send,
                status,
                self._corrected(kept, expected, scope, status),
                error_body_bytes(status),
                head=scope["method"] == "HEAD",
            )

        async def guarded_send(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                state["started"] = True
                status = message["status"]
                headers = list(message.get("headers", []))
                if status >= 400 and not b"".join(
                    _header_values(headers, b"content-type")
                ).startswith(_JSON_CONTENT_TYPE_BYTES):
                    log.warning(
                        "CORS safety net replaced a non-JSON %s error body on %s",
                        status,
                        _where(scope),
                    )
                    state["replacing"] = True
                    await send_error(status, headers)
                    return
                message = {
                    **message,
                    "headers": self._corrected(headers, expected, scope, status),
                }
            elif message["type"] == "http.response.body" and state["replacing"]:
                return
            await send(message)  # type: ignore[arg-type]

        decided = _decided_origin.set(origin)
        try:
            await self.app(scope, watched_receive, guarded_send)  # type: ignore[arg-type]
        except Exception:
            log.exception("Unhandled exception escaped the app on %s", _where(scope))
            if state["started"]:
                raise  # part of the response is out: let the server abort the connection
            await send_error(500, [])
            return
        finally:
            _decided_origin.reset(decided)
        if not state["started"] and state["disconnected"]:
            # The client went away and Quart cancelled the view: nobody to answer, no error.
            log.info("The client disconnected before the response on %s", _where(scope))
        elif not state["started"]:
            log.error("The app returned no response on %s", _where(scope))
            await send_error(500, [])

    async def _websocket(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """A handshake answered with an HTTP response (a JSON error: 404 for an unknown
        path, 403 for a refused origin, ...) carries the CORS headers of its origin like any
        HTTP answer (none for an origin that is not allowed); an accepted socket is
        untouched. Whether a handshake is accepted is not decided here."""
        origins = _header_values(scope["headers"], b"origin")
        expected = self._expected_headers(self.config.allowed_origin(origins) if origins else None)

        async def send_with_cors(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "websocket.http.response.start":
                others, _, vary = _split_cors_headers(message.get("headers", []))
                merged_vary, _ = self._merged_vary(vary)
                headers = [*others, *expected, (b"vary", merged_vary)]
                message = {**message, "headers": headers}
            await send(message)  # type: ignore[arg-type]

        await self.app(scope, receive, send_with_cors)  # type: ignore[arg-type]

    async def _answer_preflight(
        self,
        scope: Scope,
        send: ASGISendCallable,
        origins: list[bytes],
        origin: str | None,
        requested_method: list[bytes],
        where: str,
    ) -> None:
        requested_headers = b", ".join(
            _header_values(scope["headers"], _REQUEST_HEADERS_BYTES)
        ).decode("latin-1")
        reason = self.config.preflight_rejection(
            origin, b", ".join(requested_method).decode("latin-1"), requested_headers
        )
        vary = (b"vary", merge_vary([], *PREFLIGHT_VARY).encode())
        if reason is None:
            assert origin is not None
            headers = [(k.encode(), v.encode()) for k, v in self.config.preflight_headers(origin)]
            await send({"type": "http.response.start", "status": 204, "headers": [*headers, vary]})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        log.warning(
            "CORS preflight rejected: %s (origin=%s, method=%s, headers=%s, %s)",
            reason,
            _log_value(b", ".join(origins).decode("latin-1")),
            _log_value(b", ".join(requested_method).decode("latin-1")),
            _log_value(requested_headers),
            where,
        )
        body = error_body_bytes(403, f"CORS preflight rejected: {reason} not allowed.")
        await _send_json(send, 403, [vary], body)

    def _corrected(
        self,
        headers: list[tuple[bytes, bytes]],
        expected: tuple[tuple[bytes, bytes], ...],
        scope: Scope,
        status: int,
    ) -> list[tuple[bytes, bytes]]:
        """``headers`` with exactly the ``expected`` CORS headers and ``Vary: Origin``; a
        WARNING when they were not so already. One pass; text is decoded only for Vary and
        for the warning."""
        others, present, vary = _split_cors_headers(headers)
        merged_vary, varies_on_origin = self._merged_vary(vary)
        if sorted(present) != sorted(expected) or not varies_on_origin:
            log.warning(
                "CORS safety net corrected headers on %s (status %s): had %s%s, set %s",
                _where(scope),
                status,
                sorted((k.decode("latin-1"), v.decode("latin-1")) for k, v in present),
                "" if varies_on_origin else " and no Vary: Origin",
                sorted((k.decode("latin-1"), v.decode("latin-1")) for k, v in expected),
            )
        return [*others, *expected, (b"vary", merged_vary)]
