"""Refuse requests addressed to a host the API is not served at (the ``Host`` header).

Werkzeug builds absolute URLs from ``Host``: the strict-slash redirect (``308 Location:
http://<Host>/...``) and the pagination links. A client-chosen ``Host: evil.com`` made
slyker hand out links to evil.com (cache poisoning, password-reset style phishing). So every
HTTP request and WebSocket handshake is checked before routing, against ``ALLOWED_HOSTS``
(Django's rule: exact names, ``.example.com`` for a domain and its subdomains, ``*``).

One exception keeps the container health check working: a loopback name (``localhost``,
``127.0.0.1``, ``[::1]``) from a loopback client — the machine itself, e.g. the image's
HEALTHCHECK calling ``http://127.0.0.1:8000/health/``. Behind a trusted proxy the client is
the address the proxy forwards, so nothing reaching nginx from outside passes this way.
With ``ALLOWED_HOSTS`` empty (the default without DEBUG) only that exception remains: the API
then answers the machine itself and nobody else, and says so at start-up.
"""

from __future__ import annotations

import ipaddress
import logging
import re

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

from slyker.errors import send_asgi_error
from slyker.origins import host_matches

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
# host[:port]: a DNS name or IPv4 address, or a bracketed IPv6 address; nothing else.
_HOST_HEADER_RE = re.compile(
    r"(?P<host>[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?|\[[0-9a-f:.]{2,45}\])(?::[0-9]{1,5})?"
)
HOST_REFUSED_MESSAGE = "This host is not served here."


def host_name(header: str | None) -> str | None:
    """The host name of a ``Host`` header value, lower-cased and without its port; None when
    the value is missing or not ``host[:port]``."""
    if header is None:
        return None
    match = _HOST_HEADER_RE.fullmatch(header.strip().lower())
    return match.group("host") if match else None


def is_loopback_client(client: object) -> bool:
    """The ASGI ``client``: unknown (None, an in-process test client) or a loopback address."""
    if not client:
        return True
    try:
        return ipaddress.ip_address(str(client[0])).is_loopback  # type: ignore[index]
    except (ValueError, TypeError, IndexError):
        return False


def host_allowed(header: str | None, allowed_hosts: tuple[str, ...], client: object) -> bool:
    host = host_name(header)
    if host is None:
        return False
    if allowed_hosts and host_matches(host, allowed_hosts):
        return True
    return host in LOOPBACK_HOSTS and is_loopback_client(client)


# Host header values seen recently that ALLOWED_HOSTS allows (whoever the client): a server
# is addressed by a few names, a bound keeps made-up ones from growing it.
_ALLOWED_CACHE_SIZE = 256


class AllowedHostsMiddleware:
    """400 (JSON, before routing) for a request or handshake with a ``Host`` not allowed.

    It sits inside the CORS layer, so the 400 carries the CORS headers of an allowed origin
    like every error, and inside the trusted-proxy layer, so it sees the forwarded host.
    """

    def __init__(self, app: ASGIFramework, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        # The answer for a Host value that ALLOWED_HOSTS itself allows does not depend on the
        # client: kept, so the usual request skips the parse and the match (issue 12).
        self._allowed_values: set[bytes] = set()

    def _allowed(self, values: list[bytes], client: object) -> bool:
        if len(values) != 1:
            return False
        if values[0] in self._allowed_values:
            return True
        header = values[0].decode("latin-1")
        if not host_allowed(header, self.allowed_hosts, client):
            return False
        host = host_name(header)
        if self.allowed_hosts and host is not None and host_matches(host, self.allowed_hosts):
            if len(self._allowed_values) >= _ALLOWED_CACHE_SIZE:
                self._allowed_values.clear()
            self._allowed_values.add(values[0])
        return True

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] in ("http", "websocket"):
            values = [value for name, value in scope["headers"] if name.lower() == b"host"]
            if not self._allowed(values, scope.get("client")):
                log.warning(
                    "Refused %s %s for Host %s (not in ALLOWED_HOSTS)",
                    scope["type"],
                    scope.get("path", ""),
                    repr(b", ".join(values))[:200],
                )
                await send_asgi_error(scope, send, 400, HOST_REFUSED_MESSAGE, "host_not_allowed")
                return
        await self.app(scope, receive, send)


def announce_allowed_hosts(allowed_hosts: tuple[str, ...]) -> None:
    if not allowed_hosts:
        log.warning(
            "ALLOWED_HOSTS is empty: only the machine itself (a loopback client with a "
            "loopback Host) is answered; set ALLOWED_HOSTS to the host names the API is "
            "served at (e.g. api.slykertech.co.zw)"
        )
