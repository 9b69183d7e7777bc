"""Behind a trusted proxy (nginx): the client address, scheme and host from its X-Forwarded-*.

Hypercorn's ``ProxyFixMiddleware`` (legacy mode) copies ``X-Forwarded-Proto`` into the scope's
``scheme`` verbatim, for WebSocket scopes too. nginx sends ``$scheme`` (``http``/``https``),
and a WebSocket scope with scheme ``https`` makes Werkzeug's routing treat the handshake as a
plain HTTP request to a WebSocket route, which Quart answers with 400: every chat handshake
behind the documented proxy failed. ASGI says a WebSocket scope's scheme is ``ws`` or ``wss``,
so this middleware maps the proxy's value onto the scope type: http/ws → ``ws``, https/wss →
``wss`` for a WebSocket, ``http``/``https`` for HTTP. A value that is none of these is not
trusted: the scope keeps the scheme of the connection itself.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from hypercorn.middleware import ProxyFixMiddleware
from hypercorn.typing import ASGIFramework

from slyker.errors import send_asgi_error

log = logging.getLogger(__name__)

# Forwarded scheme -> is the client's connection secure?
_SECURE = {"http": False, "ws": False, "https": True, "wss": True}
# (scope type, secure) -> the scope's scheme
_SCHEMES = {
    ("http", False): "http",
    ("http", True): "https",
    ("websocket", False): "ws",
    ("websocket", True): "wss",
}


class TrustedProxyMiddleware:
    """``ProxyFixMiddleware(mode="legacy", trusted_hops=...)`` with an ASGI-valid scheme."""

    def __init__(self, app: ASGIFramework, trusted_hops: int) -> None:
        self.app = app
        self.trusted_hops = trusted_hops

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection_scheme = scope.get("scheme")

        async def with_valid_scheme(fixed: Any, receive: Any, send: Any) -> None:
            # ``fixed`` is ProxyFixMiddleware's deep copy, with the forwarded scheme (if any).
            fixed["scheme"] = scope_scheme(fixed["type"], fixed.get("scheme"), connection_scheme)
            await self.app(fixed, receive, send)

        proxy_fix = ProxyFixMiddleware(
            with_valid_scheme,  # type: ignore[arg-type]
            mode="legacy",
            trusted_hops=self.trusted_hops,
        )
        await proxy_fix(scope, receive, send)


def scope_scheme(scope_type: str, forwarded: Any, connection: Any) -> str:
    """The scheme an ASGI scope of ``scope_type`` must carry: secure iff the forwarded scheme
    says so, or (when it is missing or unknown) iff the connection itself is."""
    secure = _SECURE.get(str(forwarded).lower())
    if secure is None:
        secure = _SECURE.get(str(connection).lower(), False)
    return _SCHEMES[(scope_type, secure)]


H2C_REFUSED_MESSAGE = "Upgrade to h2c is not accepted behind the proxy."
MAX_TRACKED_TUNNELS = 4096


class H2CUpgradeGuard:
    """Behind a proxy, refuse the requests of an ``Upgrade: h2c`` tunnel.

    Hypercorn answers ``Upgrade: h2c`` with ``101 Switching Protocols`` before the app is
    called, and has no setting to stop it. A proxy that forwards the header (docker/nginx.conf
    once did on every location) then relays raw bytes both ways: the client speaks HTTP/2 to
    slyker directly, past the proxy's location rules (``/docs`` answered) and with its own
    ``X-Forwarded-For`` (which ``TRUSTED_PROXY_HOPS`` trusts, so the login rate limit keyed on
    a new address every time). The upgraded request arrives as HTTP/2 stream 1 still carrying
    its ``Upgrade: h2c`` header: it is refused (400), its connection (the
    server's peer and local address) is remembered, and every later HTTP/2 request on that
    connection is refused too. An ``Upgrade: h2c`` request Hypercorn kept on HTTP/1.1 (it had
    a body) is refused as well. HTTP/2 a proxy speaks with prior knowledge (no upgrade) passes.
    """

    def __init__(self, app: ASGIFramework, max_tracked: int = MAX_TRACKED_TUNNELS) -> None:
        self.app = app
        self.max_tracked = max_tracked
        self.tunnels: OrderedDict[tuple[Any, Any], None] = OrderedDict()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client, server = scope.get("client"), scope.get("server")
        connection = (tuple(client) if client else None, tuple(server) if server else None)
        http2 = scope.get("http_version") == "2"
        if asks_for_h2c(scope["headers"]):
            if http2:
                self.tunnels[connection] = None
                while len(self.tunnels) > self.max_tracked:
                    self.tunnels.popitem(last=False)
            log.warning("Refused an h2c upgrade from %s (behind a proxy)", client)
            await send_asgi_error(scope, send, 400, H2C_REFUSED_MESSAGE, "h2c_refused")
            return
        if http2 and connection in self.tunnels:
            await send_asgi_error(scope, send, 400, H2C_REFUSED_MESSAGE, "h2c_refused")
            return
        await self.app(scope, receive, send)


def asks_for_h2c(headers: Any) -> bool:
    """An ``Upgrade`` header naming h2c (``HTTP2-Settings`` alone upgrades nothing)."""
    return any(
        name.lower() == b"upgrade"
        and any(token.strip().lower() == b"h2c" for token in value.split(b","))
        for name, value in headers
    )
