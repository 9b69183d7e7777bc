"""Hypercorn's access log without its per-request dictionary of every atom.

Hypercorn 0.18 builds, for each request, a dict holding every atom its access-log format
language knows: one entry per request header, per response header and per environment
variable (``os.environ`` walked on every request), a strftime, an ``HTTPStatus`` look-up...
although ``hypercorn.toml``'s format uses seven of them (issue 12: part of the fixed cost of
every request). :class:`LazyAccessLogAtoms` computes only the atoms the format asks for; any
atom it has no fast path for comes from Hypercorn's own ``AccessLogAtoms``, built once for
that line, so every format gives the same line as with Hypercorn's logger.

``python -m slyker serve`` installs :class:`AccessLogger` (``Config.logger_class``). With
``ACCESS_LOG_FLUSH_SECONDS`` > 0 (default 1) the access log is buffered, like nginx's
``access_log ... buffer= flush=``: Hypercorn's access handler is wrapped by
:class:`BufferedAccessHandler`, which writes what waits at most that many seconds later (a
timer on the event loop), when 64 KiB wait, and when the worker stops (``serve.py`` flushes
it; ``logging.shutdown`` at exit too). While the access logger is Hypercorn's own (one
handler, no filters), the line is formatted directly, in the very format Hypercorn's handler
would give it, without a ``LogRecord``. Error logs are never buffered.

Done once instead of per request (issue 12): the format is compiled at start-up
(:func:`compile_access_format`: the atoms it uses, each header list scanned once for every
header the format names, one ``%`` of a tuple), and the line's prefix (date, process id,
level) is made once per second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from hypercorn.config import Config
from hypercorn.logging import AccessLogAtoms, Logger

ACCESS_LOGGER_NAME = "hypercorn.access"
BUFFER_LIMIT = 64 * 1024  # characters waiting before they are written without the timer
# Hypercorn's access-log line (its handler's formatter), which the direct line reproduces;
# a handler whose formatter gives anything else goes through ``LogRecord``s.
HYPERCORN_DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"


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


# One access line from Hypercorn's (request scope, response summary, request time).
Render = Callable[[Any, Any, float], str]
# In a %-format: a named string conversion, a literal %, or any other conversion.
_CONVERSION = re.compile(r"%\(([^)]*)\)s|%%|%")
_PLAIN_ATOMS = frozenset({"h", "r", "s", "b", "B", "D", "a"})
# Atom -> the header (lower-case bytes) whose last value it is: request ("i"), response ("o").
_HEADER_ATOMS = {"a": ("i", b"user-agent"), "b": ("o", b"content-length")}
_HEADER_ATOMS["B"] = _HEADER_ATOMS["b"]


def compile_access_format(log_format: str) -> Render | None:
    """A function giving ``log_format % LazyAccessLogAtoms(request, response, time)``, with
    what that does per request worked out once: which atoms, which headers (each header list
    is scanned once, for all of them). None when the format uses anything else (another
    conversion, an atom without a fast path): :class:`LazyAccessLogAtoms` serves those."""
    keys: list[str] = []
    for match in _CONVERSION.finditer(log_format):
        if match.group(0) == "%%":
            continue
        key = match.group(1)
        if key is None:  # %d, %(x)r...: only plain named strings are compiled
            return None
        if (key.startswith("{") and key.endswith(("}i", "}o"))) or key in _PLAIN_ATOMS:
            keys.append(key)
        else:
            return None
    template = _CONVERSION.sub(lambda m: "%%" if m.group(0) == "%%" else "%s", log_format)
    # Per atom: ("i"/"o", header name) for a header, else the atom itself.
    plan: list[tuple[str, bytes | None]] = []
    for key in keys:
        if key.startswith("{"):
            plan.append((key[-1], key[1:-2].lower().encode("latin1")))
        elif key in _HEADER_ATOMS:
            plan.append(_HEADER_ATOMS[key])
        else:
            plan.append((key, None))
    request_names = frozenset(name for side, name in plan if side == "i")
    response_names = frozenset(name for side, name in plan if side == "o")

    def render(request: Any, response: Any, request_time: float) -> str:
        found_in: dict[bytes, bytes] = {}
        if request_names:
            for key, value in request["headers"]:
                key = key.lower()
                if key in request_names:
                    found_in[key] = value  # the last value wins, as in Hypercorn's dict
        found_out: dict[bytes, bytes] = {}
        if response_names and response is not None:
            for key, value in response.get("headers", ()):
                key = key.lower()
                if key in response_names:
                    found_out[key] = value
        values: list[Any] = []
        for atom, name in plan:
            if atom == "i":
                value = found_in.get(name)  # type: ignore[arg-type]
                values.append("-" if value is None else value.decode("latin1"))
            elif atom == "o":
                value = None if response is None else found_out.get(name)  # type: ignore[arg-type]
                values.append("-" if value is None else value.decode("latin1"))
            elif atom == "s":
                values.append("-" if response is None else str(response["status"]))
            elif atom == "D":
                values.append(int(request_time * 1_000_000))
            elif atom == "r":
                method = request["method"] if request["type"] == "http" else "GET"
                values.append(f"{method} {request['path']} {request.get('http_version', 'ws')}")
            else:  # "h"
                client = request.get("client")
                if client is not None and len(client) == 2:
                    values.append(f"{client[0]}:{client[1]}")
                else:  # no peer, a Unix socket: whatever Hypercorn's atoms say
                    values.append(AccessLogAtoms(request, response, request_time)["h"])
        return template % tuple(values)

    return render


class BufferedAccessHandler(logging.Handler):
    """Hypercorn's access-log handler (a ``StreamHandler`` or ``FileHandler``), its lines
    kept in memory and written ``flush_seconds`` after the first one waiting (a timer on the
    running event loop), once ``BUFFER_LIMIT`` characters wait, on :meth:`flush` and on
    :meth:`close`. ``flush_seconds`` 0 writes every line at once."""

    def __init__(self, inner: logging.StreamHandler[Any], flush_seconds: float) -> None:
        super().__init__(inner.level)
        self.inner = inner
        self.flush_seconds = flush_seconds
        self.setFormatter(inner.formatter)
        self._waiting: list[str] = []
        self._waiting_size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1  # the second _prefix was made for
        self._prefix = ""  # "[date] [pid] [INFO] " of that second
        # The direct line is only valid while the formatter gives what it would give: asked
        # once, with a record made as logger.info makes one.
        probe = logging.LogRecord(ACCESS_LOGGER_NAME, logging.INFO, "", 0, "probe %s", ("x",), None)
        try:
            expected = inner.format(probe) if inner.formatter is not None else None
        except Exception:
            expected = None
        self.formats_like_hypercorn = expected == self.line("probe x", probe.created)

    def line(self, message: str, created: float) -> str:
        """What Hypercorn's formatter makes of an INFO record of ``message`` at ``created``."""
        second = int(created)
        if second != self._second:  # date and process id: once a second, not per line
            asctime = time.strftime(HYPERCORN_DATE_FORMAT, time.localtime(created))
            self._prefix = f"{asctime} [{os.getpid()}] [INFO] "
            self._second = second
        return self._prefix + message

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # as StreamHandler.emit does
            self.handleError(record)
            return
        self.write(text)

    def write(self, text: str) -> None:
        """Keep one formatted line (without its newline); write it now or later."""
        with self.lock:  # type: ignore[union-attr]
            self._waiting.append(text)  # the newlines are added when written
            self._waiting_size += len(text) + 1
            if self.flush_seconds <= 0 or self._waiting_size >= BUFFER_LIMIT:
                self._write_waiting()
                return
            if self._timer is not None:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop here (a thread, a script): no timer to set
                self._write_waiting()
                return
            self._timer = loop.call_later(self.flush_seconds, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_waiting()

    def _write_waiting(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiting:
            return
        text = "\n".join(self._waiting) + "\n"
        self._waiting.clear()
        self._waiting_size = 0
        stream = self.inner.stream
        if stream is None:  # a FileHandler closed by someone else
            return
        try:
            stream.write(text)
            stream.flush()
        except Exception:  # a full disk, a closed pipe: say so, as logging does, and go on
            if logging.raiseExceptions and sys.stderr is not None:
                sys.stderr.write(f"--- access log: {len(text)} characters not written\n")

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_waiting()
            self.inner.close()
            super().close()


_BUFFERS_LOCK = threading.Lock()


def _buffer_access_handler(
    logger: logging.Logger, flush_seconds: float
) -> BufferedAccessHandler | None:
    """Wrap the access logger's handler as Hypercorn made it (one ``StreamHandler``)."""
    with _BUFFERS_LOCK:
        handlers = logger.handlers
        if len(handlers) != 1:
            return None
        if isinstance(handlers[0], BufferedAccessHandler):  # a second Logger for the same name
            handlers[0].close()
            return None
        if type(handlers[0]) not in (logging.StreamHandler, logging.FileHandler):
            return None
        buffered = BufferedAccessHandler(handlers[0], flush_seconds)  # type: ignore[arg-type]
        logger.handlers = [buffered]
        return buffered


def flush_access_log() -> None:
    """Write every buffered access line now (a worker stopping)."""
    for handler in logging.getLogger(ACCESS_LOGGER_NAME).handlers:
        handler.flush()


class AccessLogger(Logger):
    """Hypercorn's logger with :class:`LazyAccessLogAtoms` for the access log, the access
    handler buffered (:class:`BufferedAccessHandler`; ``Config.access_log_flush_seconds``,
    set by ``python -m slyker serve`` from ACCESS_LOG_FLUSH_SECONDS; 0 or absent: each line
    at once), and the line made directly: no ``LogRecord`` while the logger is Hypercorn's
    own, else a record made without ``findCaller`` (``logger.info`` would walk frames for
    the caller's file and line on every request, which no access-log format shows). Levels,
    filters and handlers apply as with ``logger.info``."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.buffered: BufferedAccessHandler | None = None
        logger = self.access_logger
        flush_seconds = float(getattr(config, "access_log_flush_seconds", 0.0))
        if (
            logger is not None
            and isinstance(config.accesslog, str)  # Hypercorn made the logger and its handler
            and config.logconfig is None
            and config.logconfig_dict is None
        ):
            self.buffered = _buffer_access_handler(logger, flush_seconds)
        # Compiled once; not when a subclass makes its own atoms (they must be used).
        self.render: Render | None = None
        if type(self).atoms is AccessLogger.atoms:
            self.render = compile_access_format(self.access_log_format)

    def atoms(self, request: Any, response: Any, request_time: float) -> Mapping[str, Any]:
        return LazyAccessLogAtoms(request, response, request_time)

    async def access(self, request: Any, response: Any, request_time: float) -> None:
        logger = self.access_logger
        if logger is None or not logger.isEnabledFor(logging.INFO):
            return
        buffered = self.buffered
        if (
            buffered is not None
            and buffered.formats_like_hypercorn
            and not logger.filters
            and not buffered.filters
            and not logger.propagate
            and buffered.level <= logging.INFO
            and len(logger.handlers) == 1
            and logger.handlers[0] is buffered
        ):
            render = self.render
            if render is not None:
                message = render(request, response, request_time)
            else:
                message = self.access_log_format % self.atoms(request, response, request_time)
            buffered.write(buffered.line(message, time.time()))
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
