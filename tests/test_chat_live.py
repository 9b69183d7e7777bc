"""Live chat against real processes: Hypercorn serving ``slyker:create_app()``, a private
redis-server, and real WebSocket clients on loopback sockets.

1. The handshake's origin matrix, read from the raw HTTP status line: 101 for the allowed
   origins (exact, regex, same host), 403 for every bad origin of the foundation corpus
   (``tests/test_origins.py``) and for a missing ``Origin``, 404 for an unknown department.
2. Close codes 4001 / 4003 as a real client receives them (after a 101, so a browser sees them).
3. Two Hypercorn processes sharing one Redis and one database: a visitor on A and an agent on
   B talk; presence crosses processes.
4. Redis SIGKILLed mid-conversation: a reply stored while it is down reaches the visitor once
   Redis is back (broker reconnect, resync from the database), and chat flows on.

Two kinds of corpus value cannot be carried unchanged in an HTTP/1.1 ``Origin`` header, so the
wire matrix treats them apart (their refusal by the policy itself is tested in
``test_origins.py``):

* CR or LF end the header line: the bytes would make a different request (``…\\r\\nX: y`` is an
  allowed ``Origin`` plus a header ``X``), so those values are not sent; a NUL is sent and must
  be refused by the HTTP layer itself (400, never 101).
* Leading or trailing spaces and tabs are optional whitespace around a field value
  (RFC 9110 §5.5): the value the app receives is the allowed origin itself, so those behave
  exactly like it (101), which is asserted separately.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from tests.conftest import POSTGRES_URL, TEST_DATABASE, TEST_SECRET_KEY, postgres_admin
from tests.live_servers import (
    HOST,
    REPO_ROOT,
    Hypercorn,
    LiveServer,
    RedisProcess,
    create_user,
    migrate,
    raw_handshake,
    slyker_env,
    start_hypercorns,
    start_servers,
    stop_servers,
)
from tests.test_origins import BAD_ORIGINS

ALLOWED_ORIGINS = "https://slykertech.co.zw,https://www.slykertech.co.zw"
PREVIEW_REGEX = r"https://pr-[0-9]+\.preview\.slykertech\.co\.zw"
API_HOST = "api.slykertech.co.zw"
ORIGIN = "https://slykertech.co.zw"
LOCAL = "{local}"  # in a host or origin: 127.0.0.1:<the server's port>
VISITOR_PATHS = ("/ws/chat/sales/", "/livechat/ws/sales/")
HANDSHAKE_PATHS = (*VISITOR_PATHS, "/ws/chat/agents/")
HANDSHAKE_HOSTS = (API_HOST, LOCAL)
GREETING = "Connected to Slyker Tech Live Support"
AUTO_REPLY_MARK = "No sales agent is online"  # the default CHAT_AUTO_REPLY, for sales

STAFF_EMAIL = "rudo.agent@slykertech.co.zw"
STAFF_PASSWORD = "Staff-passw0rd-123"
STAFF_NAME = "Rudo Moyo"
CLIENT = {
    "email": "chipo.client@example.com",
    "password": "Client-passw0rd-123",
    "first_name": "Chipo",
    "last_name": "Dube",
}
OTHER_KEY = "another-secret-key-0123456789abcdef0123456789"

FRAME_TIMEOUT = 5.0  # one expected frame
PRESENCE_TIMEOUT = 5.0
RESYNC_TIMEOUT = 15.0  # Redis back -> the missed reply on the visitor's socket
REDIS_DOWN_TIMEOUT = 5.0


def _settings(**extra: str) -> dict[str, str]:
    return {
        "CORS_ALLOWED_ORIGINS": ALLOWED_ORIGINS,
        "CORS_ALLOWED_ORIGIN_REGEXES": PREVIEW_REGEX,
        "ALLOWED_HOSTS": API_HOST,
        **extra,
    }


# --- the foundation corpus, as it can travel in an HTTP/1.1 header ---------------------------

OriginValue = str | bytes | None


def _wire(value: OriginValue) -> bytes | None:
    return value.encode("utf-8") if isinstance(value, str) else value


def _split_corpus() -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {"refused": [], "nul": [], "whitespace": [], "crlf": []}
    for param in BAD_ORIGINS:
        value = param.values[0]
        raw = _wire(value)  # type: ignore[arg-type]
        if raw is not None and (b"\r" in raw or b"\n" in raw):
            group = "crlf"
        elif raw is not None and b"\x00" in raw:
            group = "nul"
        elif raw is not None and raw != raw.strip(b" \t"):
            group = "whitespace"
        else:
            group = "refused"
        groups[group].append(pytest.param(value, id=param.id))
    return groups


CORPUS = _split_corpus()
# With ``Host: api.slykertech.co.zw`` this corpus origin (unknown to CORS) is the server's own
# host, which the WebSocket same-host rule allows.
SAME_HOST_UNDER_API = {"https://api.slykertech.co.zw"}


# --- deployments: Hypercorn processes, optional private Redis, one database ---------------------


def _run_async(coroutine: Any) -> Any:
    """Run a coroutine on a loop of its own, in another thread (never the tests' loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=30)


@dataclass
class Deployment:
    servers: list[LiveServer]
    env: dict[str, str]
    redis: RedisProcess | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)

    @property
    def a(self) -> LiveServer:
        return self.servers[0]

    @property
    def b(self) -> LiveServer:
        return self.servers[-1]

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} log (tail) ---\n{s.log(5000)}" for s in self.servers)


def _login(server: LiveServer, email: str, password: str) -> dict[str, str]:
    status, body = server.request("POST", "/api/token/", {"email": email, "password": password})
    assert status == 200, f"POST /api/token/ -> {status} {body!r}\n{server.log()}"
    return body  # type: ignore[no-any-return]


@contextlib.contextmanager
def deployment(
    base: Path,
    names: list[str],
    *,
    redis: bool,
    supervised: bool = False,
    server_env: Callable[[dict[str, str]], dict[str, str]] | None = None,
) -> Iterator[Deployment]:
    """``python -m slyker migrate``, a staff user by the CLI, then one Hypercorn per name
    (with ``supervised``: ``python -m slyker serve``, as in production), all on the same
    database (and the same private Redis); everything stopped afterwards. ``server_env``
    changes the servers' environment (not the migration's): a database reached through a
    test's proxy."""
    data_dir = base / "data"
    data_dir.mkdir(parents=True)
    settings = {"DATA_DIR": str(data_dir)}
    redis_process = RedisProcess(base) if redis else None
    postgres_name = None
    servers: list[LiveServer] = []
    live: Deployment | None = None
    try:
        if redis_process is not None:
            redis_process.start()
            settings["REDIS_URL"] = redis_process.url
        if TEST_DATABASE == "postgres":
            postgres_name = f"slyker_chat_live_{os.getpid()}_{base.name}".replace("-", "_")
            _run_async(
                postgres_admin(
                    f'DROP DATABASE IF EXISTS "{postgres_name}"',
                    f'CREATE DATABASE "{postgres_name}"',
                )
            )
            settings["DATABASE_URL"] = POSTGRES_URL.rsplit("/", 1)[0] + f"/{postgres_name}"
        else:
            settings["DATABASE_URL"] = f"sqlite://{data_dir / 'shared.sqlite3'}"
        env = slyker_env(**_settings(**settings))
        migrate(env, base)
        create_user(
            env, base, STAFF_EMAIL, STAFF_PASSWORD, "staff", first_name="Rudo", last_name="Moyo"
        )
        served = env if server_env is None else server_env(dict(env))
        servers = start_hypercorns(
            [Hypercorn(name, served, supervised=supervised) for name in names], base
        )
        live = Deployment(servers, env, redis_process)
        staff = _login(live.a, STAFF_EMAIL, STAFF_PASSWORD)
        live.tokens["staff"] = staff["access"]
        live.user_ids["staff"] = int(
            jwt.decode(staff["access"], options={"verify_signature": False})["sub"]
        )
        yield live
    finally:
        stop_servers(servers)
        if live is not None:
            stop_servers(live.servers)
        if redis_process is not None:
            redis_process.stop()
        if postgres_name is not None:
            _run_async(postgres_admin(f'DROP DATABASE IF EXISTS "{postgres_name}" WITH (FORCE)'))


def _forged_token(user_id: int, *, key: str = TEST_SECRET_KEY, expired: bool = False) -> str:
    now = datetime.now(UTC)
    exp = now - timedelta(minutes=5) if expired else now + timedelta(minutes=30)
    claims = {
        "sub": str(user_id),
        "iat": now - timedelta(minutes=60),
        "exp": exp,
        "jti": uuid.uuid4().hex,
        "type": "access",
        "role": "client",
    }
    return jwt.encode(claims, key, algorithm="HS256")


@pytest.fixture(scope="module")
def origin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One Hypercorn, no Redis, the production-like origin settings; a client user
    (registered over HTTP) and a staff user (by the CLI), with their tokens."""
    with deployment(tmp_path_factory.mktemp("chat-origins"), ["origins"], redis=False) as live:
        server = live.a
        status, body = server.request("POST", "/api/accounts/register/", CLIENT)
        assert status == 201, f"register -> {status} {body!r}\n{server.log()}"
        client_id = int(body["user"]["id"])
        client = _login(server, CLIENT["email"], CLIENT["password"])
        live.user_ids["client"] = client_id
        live.tokens.update(
            client=client["access"],
            client_refresh=client["refresh"],
            garbage="not-a-jwt",
            wrong_key=_forged_token(client_id, key=OTHER_KEY),
            expired=_forged_token(client_id, expired=True),
            unknown_user=_forged_token(987654),
        )
        yield live


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Hypercorn A and B: one private Redis, one database."""
    with deployment(tmp_path_factory.mktemp("chat-pair"), ["A", "B"], redis=True) as live:
        yield live


@pytest.fixture(scope="module")
def restart_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Another A and B with a Redis of their own, to be killed and restarted."""
    with deployment(tmp_path_factory.mktemp("chat-restart"), ["A", "B"], redis=True) as live:
        yield live


# --- 1. the handshake origin matrix ---------------------------------------------------------


def _fill(text: str, server: LiveServer) -> str:
    return text.replace(LOCAL, f"{HOST}:{server.port}")


def _expect_refused(
    server: LiveServer, path: str, origin: OriginValue, host: str, *, log_value: str
) -> list[str]:
    """403 before accept, with the WARNING naming the origin under the response's request id."""
    handshake = raw_handshake(server.port, path, origin, host)
    where = f"{path} Host={host} Origin={origin!r}"
    if handshake.status != 403:
        return [f"{where}: expected 403, got {handshake.describe()}"]
    problems = []
    request_ids = handshake.header("x-request-id")
    if len(request_ids) != 1:
        problems.append(f"{where}: 403 without one X-Request-ID: {handshake.describe()}")
    else:
        line = f"[request_id={request_ids[0]}] WebSocket origin rejected: {log_value} on {path}"
        if line not in server.log(10**7):
            problems.append(f"{where}: no log line {line!r}")
    try:
        json.loads(handshake.body)
    except ValueError:
        problems.append(f"{where}: 403 body is not JSON: {handshake.body[:200]!r}")
    return problems


def _expect_accepted(server: LiveServer, path: str, origin: OriginValue, host: str) -> list[str]:
    """101, and the handler runs: its first frame is ``connection_established``."""
    handshake = raw_handshake(server.port, path, origin, host, read_first_frame=True)
    where = f"{path} Host={host} Origin={origin!r}"
    if handshake.status != 101:
        return [f"{where}: expected 101, got {handshake.describe()}"]
    opcode, payload = handshake.body[0], handshake.body[1:]
    if opcode != 0x1:
        return [f"{where}: first frame has opcode {opcode:#x}: {payload!r}"]
    frame = json.loads(payload)
    if frame.get("type") != "connection_established" or frame.get("room") != "sales":
        return [f"{where}: first frame {frame!r}"]
    return []


def _report(problems: list[str], server: LiveServer) -> None:
    if problems:
        pytest.fail(
            "\n".join(problems) + f"\n--- server log (tail) ---\n{server.log()}", pytrace=False
        )


ALLOWED_HANDSHAKES = [
    pytest.param("https://slykertech.co.zw", API_HOST, id="exact"),
    pytest.param("https://www.slykertech.co.zw", API_HOST, id="exact-www"),
    pytest.param("https://slykertech.co.zw", LOCAL, id="exact-direct-host"),
    pytest.param("HTTPS://SlykerTech.CO.ZW", API_HOST, id="exact-other-case"),
    pytest.param("https://slykertech.co.zw:443", API_HOST, id="exact-default-port"),
    pytest.param("https://pr-42.preview.slykertech.co.zw", API_HOST, id="regex"),
    pytest.param("https://PR-7.Preview.slykertech.co.zw:443", LOCAL, id="regex-case-port"),
    pytest.param("https://api.slykertech.co.zw", API_HOST, id="same-host"),
    pytest.param("https://api.slykertech.co.zw", "api.slykertech.co.zw:443", id="same-host-port"),
    pytest.param("https://api.slykertech.co.zw:443", API_HOST, id="same-host-origin-port"),
    pytest.param("https://API.slykertech.co.zw", "Api.Slykertech.Co.Zw", id="same-host-case"),
]


@pytest.mark.parametrize(("origin", "host"), ALLOWED_HANDSHAKES)
def test_allowed_origin_gets_101(origin_server: Deployment, origin: str, host: str) -> None:
    server = origin_server.a
    problems: list[str] = []
    for path in VISITOR_PATHS:
        problems += _expect_accepted(server, path, origin, _fill(host, server))
    _report(problems, server)


SAME_HOST_REFUSALS = [
    pytest.param("http://api.slykertech.co.zw", API_HOST, id="same-host-but-http"),
    pytest.param("https://api.slykertech.co.zw", "api.slykertech.co.zw:8443", id="port-differs"),
    pytest.param("https://api.slykertech.co.zw:8443", API_HOST, id="origin-port-differs"),
    pytest.param("https://api.slykertech.co.zw", LOCAL, id="host-differs"),
    pytest.param(f"http://{LOCAL}", LOCAL, id="loopback-not-in-allowed-hosts"),
    pytest.param("https://www.api.slykertech.co.zw", API_HOST, id="subdomain-of-host"),
]


@pytest.mark.parametrize(("origin", "host"), SAME_HOST_REFUSALS)
def test_same_host_rule_refusals_get_403(origin_server: Deployment, origin: str, host: str) -> None:
    server = origin_server.a
    origin, host = _fill(origin, server), _fill(host, server)
    problems: list[str] = []
    for path in HANDSHAKE_PATHS:
        problems += _expect_refused(server, path, origin, host, log_value=repr(origin))
    _report(problems, server)


@pytest.mark.parametrize("path", HANDSHAKE_PATHS)
def test_a_host_not_in_allowed_hosts_is_refused_before_the_origin_rule(
    origin_server: Deployment, path: str
) -> None:
    """slyker/hosts.py: 400 JSON ``host_not_allowed`` before routing, for a handshake too."""
    server = origin_server.a
    handshake = raw_handshake(server.port, path, "https://evil.example", "evil.example")
    assert handshake.status == 400, handshake.describe()
    assert json.loads(handshake.body)["code"] == "host_not_allowed", handshake.describe()


def test_corpus_on_the_wire_covers_every_bad_origin_class() -> None:
    ids = {param.id for param in CORPUS["refused"]}
    assert len(ids) >= 30
    for prefix in (
        "prefix-", "suffix-", "userinfo-", "tail-", "regex-", "scheme-", "port-", "list-",
        "null", "wildcard", "overlong", "unicode-", "host-", "empty", "none",
        "scheme-file-", "scheme-chrome-extension", "backslash",
    ):  # fmt: skip
        assert any(str(case_id).startswith(prefix) for case_id in ids), prefix


def _log_value(value: OriginValue) -> str:
    """How ``check_origin`` logs the header: ``repr`` of the value Quart decoded (latin-1)."""
    if value is None:
        return "(missing)"
    raw = _wire(value)
    assert raw is not None
    return repr(raw.decode("latin-1"))[:300]


@pytest.mark.parametrize("origin", CORPUS["refused"])
def test_bad_origin_gets_403_before_accept(origin_server: Deployment, origin: OriginValue) -> None:
    server = origin_server.a
    problems: list[str] = []
    for path, host in itertools.product(HANDSHAKE_PATHS, HANDSHAKE_HOSTS):
        host = _fill(host, server)
        if origin in SAME_HOST_UNDER_API and host == API_HOST:
            if path in VISITOR_PATHS:
                problems += _expect_accepted(server, path, origin, host)
            continue
        problems += _expect_refused(server, path, origin, host, log_value=_log_value(origin))
    _report(problems, server)


@pytest.mark.parametrize("origin", CORPUS["nul"])
def test_origin_with_a_nul_is_refused_by_the_http_layer(
    origin_server: Deployment, origin: OriginValue
) -> None:
    server = origin_server.a
    for path in HANDSHAKE_PATHS:
        handshake = raw_handshake(server.port, path, origin, API_HOST)
        assert handshake.status == 400, f"{path}: {handshake.describe()}\n{server.log()}"


@pytest.mark.parametrize("origin", CORPUS["whitespace"])
def test_whitespace_around_an_origin_is_not_part_of_it(
    origin_server: Deployment, origin: OriginValue
) -> None:
    """RFC 9110 §5.5: the app receives the trimmed value, here the allowed origin."""
    raw = _wire(origin)
    assert raw is not None and raw.strip(b" \t") == ORIGIN.encode()
    server = origin_server.a
    problems: list[str] = []
    for path in VISITOR_PATHS:
        problems += _expect_accepted(server, path, origin, API_HOST)
    _report(problems, server)


def test_missing_origin_gets_403(origin_server: Deployment) -> None:
    server = origin_server.a
    problems: list[str] = []
    for path, host in itertools.product(HANDSHAKE_PATHS, HANDSHAKE_HOSTS):
        problems += _expect_refused(server, path, None, _fill(host, server), log_value="(missing)")
    _report(problems, server)


@pytest.mark.parametrize(
    "path",
    ["/ws/chat/nope/", "/livechat/ws/nope/", "/livechat/ws/agents/", "/ws/chat/SALES/"],
)
def test_unknown_department_gets_404(origin_server: Deployment, path: str) -> None:
    server = origin_server.a
    handshake = raw_handshake(server.port, path, ORIGIN, API_HOST)
    assert handshake.status == 404, f"{path}: {handshake.describe()}\n{server.log()}"


@pytest.mark.parametrize("path", ["/ws/nope/", "/api/nothing-here/", "/health/"])
def test_a_path_without_a_websocket_route_gets_the_json_404(
    origin_server: Deployment, path: str
) -> None:
    """Through Hypercorn: the missing route's JSON 404 as the handshake's denial response,
    with the allowed origin's CORS headers (it was quart-cors's bare 400)."""
    server = origin_server.a
    handshake = raw_handshake(server.port, path, ORIGIN, API_HOST)
    assert handshake.status == 404, f"{path}: {handshake.describe()}\n{server.log()}"
    assert json.loads(handshake.body)["code"] == "not_found"
    assert handshake.header("access-control-allow-origin") == [ORIGIN]
    assert len(handshake.header("x-request-id")) == 1


# --- WebSocket clients -----------------------------------------------------------------------


class Peer:
    """A real WebSocket client whose frames are read (and kept) by a background task."""

    _stamps = itertools.count(1)

    def __init__(self, name: str, ws: ClientConnection, logs: Callable[[], str]) -> None:
        self.name = name
        self.ws = ws
        self.logs = logs
        self.frames: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.closed: ConnectionClosed | None = None
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"peer-{name}")

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self.arrivals.append(time.monotonic())
                self._changed.set()
        except ConnectionClosed as error:
            self.closed = error
        finally:
            self._changed.set()

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    def describe(self) -> str:
        frames = "\n".join(f"    {frame}" for frame in self.frames)
        return f"{self.name} frames so far:\n{frames}\n{self.logs()}"

    async def wait_for(
        self,
        what: str,
        predicate: Callable[[dict[str, Any]], bool],
        within: float = FRAME_TIMEOUT,
        start: int = 0,
    ) -> dict[str, Any]:
        """The first frame from index ``start`` on that matches, within ``within`` seconds."""
        deadline = time.monotonic() + within
        index = start
        while True:
            self._changed.clear()
            for position in range(index, len(self.frames)):
                if predicate(self.frames[position]):
                    return self.frames[position]
            index = max(index, len(self.frames))
            remaining = deadline - time.monotonic()
            if self._reader.done() or remaining <= 0:
                state = f"closed ({self.closed})" if self._reader.done() else "open"
                raise AssertionError(
                    f"{self.name} ({state}): no {what} within {within:.1f} s\n{self.describe()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def barrier(self) -> None:
        """Every frame sent before has been handled: the server reads frames in order."""
        stamp = next(self._stamps)
        await self.send(type="ping", timestamp=stamp)
        await self.wait_for(
            f"pong {stamp}", lambda f: f.get("type") == "pong" and f.get("timestamp") == stamp
        )

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)


@contextlib.asynccontextmanager
async def open_socket(url: str, origin: str = ORIGIN) -> AsyncIterator[ClientConnection]:
    async with connect(
        url,
        origin=Origin(origin),
        open_timeout=FRAME_TIMEOUT,
        close_timeout=2,
        ping_interval=None,
        proxy=None,
        compression=None,
    ) as ws:
        yield ws


@contextlib.asynccontextmanager
async def peer(name: str, url: str, logs: Callable[[], str]) -> AsyncIterator[Peer]:
    async with open_socket(url) as ws:
        client = Peer(name, ws, logs)
        try:
            yield client
        finally:
            await client.close()


def _with_token(path: str, token: str | None) -> str:
    return path if token is None else f"{path}?token={token}"


# --- 2. close codes seen by a real client ----------------------------------------------------

CLOSE_CASES = [
    pytest.param("/ws/chat/sales/", "garbage", 4001, id="sales-garbage-token"),
    pytest.param("/ws/chat/sales/", "wrong_key", 4001, id="sales-token-of-another-key"),
    pytest.param("/ws/chat/sales/", "expired", 4001, id="sales-expired-token"),
    pytest.param("/ws/chat/sales/", "client_refresh", 4001, id="sales-refresh-token"),
    pytest.param("/ws/chat/sales/", "unknown_user", 4001, id="sales-token-of-no-user"),
    pytest.param("/livechat/ws/sales/", "garbage", 4001, id="livechat-sales-garbage-token"),
    pytest.param("/ws/chat/management/", None, 4001, id="management-no-token"),
    pytest.param("/ws/chat/management/", "garbage", 4001, id="management-garbage-token"),
    pytest.param("/ws/chat/management/", "expired", 4001, id="management-expired-token"),
    pytest.param("/ws/chat/management/", "client", 4003, id="management-client-token"),
    pytest.param("/livechat/ws/management/", None, 4001, id="livechat-management-no-token"),
    pytest.param("/livechat/ws/management/", "client", 4003, id="livechat-management-client"),
    pytest.param("/ws/chat/agents/", None, 4001, id="agents-no-token"),
    pytest.param("/ws/chat/agents/", "garbage", 4001, id="agents-garbage-token"),
    pytest.param("/ws/chat/agents/", "expired", 4001, id="agents-expired-token"),
    pytest.param("/ws/chat/agents/", "client", 4003, id="agents-client-token"),
]


@pytest.mark.parametrize(("path", "token", "code"), CLOSE_CASES)
async def test_client_receives_close_code(
    origin_server: Deployment, path: str, token: str | None, code: int
) -> None:
    server = origin_server.a
    url = server.ws_url + _with_token(path, origin_server.tokens.get(token or ""))
    frames: list[str | bytes] = []
    async with open_socket(url) as ws:  # the handshake itself succeeds: a 101
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(FRAME_TIMEOUT):
                async for message in ws:
                    frames.append(message)
        received = ws.protocol.close_rcvd
    assert received is not None, f"no close frame from the server; frames {frames}\n{server.log()}"
    assert received.code == code, f"close {received.code} {received.reason!r}\n{server.log()}"
    assert received.reason, "the close frame names the reason"
    assert frames == [], "nothing is sent before the close"


OPEN_CASES = [
    pytest.param("/ws/chat/management/", "staff", {"room": "management"}, id="management-staff"),
    pytest.param(
        "/livechat/ws/management/", "staff", {"room": "management"}, id="livechat-management"
    ),
    pytest.param("/ws/chat/agents/", "staff", {"role": "agent"}, id="agents-staff"),
    pytest.param("/ws/chat/sales/", "client", {"room": "sales"}, id="sales-client"),
    pytest.param("/ws/chat/sales/", None, {"room": "sales"}, id="sales-anonymous"),
]


@pytest.mark.parametrize(("path", "token", "expected"), OPEN_CASES)
async def test_allowed_identity_keeps_the_socket_open(
    origin_server: Deployment, path: str, token: str | None, expected: dict[str, str]
) -> None:
    server = origin_server.a
    url = server.ws_url + _with_token(path, origin_server.tokens.get(token or ""))
    async with peer(path, url, server.log) as client:
        first = await client.wait_for("a first frame", lambda f: True)
        assert first["type"] == "connection_established", client.describe()
        assert {key: first.get(key) for key in expected} == expected, client.describe()
        await client.barrier()
        assert client.closed is None


@pytest.mark.parametrize(
    "path", ["/livechat/ws/sales/", "/ws/chat/agents/"], ids=["visitor", "agent"]
)
async def test_permessage_deflate_is_declined(origin_server: Deployment, path: str) -> None:
    """Browsers offer compression on every socket; accepted, each socket kept a zlib
    compressor of ~95 KiB (slyker.chat.handshake.DeclinedDeflate). The socket works without."""
    server = origin_server.a
    url = server.ws_url + _with_token(path, origin_server.tokens.get("staff"))
    async with connect(
        url,
        origin=Origin(ORIGIN),
        open_timeout=FRAME_TIMEOUT,
        close_timeout=2,
        ping_interval=None,
        proxy=None,
        compression="deflate",  # offered, as a browser does
    ) as ws:
        assert ws.response is not None
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None, server.log()
        assert ws.protocol.extensions == []
        first = json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))
        assert first["type"] == "connection_established", first


# --- 3. two Hypercorn processes, one Redis, one database ---------------------------------------


async def _request(server: LiveServer, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(server.request, method, path, **kwargs)


async def _agents_online(live: Deployment, server: LiveServer) -> int:
    status, body = await _request(
        server, "GET", "/api/livechat/sessions/stats/", token=live.tokens["staff"]
    )
    assert status == 200, f"stats -> {status} {body!r}\n{server.log()}"
    return int(body["by_department"]["sales"]["agents_online"])


async def _wait_agents_online(
    live: Deployment, server: LiveServer, predicate: Callable[[int], bool], what: str
) -> int:
    deadline = time.monotonic() + PRESENCE_TIMEOUT
    while True:
        count = await _agents_online(live, server)
        if predicate(count):
            return count
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{server.name}: agents_online {count}, expected {what}\n{live.logs()}"
            )
        await asyncio.sleep(0.1)


async def _messages(
    live: Deployment, server: LiveServer, conversation_id: int
) -> list[dict[str, Any]]:
    status, body = await _request(
        server, "GET", f"/api/livechat/sessions/{conversation_id}/", token=live.tokens["staff"]
    )
    assert status == 200, f"session {conversation_id} -> {status} {body!r}\n{server.log()}"
    return body["messages"]  # type: ignore[no-any-return]


def _visitor_url(server: LiveServer, session_id: str) -> str:
    return f"{server.ws_url}/ws/chat/sales/?session_id={session_id}"


def _agent_url(live: Deployment, server: LiveServer) -> str:
    return f"{server.ws_url}/ws/chat/agents/?token={live.tokens['staff']}"


def _is_message(text: str, sender_type: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f.get("message") == text and f.get("sender_type") == sender_type


async def _visitor_connected(visitor: Peer, session_id: str) -> None:
    established = await visitor.wait_for(
        "connection_established", lambda f: f.get("type") == "connection_established"
    )
    assert established["session_id"] == session_id and established["room"] == "sales"
    await visitor.wait_for("the greeting", lambda f: f == {"type": "system", "message": GREETING})


async def _agent_connected(agent: Peer) -> None:
    established = await agent.wait_for(
        "connection_established", lambda f: f.get("type") == "connection_established"
    )
    assert established["role"] == "agent" and "sales" in established["departments"]
    await agent.wait_for("active_conversations", lambda f: f.get("type") == "active_conversations")


def _visitor_message(session_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "message": text,
        "visitor_name": "Tendai",
        "department": "sales",
        "session_id": session_id,
        "sender": "Tendai",
        "timestamp": int(time.time() * 1000),
    }


async def test_both_processes_share_redis_and_the_database(pair: Deployment) -> None:
    assert pair.a.port != pair.b.port
    for server in pair.servers:
        status, body = await _request(server, "GET", "/ready/")
        assert (status, body["checks"]) == (200, {"database": True, "redis": True}), server.log()
        # The token was issued by A; the user was made by the CLI: one database for all.
        status, body = await _request(
            server, "GET", "/api/accounts/users/me/", token=pair.tokens["staff"]
        )
        assert status == 200 and body["email"] == STAFF_EMAIL, server.log()
    assert pair.redis is not None and pair.redis.ping()


async def test_without_an_agent_online_a_visitor_gets_one_automatic_reply(pair: Deployment) -> None:
    for server in pair.servers:
        await _wait_agents_online(pair, server, lambda n: n == 0, "no agent")
    session_id = str(uuid.uuid4())
    async with peer("visitor@A", _visitor_url(pair.a, session_id), pair.logs) as visitor:
        await _visitor_connected(visitor, session_id)
        await visitor.send(**_visitor_message(session_id, "Anyone there?"))
        reply = await visitor.wait_for(
            "the automatic reply", lambda f: AUTO_REPLY_MARK in str(f.get("message"))
        )
        assert reply["type"] == "message" and reply["sender_type"] == "system", reply
        assert isinstance(reply["id"], int) and reply["session_id"] == session_id, reply
        await visitor.send(**_visitor_message(session_id, "Hello again"))
        await visitor.barrier()
        automatic = [f for f in visitor.frames if AUTO_REPLY_MARK in str(f.get("message"))]
        assert len(automatic) == 1, visitor.describe()


async def test_visitor_on_a_and_agent_on_b_talk(pair: Deployment) -> None:
    staff_id = pair.user_ids["staff"]
    assert await _wait_agents_online(pair, pair.a, lambda n: n == 0, "no agent") == 0
    session_id = str(uuid.uuid4())
    async with peer("agent@B", _agent_url(pair, pair.b), pair.logs) as agent:
        await _agent_connected(agent)
        # Presence crosses processes: A sees the agent connected to B.
        await _wait_agents_online(pair, pair.a, lambda n: n >= 1, "the agent on B")

        async with peer("visitor@A", _visitor_url(pair.a, session_id), pair.logs) as visitor:
            await _visitor_connected(visitor, session_id)

            # visitor (A) -> agent (B)
            await visitor.send(**_visitor_message(session_id, "Do you host WordPress?"))
            notice = await agent.wait_for(
                "new_conversation",
                lambda f: (
                    f.get("type") == "new_conversation"
                    and f["conversation"]["session_id"] == session_id
                ),
            )
            conversation_id = notice["conversation"]["id"]
            assert notice["conversation"]["visitor_name"] == "Tendai"
            question = await agent.wait_for(
                "the visitor's message", _is_message("Do you host WordPress?", "user")
            )
            assert question["type"] == "message" and question["session_id"] == session_id
            assert question["sender"] == "Tendai" and question["visitor_name"] == "Tendai"
            assert isinstance(question["id"], int) and question["department"] == "sales"
            await visitor.barrier()  # the automatic-reply decision has been made

            # typing, both ways
            await visitor.send(type="typing", is_typing=True, visitor_name="Tendai")
            typing = await agent.wait_for("visitor typing", lambda f: f.get("type") == "typing")
            assert typing["session_id"] == session_id and typing["sender_type"] == "user"
            assert typing["is_typing"] is True
            await agent.send(type="typing", session_id=session_id, is_typing=True)
            typing = await visitor.wait_for("agent typing", lambda f: f.get("type") == "typing")
            assert typing["sender_type"] == "agent" and typing["is_typing"] is True

            # agent (B) -> visitor (A), over the socket
            await agent.send(type="message", session_id=session_id, message="Yes, on every plan.")
            answer = await visitor.wait_for(
                "the agent's reply", _is_message("Yes, on every plan.", "agent")
            )
            assert answer["type"] == "message" and answer["success"] is True, answer
            assert answer["sender"] == STAFF_NAME and answer["agent_id"] == staff_id, answer
            assert answer["session_id"] == session_id and answer["id"] > question["id"], answer
            shown = await agent.wait_for(
                "its own reply as agent_message", lambda f: f.get("type") == "agent_message"
            )
            assert shown["id"] == answer["id"] and shown["agent_id"] == staff_id

            # agent -> visitor over REST send_message, posted to B, delivered live on A
            status, posted = await _request(
                pair.b,
                "POST",
                f"/api/livechat/sessions/{conversation_id}/send_message/",
                body={"message": "Here is the plan list."},
                token=pair.tokens["staff"],
            )
            assert status == 201, f"{status} {posted!r}\n{pair.logs()}"
            pushed = await visitor.wait_for(
                "the REST reply", _is_message("Here is the plan list.", "agent")
            )
            assert pushed["id"] == posted["id"] > answer["id"], pushed

            # and the visitor again
            await visitor.send(**_visitor_message(session_id, "Thanks!"))
            thanks = await agent.wait_for("the second message", _is_message("Thanks!", "user"))
            assert thanks["id"] > pushed["id"]
            await visitor.barrier()

            # no automatic reply (an agent was online, on B) and no echo of the visitor's own
            assert not [f for f in visitor.frames if f.get("sender_type") in ("system", "user")], (
                visitor.describe()
            )
            stored = await _messages(pair, pair.a, conversation_id)
            assert [(m["id"], m["sender_type"], m["message"]) for m in stored] == [
                (question["id"], "user", "Do you host WordPress?"),
                (answer["id"], "agent", "Yes, on every plan."),
                (pushed["id"], "agent", "Here is the plan list."),
                (thanks["id"], "user", "Thanks!"),
            ]

    # The agent left B: A stops counting it.
    await _wait_agents_online(pair, pair.a, lambda n: n == 0, "no agent after it left")


# --- 4. Redis killed and restarted mid-conversation ---------------------------------------------


@dataclass
class RestartRun:
    """What one Redis-restart conversation showed; the tests below judge it."""

    session_id: str = ""
    conversation_id: int | None = None
    question_id: int | None = None  # visitor, before the crash
    first_reply_id: int | None = None  # agent, before the crash
    ready_while_down: dict[str, tuple[int, Any]] = field(default_factory=dict)
    stored_while_down: list[dict[str, Any]] = field(default_factory=list)
    missed_reply_id: int | None = None  # agent, while Redis was down
    redis_down_seconds: float | None = None
    visitor_resync_seconds: float | None = None  # Redis back -> the missed reply on A
    agent_resync_seconds: float | None = None  # Redis back -> B's agent resynced
    later_question_id: int | None = None
    later_reply_id: int | None = None
    visitor_frames: list[dict[str, Any]] = field(default_factory=list)
    agent_frames: list[dict[str, Any]] = field(default_factory=list)
    stored_at_end: list[dict[str, Any]] = field(default_factory=list)
    presence_after_restart: list[tuple[float, int]] = field(default_factory=list)
    failure: str | None = None
    logs: str = ""

    def require(self, *names: str) -> None:
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            logs = "" if "log (tail)" in str(self.failure) else f"\n{self.logs}"
            pytest.fail(
                f"the conversation stopped before {missing}: {self.failure}{logs}", pytrace=False
            )


async def _redis_down_everywhere(live: Deployment, run: RestartRun) -> None:
    """Both processes see Redis gone (/ready/ answers 503 with redis false)."""
    for server in live.servers:
        deadline = time.monotonic() + REDIS_DOWN_TIMEOUT
        while True:
            status, body = await _request(server, "GET", "/ready/")
            run.ready_while_down[server.name] = (status, body)
            if status == 503 and body["checks"]["redis"] is False:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{server.name} still ready without Redis: {status} {body}")
            await asyncio.sleep(0.1)


async def _run_restart_conversation(live: Deployment, run: RestartRun) -> None:
    assert live.redis is not None
    run.session_id = session_id = str(uuid.uuid4())
    async with (
        peer("agent@B", _agent_url(live, live.b), live.logs) as agent,
        peer("visitor@A", _visitor_url(live.a, session_id), live.logs) as visitor,
    ):
        try:
            await _agent_connected(agent)
            await _wait_agents_online(live, live.a, lambda n: n >= 1, "the agent on B")
            await _visitor_connected(visitor, session_id)

            # A normal exchange first.
            await visitor.send(**_visitor_message(session_id, "Is my domain renewed?"))
            notice = await agent.wait_for(
                "new_conversation", lambda f: f.get("type") == "new_conversation"
            )
            run.conversation_id = notice["conversation"]["id"]
            question = await agent.wait_for(
                "the question", _is_message("Is my domain renewed?", "user")
            )
            run.question_id = question["id"]
            await agent.send(type="message", session_id=session_id, message="Checking now.")
            reply = await visitor.wait_for("the first reply", _is_message("Checking now.", "agent"))
            run.first_reply_id = reply["id"]
            await agent.wait_for("the first reply echo", lambda f: f.get("type") == "agent_message")

            # Redis crashes; the agent answers while it is down.
            killed_at = time.monotonic()
            live.redis.kill()
            await _redis_down_everywhere(live, run)
            await agent.send(type="message", session_id=session_id, message="Yes, until 2028.")
            assert run.conversation_id is not None
            deadline = time.monotonic() + FRAME_TIMEOUT
            while not any(m["message"] == "Yes, until 2028." for m in run.stored_while_down):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"reply not stored while Redis down: {run.stored_while_down}"
                    )
                await asyncio.sleep(0.1)
                run.stored_while_down = await _messages(live, live.a, run.conversation_id)
            run.missed_reply_id = next(
                m["id"] for m in run.stored_while_down if m["message"] == "Yes, until 2028."
            )
            await asyncio.sleep(1.0)  # down for a while: the brokers' listeners back off

            # Redis is back on the same port (empty: no persistence).
            live.redis.start()
            restarted_at = time.monotonic()
            run.redis_down_seconds = restarted_at - killed_at
            presence = asyncio.create_task(_watch_presence(live, run, restarted_at))
            try:
                missed = await visitor.wait_for(
                    "the reply missed while Redis was down",
                    _is_message("Yes, until 2028.", "agent"),
                    within=RESYNC_TIMEOUT,
                )
                run.visitor_resync_seconds = (
                    visitor.arrivals[visitor.frames.index(missed)] - restarted_at
                )
                with contextlib.suppress(AssertionError):
                    resynced = await agent.wait_for(
                        "the agent's resync",
                        lambda f: f.get("id") == run.missed_reply_id,
                        within=RESYNC_TIMEOUT,
                    )
                    run.agent_resync_seconds = (
                        agent.arrivals[agent.frames.index(resynced)] - restarted_at
                    )

                # Later messages flow again, both ways.
                await visitor.send(**_visitor_message(session_id, "Great, thanks."))
                later = await agent.wait_for(
                    "the later question", _is_message("Great, thanks.", "user"), RESYNC_TIMEOUT
                )
                run.later_question_id = later["id"]
                await visitor.barrier()
                await agent.send(type="message", session_id=session_id, message="You're welcome.")
                later_reply = await visitor.wait_for(
                    "the later reply", _is_message("You're welcome.", "agent"), RESYNC_TIMEOUT
                )
                run.later_reply_id = later_reply["id"]
                await agent.wait_for(
                    "the later reply echo", lambda f: f.get("id") == run.later_reply_id
                )
                await visitor.barrier()
                await agent.barrier()
            finally:
                presence.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await presence
            run.stored_at_end = await _messages(live, live.a, run.conversation_id)
        finally:
            run.visitor_frames = list(visitor.frames)
            run.agent_frames = list(agent.frames)
            if run.conversation_id is not None and not run.stored_at_end:
                with contextlib.suppress(Exception):  # what was stored, for the report
                    run.stored_at_end = await _messages(live, live.a, run.conversation_id)


async def _watch_presence(live: Deployment, run: RestartRun, since: float) -> None:
    """A's view of the agent on B after the restart (Redis came back empty)."""
    while True:
        with contextlib.suppress(Exception):
            count = await _agents_online(live, live.a)
            run.presence_after_restart.append((round(time.monotonic() - since, 2), count))
        await asyncio.sleep(0.25)


@pytest.fixture(scope="module")
async def redis_restart(restart_pair: Deployment) -> RestartRun:
    run = RestartRun()
    try:
        await _run_restart_conversation(restart_pair, run)
    except AssertionError as error:
        run.failure = str(error)
    run.logs = restart_pair.logs()
    auto = [f for f in run.visitor_frames if AUTO_REPLY_MARK in str(f.get("message"))]
    print(  # the numbers, for whoever runs this with -s
        "\nredis restart:",
        json.dumps(
            {
                "down_s": run.redis_down_seconds,
                "visitor_resync_s": run.visitor_resync_seconds,
                "agent_resync_s": run.agent_resync_seconds,
                "presence_on_A_after_restart": run.presence_after_restart,
                "automatic_replies_to_visitor": len(auto),
                "stored": [(m["id"], m["sender_type"], m["message"]) for m in run.stored_at_end],
                "visitor_ids": [f["id"] for f in run.visitor_frames if "id" in f],
                "agent_frames": [
                    (f["type"], f["id"]) for f in run.agent_frames if isinstance(f.get("id"), int)
                ],
                "failure": (run.failure or "").split("\n")[0] or None,
            }
        ),
    )
    return run


def test_reply_while_redis_is_down_is_stored(redis_restart: RestartRun) -> None:
    run = redis_restart
    run.require("missed_reply_id")
    for name, (status, body) in run.ready_while_down.items():
        assert status == 503 and body["checks"]["redis"] is False, (name, status, body)
    agent_rows = [(m["sender_type"], m["message"]) for m in run.stored_while_down]
    assert agent_rows == [
        ("user", "Is my domain renewed?"),
        ("agent", "Checking now."),
        ("agent", "Yes, until 2028."),
    ]


def test_visitor_gets_the_missed_reply_once_redis_is_back(redis_restart: RestartRun) -> None:
    run = redis_restart
    run.require("visitor_resync_seconds")
    assert run.visitor_resync_seconds is not None
    assert run.visitor_resync_seconds <= RESYNC_TIMEOUT
    with_ids = [f for f in run.visitor_frames if isinstance(f.get("id"), int)]
    ids = [f["id"] for f in with_ids]
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"duplicated on the visitor's socket: {duplicates}\n{with_ids}"
    assert ids == sorted(ids), f"out of order: {ids}"
    agent_ids = [f["id"] for f in with_ids if f.get("sender_type") == "agent"]
    assert agent_ids[:2] == [run.first_reply_id, run.missed_reply_id], with_ids


def test_chat_flows_normally_after_the_restart(redis_restart: RestartRun) -> None:
    run = redis_restart
    run.require("later_question_id", "later_reply_id")
    assert run.later_reply_id is not None and run.missed_reply_id is not None
    assert run.later_reply_id > run.missed_reply_id
    replies = [f["id"] for f in run.visitor_frames if f.get("sender_type") == "agent"]
    assert replies == [run.first_reply_id, run.missed_reply_id, run.later_reply_id]
    # Stored once each, in order.
    assert [
        (m["sender_type"], m["message"]) for m in run.stored_at_end if m["sender_type"] != "system"
    ] == [
        ("user", "Is my domain renewed?"),
        ("agent", "Checking now."),
        ("agent", "Yes, until 2028."),
        ("user", "Great, thanks."),
        ("agent", "You're welcome."),
    ]


def test_agent_sees_each_message_once_across_the_restart(redis_restart: RestartRun) -> None:
    """The agent's socket, like the visitor's, delivers a message id at most once."""
    run = redis_restart
    run.require("missed_reply_id")
    ids = [f["id"] for f in run.agent_frames if isinstance(f.get("id"), int)]
    duplicates = {i: n for i, n in Counter(ids).items() if n > 1}
    assert not duplicates, (
        f"message ids delivered more than once to the agent (id: times): {duplicates}\n"
        + "\n".join(f"    {f}" for f in run.agent_frames if isinstance(f.get("id"), int))
    )


# --- the visitor key and the per-client socket limit, with real clients on two processes -----


@contextlib.asynccontextmanager
async def _widget(
    name: str, url: str, logs: Callable[[], str], cookie: str | None = None
) -> AsyncIterator[tuple[Peer, list[str]]]:
    """A socket as a browser opens it (with the cookies it keeps); the Set-Cookie of its 101."""
    headers = {"Cookie": cookie} if cookie else None
    async with connect(
        url,
        origin=Origin(ORIGIN),
        additional_headers=headers,
        open_timeout=FRAME_TIMEOUT,
        close_timeout=2,
        ping_interval=None,
        proxy=None,
        compression=None,
    ) as ws:
        assert ws.response is not None
        client = Peer(name, ws, logs)
        try:
            yield client, ws.response.headers.get_all("Set-Cookie")
        finally:
            await client.close()


async def test_only_the_same_browser_continues_a_conversation_across_processes(
    pair: Deployment,
) -> None:
    """The widget reconnects to any process with a plain URL and sends its page-load session
    id on every message: the cookie of the first 101 is what lets it continue; a client with
    only the session id gets an error and none of the conversation."""
    session_id = str(uuid.uuid4())
    plain = f"{pair.a.ws_url}/livechat/ws/sales/"
    async with _widget("widget@A", plain, pair.logs) as (visitor, set_cookies):
        established = await visitor.wait_for(
            "connection_established", lambda f: f.get("type") == "connection_established"
        )
        [cookie] = set_cookies
        assert (
            cookie == f"slyker_chat={established['resume_token']}; HttpOnly; Path=/; SameSite=Lax"
        )
        await visitor.send(**_visitor_message(session_id, "My invoice is wrong"))
        await visitor.wait_for("the automatic reply", lambda f: f.get("sender_type") == "system")
    pair_cookie = cookie.split(";", 1)[0]

    attacker_url = f"{pair.b.ws_url}/ws/chat/sales/?session_id={session_id}&after=0"
    async with _widget("attacker@B", attacker_url, pair.logs) as (attacker, _):
        refused = await attacker.wait_for("an error", lambda f: f.get("type") == "error")
        assert refused["code"] == "forbidden_session", attacker.describe()
        await attacker.barrier()
        assert not [f for f in attacker.frames if f.get("session_id") == session_id]

    async with _widget(
        "widget@B", f"{pair.b.ws_url}/livechat/ws/sales/", pair.logs, pair_cookie
    ) as (
        visitor,
        set_cookies,
    ):
        assert set_cookies == []  # the browser's key is kept
        await visitor.send(**_visitor_message(session_id, "Still wrong"))
        await visitor.barrier()
        assert not [f for f in visitor.frames if f.get("type") == "error"], visitor.describe()
    status, sessions = await _request(
        pair.a, "GET", "/api/livechat/sessions/", token=pair.tokens["staff"]
    )
    assert status == 200
    [mine] = [s for s in sessions["results"] if s["session_id"] == session_id]
    texts = [m["message"] for m in await _messages(pair, pair.a, mine["id"])]
    assert [t for t in texts if t.startswith(("My invoice", "Still"))] == [
        "My invoice is wrong",
        "Still wrong",
    ]


async def test_sockets_per_client_are_counted_across_processes(pair: Deployment) -> None:
    """20 sockets (CHAT_MAX_SOCKETS_PER_CLIENT) from one address over A and B; the 21st is
    accepted and closed with 1013 and its reason, which a browser's onclose can read."""
    async with contextlib.AsyncExitStack() as stack:
        for number in range(20):
            server = pair.a if number % 2 else pair.b
            ws = await stack.enter_async_context(open_socket(f"{server.ws_url}/ws/chat/sales/"))
            assert json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))["type"] == (
                "connection_established"
            )
        async with open_socket(f"{pair.a.ws_url}/ws/chat/sales/") as extra:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(extra.recv(), FRAME_TIMEOUT)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                1013,
                "Too many connections from your address",
            )
    # all released: a new one is welcome again
    async with open_socket(f"{pair.b.ws_url}/ws/chat/sales/") as again:
        frame = json.loads(await asyncio.wait_for(again.recv(), FRAME_TIMEOUT))
        assert frame["type"] == "connection_established"


# --- graceful shutdown ---------------------------------------------------------------------


async def test_sigterm_closes_chat_sockets_with_1001(tmp_path: Path) -> None:
    """SIGTERM to Hypercorn's process group (systemd; tini with TINI_KILL_PROCESS_GROUP=1 in
    docker/compose.yaml): every open chat socket is closed with 1001 at once, not cancelled
    with 1011 after the graceful timeout, and the server exits cleanly."""
    env = slyker_env(**_settings(DATA_DIR=str(tmp_path / "data")))
    migrate(env, REPO_ROOT)
    [server] = start_servers(["stopping"], env, tmp_path)
    try:
        sockets = [
            await connect(f"{server.ws_url}/ws/chat/{department}/", origin=Origin(ORIGIN))
            for department in ("sales", "support")
        ]
        for ws in sockets:
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == (
                "connection_established"
            )
        assert server.process is not None
        started = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)
        for ws in sockets:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None, server.log()
            assert closed.value.rcvd.code == 1001, server.log()
        assert time.monotonic() - started < 3  # far below hypercorn.toml's graceful timeout
        assert server.process.wait(timeout=20) == 0, server.log()
    finally:
        stop_servers([server])
