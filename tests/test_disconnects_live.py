"""Abandoned requests against a real Hypercorn, served as ``./dev run`` does
(``python -m slyker serve --config hypercorn.toml``).

The outage: on a fresh worker with SQLite, if the first request that touched the database was
abandoned by its client — a raw ``GET /api/services/hosting-products/`` whose socket closed at
once, or a chat handshake dropped right after its 101 — every later database request of that
worker hung (curl gave up, ``/ready/`` failed after 90 s) and chat greeted nobody, until a
restart. Each variant gets a freshly started server of its own (its first database request is
the abandoned one); afterwards a database request, ``/ready/`` and a chat greeting must each
answer within a few seconds, then again after a burst of further abandoned requests, and the
server's log must hold no error. Runs on SQLite, and on PostgreSQL with
SLYKER_TEST_DATABASE=postgres (a database of its own per server).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

from tests.conftest import POSTGRES_URL, TEST_DATABASE, postgres_admin
from tests.live_servers import (
    HOST,
    Hypercorn,
    LiveServer,
    migrate,
    slyker_env,
    start_hypercorns,
    stop_servers,
)

ANSWER_WITHIN = 4.0  # each later request; before the fix they never answered
PRODUCTS = "/api/services/hosting-products/"
CHAT = "/ws/chat/sales/"
ORIGIN = "http://localhost:3000"  # a development default of CORS_ALLOWED_ORIGINS
GREETING = "Connected to Slyker Tech Live Support"


# --- ways to abandon a request ---------------------------------------------------------------


def _request_bytes(path: str, extra: list[bytes] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1".encode(), f"Host: {HOST}".encode(), *(extra or [])]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _websocket_request(path: str) -> bytes:
    return _request_bytes(
        path,
        [
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)),
            b"Sec-WebSocket-Version: 13",
            b"Origin: " + ORIGIN.encode(),
        ],
    )


def http_closed_at_once(port: int) -> None:
    """The request, then the socket closed without reading anything."""
    with socket.create_connection((HOST, port), timeout=ANSWER_WITHIN) as sock:
        sock.sendall(_request_bytes(PRODUCTS))


def http_reset_at_once(port: int) -> None:
    """The request, then a TCP reset (SO_LINGER 0) instead of a polite close."""
    sock = socket.create_connection((HOST, port), timeout=ANSWER_WITHIN)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.sendall(_request_bytes(PRODUCTS))
    sock.close()


def websocket_closed_before_101(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=ANSWER_WITHIN) as sock:
        sock.sendall(_websocket_request(CHAT))


def websocket_dropped_after_101(port: int) -> None:
    """The handshake, its 101 read, then the socket closed (no close frame)."""
    with socket.create_connection((HOST, port), timeout=ANSWER_WITHIN) as sock:
        sock.sendall(_websocket_request(CHAT))
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
        assert received.startswith(b"HTTP/1.1 101"), received[:200]


ABANDON: dict[str, Callable[[int], None]] = {
    "http-closed-at-once": http_closed_at_once,
    "http-reset-at-once": http_reset_at_once,
    "websocket-closed-before-101": websocket_closed_before_101,
    "websocket-dropped-after-101": websocket_dropped_after_101,
}


# --- servers ---------------------------------------------------------------------------------


def _run_async(coroutine: Any) -> Any:
    """Run a coroutine on a loop of its own, in another thread (never the tests' loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=30)


@dataclass
class Fleet:
    servers: dict[str, LiveServer]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One fresh Hypercorn per variant, each on a migrated database of its own, started
    together; /health/ (which touches no database) is all they have answered."""
    base = tmp_path_factory.mktemp("disconnects")
    databases: list[str] = []
    specs = []
    try:
        for index, name in enumerate(ABANDON):
            settings = {"DATA_DIR": str(base / name / "data")}
            if TEST_DATABASE == "postgres":
                database = f"slyker_disconnects_{os.getpid()}_{index}"
                _run_async(
                    postgres_admin(
                        f'DROP DATABASE IF EXISTS "{database}"', f'CREATE DATABASE "{database}"'
                    )
                )
                databases.append(database)
                settings["DATABASE_URL"] = POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}"
            env = slyker_env(**settings)
            migrate(env)
            specs.append(Hypercorn(name, env, args=("--config", "hypercorn.toml"), supervised=True))
        servers = start_hypercorns(specs, base)
        try:
            yield Fleet(dict(zip(ABANDON, servers, strict=True)))
        finally:
            stop_servers(servers)
    finally:
        for database in databases:
            _run_async(postgres_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


# --- what must keep working ------------------------------------------------------------------


def timed_get(server: LiveServer, path: str) -> tuple[int, Any, float]:
    started = time.monotonic()
    connection = server.connect()
    connection.timeout = ANSWER_WITHIN
    try:
        connection.request("GET", path, headers={"Origin": ORIGIN})
        response = connection.getresponse()
        body = response.read()
    except TimeoutError:
        pytest.fail(f"GET {path} did not answer within {ANSWER_WITHIN} s\n{server.log()}")
    finally:
        connection.close()
    return response.status, json.loads(body), time.monotonic() - started


async def _greeting(server: LiveServer) -> list[dict[str, Any]]:
    async with connect(
        server.ws_url + CHAT,
        origin=Origin(ORIGIN),
        proxy=None,
        open_timeout=ANSWER_WITHIN,
        close_timeout=1,
    ) as ws:
        return [json.loads(await asyncio.wait_for(ws.recv(), ANSWER_WITHIN)) for _ in range(2)]


def assert_serving(server: LiveServer) -> None:
    status, body, _ = timed_get(server, PRODUCTS)
    assert status == 200 and "results" in body, f"{status} {body}\n{server.log()}"
    status, body, _ = timed_get(server, "/ready/")
    assert (status, body["checks"]["database"]) == (200, True), f"{body}\n{server.log()}"
    frames = _run_async(_greeting(server))
    assert frames[0]["type"] == "connection_established", f"{frames}\n{server.log()}"
    assert frames[1] == {"type": "system", "message": GREETING}, f"{frames}\n{server.log()}"


def assert_no_errors_logged(server: LiveServer) -> None:
    log = server.log(200_000)
    problems = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    assert not problems, "\n".join(problems) + f"\n{server.log()}"


@pytest.mark.parametrize("variant", list(ABANDON))
def test_an_abandoned_first_request_leaves_the_worker_serving(fleet: Fleet, variant: str) -> None:
    server = fleet.servers[variant]
    ABANDON[variant](server.port)
    assert_serving(server)
    # ... and a burst of every kind of abandoned request, then the same checks.
    for _round in range(5):
        for abandon in ABANDON.values():
            abandon(server.port)
    assert_serving(server)
    assert_no_errors_logged(server)
