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

from typing import Any

from hypercorn.middleware import ProxyFixMiddleware
from hypercorn.typing import ASGIFramework

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
