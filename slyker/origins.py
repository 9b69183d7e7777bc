"""The one origin policy: is this ``Origin`` allowed?

Used by the HTTP CORS layer, the CSRF check and (later) the WebSocket handshake, so that
every part of slyker gives the same answer for the same origin.

Canonical equivalence (documented in the README): scheme and host compare
case-insensitively and an explicit default port (80 for http, 443 for https) equals no
port, so ``https://SLYKERTECH.co.zw:443`` is the same origin as ``https://slykertech.co.zw``.
A request ``Origin`` must otherwise be exactly one serialised origin: no path (not even
``/``), query, fragment, userinfo, whitespace, list of values or non-ASCII character.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_ORIGIN_BYTES = 256
DEFAULT_PORTS = {"http": 80, "https": 443}
NULL_ORIGIN = "null"
WILDCARD = "*"

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ORIGIN_RE = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://"
    rf"(?P<host>{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE | re.ASCII,
)
_HOST_RE = re.compile(
    rf"(?P<host>{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?",
    re.IGNORECASE | re.ASCII,
)
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


class InvalidOrigin(ValueError):
    """A configured origin entry that is not ``scheme://host[:port]``."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int  # always explicit: the scheme's default port when the origin has none

    def serialise(self) -> str:
        if DEFAULT_PORTS.get(self.scheme) == self.port:
            return f"{self.scheme}://{self.host}"
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_origin(value: str | bytes | None) -> Origin | None:
    """Parse one request ``Origin`` value; ``None`` for anything that is not one origin."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not value.isascii() or len(value) > MAX_ORIGIN_BYTES:
        return None
    match = _ORIGIN_RE.fullmatch(value)
    if match is None:
        return None
    scheme = match["scheme"].lower()
    if scheme not in DEFAULT_PORTS:
        return None
    port = _port(match["port"], scheme)
    if port is None:
        return None
    return Origin(scheme, match["host"].lower(), port)


def canonicalise_entry(entry: str) -> str:
    """Canonical form of a configured origin (settings), or :class:`InvalidOrigin`.

    More forgiving than :func:`parse_origin` only in that a trailing ``/`` is dropped,
    because people paste origins with one into settings.
    """
    candidate = entry[:-1] if entry.endswith("/") else entry
    origin = parse_origin(candidate)
    if origin is None:
        raise InvalidOrigin(entry)
    return origin.serialise()


def _port(text: str | None, scheme: str) -> int | None:
    if text is None:
        return DEFAULT_PORTS[scheme]
    port = int(text)
    return port if 0 < port < 65536 else None


def host_matches(host: str, allowed_hosts: Iterable[str]) -> bool:
    """Django's ALLOWED_HOSTS rule: exact, ``.example.com`` for it and its subdomains, ``*``."""
    host = host.lower()
    for pattern in (pattern.lower() for pattern in allowed_hosts):
        if pattern == WILDCARD or host == pattern:
            return True
        if pattern.startswith(".") and (host == pattern[1:] or host.endswith(pattern)):
            return True
    return False


@dataclass(frozen=True)
class OriginPolicy:
    """Allowed origins, already validated and canonicalised by the settings loader."""

    allowed_origins: frozenset[str]
    allowed_regexes: tuple[re.Pattern[str], ...] = ()
    allow_all: bool = False  # the "*" entry, only possible without credentials
    allow_null: bool = False

    def is_allowed(self, value: str | bytes | None) -> bool:
        """True iff ``value`` is one well-formed origin that the configuration allows."""
        if self.allow_null and value in (NULL_ORIGIN, NULL_ORIGIN.encode()):
            return True
        origin = parse_origin(value)
        if origin is None:
            return False
        if self.allow_all:
            return True
        canonical = origin.serialise()
        return canonical in self.allowed_origins or any(
            regex.fullmatch(canonical) for regex in self.allowed_regexes
        )

    @staticmethod
    def is_same_host(
        value: str | bytes | None, host_header: str | None, allowed_hosts: Iterable[str]
    ) -> bool:
        """The origin's host:port equals the request's own ``Host``, a host in ALLOWED_HOSTS.

        Ports compare after defaulting both sides to the origin scheme's default port, so
        ``https://api.example.com`` matches ``Host: api.example.com`` and ``api.example.com:443``.
        The origin must be https (behind a TLS proxy the app cannot see the request's own
        scheme, and a plain-http page could be anyone's on the network), except on loopback.
        """
        origin = parse_origin(value)
        if origin is None or not host_header or not host_header.isascii():
            return False
        if origin.scheme != "https" and origin.host not in LOOPBACK_HOSTS:
            return False
        match = _HOST_RE.fullmatch(host_header.strip())
        if match is None:
            return False
        port = _port(match["port"], origin.scheme)
        return (
            match["host"].lower() == origin.host
            and port == origin.port
            and host_matches(origin.host, allowed_hosts)
        )
