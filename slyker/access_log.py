"""Hypercorn's access log without its per-request dictionary of every atom.

Hypercorn 0.18 builds, for each request, a dict holding every atom its access-log format
language knows: one entry per request header, per response header and per environment
variable (``os.environ`` walked on every request), a strftime, an ``HTTPStatus`` look-up...
although ``hypercorn.toml``'s format uses seven of them (issue 12: part of the fixed cost of
every request). :class:`LazyAccessLogAtoms` computes only the atoms the format asks for; any
atom it has no fast path for comes from Hypercorn's own ``AccessLogAtoms``, built once for
that line, so every format gives the same line as with Hypercorn's logger.

``python -m slyker serve`` installs :class:`AccessLogger` (``Config.logger_class``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from hypercorn.logging import AccessLogAtoms, Logger


def _header(headers: Any, name: bytes) -> str:
    """The last value of header ``name`` (lower-case bytes), as Hypercorn's dict keeps it."""
    found = "-"
    for key, value in headers:
        if key.lower() == name:
            found = value.decode("latin1")
    return found


class LazyAccessLogAtoms(Mapping[str, Any]):
    """The atoms of one access-log line, each computed when the format asks for it."""

    __slots__ = ("_full", "_request", "_request_time", "_response")

    def __init__(self, request: Any, response: Any, request_time: float) -> None:
        self._request = request
        self._response = response
        self._request_time = request_time
        self._full: AccessLogAtoms | None = None

    def _all(self) -> AccessLogAtoms:
        if self._full is None:
            self._full = AccessLogAtoms(self._request, self._response, self._request_time)
        return self._full

    def __getitem__(self, key: str) -> Any:
        request = self._request
        response = self._response
        if key.startswith("{"):
            name = key[1:-2].lower().encode("latin1")
            if key.endswith("}i"):
                return _header(request["headers"], name)
            if key.endswith("}o"):
                return "-" if response is None else _header(response.get("headers", []), name)
            return self._all()[key]
        if key == "h":
            client = request.get("client")
            if client is not None and len(client) == 2:
                return f"{client[0]}:{client[1]}"
        elif key == "r":
            method = request["method"] if request["type"] == "http" else "GET"
            return f"{method} {request['path']} {request.get('http_version', 'ws')}"
        elif key == "s":
            return "-" if response is None else str(response["status"])
        elif key in ("b", "B"):
            return (
                "-" if response is None else _header(response.get("headers", []), b"content-length")
            )
        elif key == "D":
            return int(self._request_time * 1_000_000)
        elif key == "a":
            return _header(request["headers"], b"user-agent")
        return self._all()[key]

    def __bool__(self) -> bool:
        return True  # logging only treats a non-empty mapping as the format's arguments

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


class AccessLogger(Logger):
    """Hypercorn's logger with :class:`LazyAccessLogAtoms` for the access log, and the line's
    record made directly: ``logger.info`` would look for its caller's file and line on
    every request (``findCaller``: frames walked, paths normalised), which no access-log
    format shows. Levels, filters and handlers apply as with ``logger.info``."""

    def atoms(self, request: Any, response: Any, request_time: float) -> Mapping[str, Any]:
        return LazyAccessLogAtoms(request, response, request_time)

    async def access(self, request: Any, response: Any, request_time: float) -> None:
        logger = self.access_logger
        if logger is None or not logger.isEnabledFor(logging.INFO):
            return
        record = logger.makeRecord(
            logger.name,
            logging.INFO,
            "(access log)",
            0,
            self.access_log_format,
            (self.atoms(request, response, request_time),),
            None,
        )
        logger.handle(record)
