"""Headers every response carries, whichever layer made it.

``X-Content-Type-Options: nosniff``: a browser must not guess that a JSON body (an error
echoing a client's text, say) is HTML or script. It sits outside the CORS layer, so even
the responses the CORS safety net or the Host check make carry it.

The app adds them in the request-id layer's pass over the response headers
(``RequestIDMiddleware(..., security_headers=True)``, one send wrapper for both);
:class:`SecurityHeadersMiddleware` is the same rule as a layer of its own.
"""

from __future__ import annotations

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

_NOSNIFF = (b"x-content-type-options", b"nosniff")
SECURITY_HEADERS = (_NOSNIFF,)
SECURITY_HEADER_NAMES = frozenset(name for name, _value in SECURITY_HEADERS)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = [
                    (key, value)
                    for key, value in message.get("headers", [])
                    if key.lower() not in SECURITY_HEADER_NAMES
                ]
                message = {**message, "headers": [*headers, *SECURITY_HEADERS]}
            await send(message)  # type: ignore[arg-type]

        await self.app(scope, receive, send_with_headers)  # type: ignore[arg-type]
