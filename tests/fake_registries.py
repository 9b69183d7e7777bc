"""Registries the domain-check tests start on 127.0.0.1: an RDAP server (HTTP/1.1, RFC 9082
queries, RFC 9083 answers as application/rdap+json), a registry lookup page (ZISPA's kind,
for .co.zw) on the same HTTP server, and a WHOIS server (RFC 3912: one line ending in CRLF
in, text out, then close). slyker's real client code talks to them over the network.

Each counts what reached it: ``hits`` per name, and ``max_active``, the most connections it
held at once. A name's behaviour is set in ``behaviours``; names not listed are free.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

HOST = "127.0.0.1"
RDAP_PATH = "/rdap/"
LOOKUP_PATH = "/cgi-bin/domain_lookup.pl"

# What a name does at a fake registry.
REGISTERED = "registered"
FREE = "free"
HANG = "hang"  # accept, read the query, never answer
GARBAGE = "garbage"  # an answer that is not one: HTML for RDAP, random bytes for WHOIS
EMPTY = "empty"  # close without a byte
HTML_404 = "html-404"  # a web server's own 404 page (a wrong RDAP base URL)
SERVER_ERROR = "server-error"  # HTTP 503
OTHER_NAME = "other-name"  # an RDAP domain object about another name
HUGE = "huge"  # an answer far larger than any record


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class _FakeServer:
    behaviours: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before every answer (to see lookups overlap)
    hits: Counter[str] = field(default_factory=Counter)
    active: int = 0
    max_active: int = 0
    connections: int = 0  # TCP connections accepted
    closed: int = 0  # ... and closed (by either side)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when none is open
    port: int = 0
    _server: asyncio.base_events.Server | None = None
    _handlers: set[asyncio.Task[Any]] = field(default_factory=set)

    async def __aenter__(self) -> Any:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        self.active += 1
        self.idle.clear()
        self.max_active = max(self.max_active, self.active)
        try:
            await self.serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client gave up (a timeout): nothing to answer
        finally:
            self.active -= 1
            self.closed += 1
            if self.active == 0:
                self.idle.set()
            writer.close()
            self._handlers.discard(task)

    async def answer_after_delay(self, name: str) -> str:
        self.hits[name] += 1
        behaviour = self.behaviours.get(name, FREE)
        if behaviour == HANG:
            await asyncio.Event().wait()  # until the test stops the server
        if self.delay:
            await asyncio.sleep(self.delay)
        return behaviour

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


@dataclass
class FakeHTTPRegistry(_FakeServer):
    """RDAP at ``rdap_url`` and a registry lookup page at ``lookup_url`` (name appended).
    With ``keep_alive`` a connection answers request after request until the client closes
    it (as real registries' HTTP/1.1 servers do); else one answer, then close."""

    keep_alive: bool = False

    @property
    def rdap_url(self) -> str:
        return f"http://{HOST}:{self.port}{RDAP_PATH}"

    @property
    def lookup_url(self) -> str:
        return f"http://{HOST}:{self.port}{LOOKUP_PATH}?s="

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.serve_one(reader, writer)
        while self.keep_alive:
            try:
                await self.serve_one(reader, writer)
            except asyncio.IncompleteReadError:
                return  # the client closed the connection

    async def serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        url = urlsplit(target)
        if method == "GET" and url.path.startswith(f"{RDAP_PATH}domain/"):
            name = unquote(url.path.removeprefix(f"{RDAP_PATH}domain/"))
            await self._rdap(writer, name, await self.answer_after_delay(name))
        elif method == "GET" and url.path == LOOKUP_PATH:
            name = parse_qs(url.query).get("s", [""])[0]
            await self._lookup_page(writer, name, await self.answer_after_delay(name))
        else:
            await respond(
                writer, 404, b"<h1>Not Found</h1>", "text/html", keep_alive=self.keep_alive
            )

    async def _rdap(self, writer: asyncio.StreamWriter, name: str, behaviour: str) -> None:
        if behaviour in (REGISTERED, OTHER_NAME):
            ldh = name if behaviour == REGISTERED else f"not-{name}"
            await respond(writer, 200, rdap_json(domain_object(ldh)), keep_alive=self.keep_alive)
        elif behaviour == GARBAGE:
            await respond(
                writer,
                200,
                b"<html><body>Welcome to nginx!</body></html>",
                "text/html",
                keep_alive=self.keep_alive,
            )
        elif behaviour == HTML_404:
            await respond(
                writer,
                404,
                b"<html><body>404 Not Found</body></html>",
                "text/html",
                keep_alive=self.keep_alive,
            )
        elif behaviour == SERVER_ERROR:
            await respond(
                writer,
                503,
                rdap_json(rdap_error(503, "Service Unavailable")),
                keep_alive=self.keep_alive,
            )
        elif behaviour == EMPTY:
            return
        elif behaviour == HUGE:
            record = domain_object(name) | {"remarks": [{"description": ["x" * 400_000]}]}
            await respond(writer, 200, rdap_json(record), keep_alive=self.keep_alive)
        else:
            await respond(
                writer, 404, rdap_json(rdap_error(404, "Not Found")), keep_alive=self.keep_alive
            )

    async def _lookup_page(self, writer: asyncio.StreamWriter, name: str, behaviour: str) -> None:
        if behaviour == REGISTERED:
            text = f"<p>The domain <b>{name}</b> is already registered.</p>"
        elif behaviour == GARBAGE:
            text = "<p>Database temporarily unavailable, please try later</p>"
        else:
            text = f"<p>The domain <b>{name}</b> is available for registration.</p>"
        page = f'<html><body><form><input name="s" value="{name}"></form>{text}</body></html>'
        await respond(
            writer, 200, page.encode(), "text/html; charset=utf-8", keep_alive=self.keep_alive
        )


class FakeWhois(_FakeServer):
    """A WHOIS server: ``address`` is what WHOIS_SERVERS takes (``host:port``)."""

    queries: list[bytes]

    async def __aenter__(self) -> FakeWhois:
        self.queries = []
        return await super().__aenter__()  # type: ignore[no-any-return]

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readuntil(b"\r\n")
        self.queries.append(line)
        name = line[:-2].decode("ascii", errors="replace")
        behaviour = await self.answer_after_delay(name)
        if behaviour == REGISTERED:
            writer.write(whois_record(name).encode())
        elif behaviour == GARBAGE:
            writer.write(os.urandom(512).replace(name.encode(), b""))
        elif behaviour == HUGE:
            writer.write(b"% comment\r\n" * 40_000)
        elif behaviour == FREE:
            writer.write(whois_no_match(name).encode())
        await writer.drain()


def whois_record(name: str) -> str:
    return (
        f"   Domain Name: {name.upper()}\r\n"
        "   Registry Domain ID: 2336799_DOMAIN_COM-VRSN\r\n"
        "   Registrar: Example Registrar, Inc.\r\n"
        "   Creation Date: 1995-08-14T04:00:00Z\r\n"
        "   Name Server: A.IANA-SERVERS.NET\r\n"
        ">>> Last update of whois database: 2025-01-01T00:00:00Z <<<\r\n"
    )


def whois_no_match(name: str) -> str:
    if name.endswith(".zw"):
        return f"{name} is available for registration\r\n"
    return f'No match for "{name.upper()}".\r\n>>> Last update of whois database <<<\r\n'


def domain_object(ldh_name: str) -> dict[str, Any]:
    """An RFC 9083 domain object, as registries send it (abridged)."""
    return {
        "rdapConformance": ["rdap_level_0"],
        "objectClassName": "domain",
        "handle": "2336799_DOMAIN_COM-VRSN",
        "ldhName": ldh_name.upper(),
        "status": ["client transfer prohibited"],
        "events": [{"eventAction": "registration", "eventDate": "1995-08-14T04:00:00Z"}],
    }


def rdap_error(code: int, title: str) -> dict[str, Any]:
    return {"rdapConformance": ["rdap_level_0"], "errorCode": code, "title": title}


def rdap_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


async def respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    content_type: str = "application/rdap+json",
    *,
    keep_alive: bool = False,
) -> None:
    reasons = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}
    head = (
        f"HTTP/1.1 {status} {reasons.get(status, 'Status')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
