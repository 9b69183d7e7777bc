"""HTTP/2 against a real Hypercorn with TLS: the CORS contract is the same as over HTTP/1.1.

Hypercorn runs with ``hypercorn.toml`` (the committed file, only the binds overridden) and a
self-signed certificate made here, serving the contract app on two loopback sockets: TLS,
where ALPN picks ``h2`` or ``http/1.1``, and plain HTTP, where h2c with prior knowledge works
as a proxy in front would use it. Every case is sent over HTTP/2 and over HTTP/1.1 to the same
server and must give the same status, the same CORS headers and the same body. WebSockets
over HTTP/2 (RFC 8441, extended CONNECT) are driven with ``h2`` and ``wsproto`` directly,
since httpx and websockets only speak them over HTTP/1.1.

The helpers at the top (certificate, processes) are shared with ``tests/test_corscheck.py``.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest
import websockets.exceptions
import websockets.sync.client
from hypercorn.config import Config
from websockets.typing import Origin
from wsproto.frame_protocol import FrameProtocol, Opcode

from tests.conftest import SETTING_NAMES
from tests.cors_contract import ORIGIN_CLASSES, assert_cors_contract, vary_items

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = REPO_ROOT / "hypercorn.toml"
HOST = "127.0.0.1"
CONTRACT_APP = "tests.contract_app:create_contract_app()"
SOCKET_TIMEOUT = 5.0
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0
START_ATTEMPTS = 3  # a free port can be taken between choosing it and Hypercorn binding it
LOG_WAIT = 5.0


# --- shared helpers: certificate, database, Hypercorn ---------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (certfile, keyfile).

    With ``cryptography`` when it is importable, else with the ``openssl`` command.
    """
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        command = ["openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", f"/CN={HOST}"]
        command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        command += ["-keyout", str(keyfile), "-out", str(certfile)]
        command += ["-addext", f"subjectAltName=IP:{HOST},DNS:localhost"]
        subprocess.run(command, check=True, capture_output=True, timeout=COMMAND_TIMEOUT)
        return certfile, keyfile
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certfile, keyfile


def server_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The test process's environment without any slyker setting, plus DATA_DIR and
    ``settings``."""
    env = {name: value for name, value in os.environ.items() if name not in SETTING_NAMES}
    env["DATA_DIR"] = str(data_dir)
    env["QUART_SKIP_DOTENV"] = "1"  # never the developer's .env
    env.update(settings)
    return env


def migrate(env: Mapping[str, str]) -> None:
    """``python -m slyker migrate`` for the database of ``env`` (the chat needs its tables)."""
    result = subprocess.run(
        [sys.executable, "-m", "slyker", "migrate"],
        cwd=REPO_ROOT,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"migrate failed:\n{result.stdout}\n{result.stderr}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def unverified_tls(alpn: Sequence[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        context.set_alpn_protocols(list(alpn))
    return context


@dataclass
class Hypercorn:
    """One ``hypercorn --config hypercorn.toml`` process on loopback ports of its own.

    ``port`` is the main bind (TLS when ``tls`` is given); ``plain_port`` a plain-HTTP
    ``--insecure-bind`` next to it (TLS servers only).
    """

    app: str
    env: dict[str, str]
    log_path: Path
    tls: tuple[Path, Path] | None = None
    port: int = 0
    plain_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    @property
    def plain_url(self) -> str:
        assert self.plain_port is not None
        return f"http://{HOST}:{self.plain_port}"

    def log(self, limit: int = 6000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"<server log unreadable: {error}>"
        return text[-limit:]

    def command(self) -> list[str]:
        venv_hypercorn = Path(sys.executable).parent / "hypercorn"
        launcher = (
            [str(venv_hypercorn)]
            if venv_hypercorn.exists()
            else [sys.executable, "-m", "hypercorn"]
        )
        args = [*launcher, "--config", str(CONFIG_PATH), "--bind", f"{HOST}:{self.port}"]
        if self.tls is not None:
            certfile, keyfile = self.tls
            args += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
            args += ["--insecure-bind", f"{HOST}:{self.plain_port}"]
        return [*args, "--workers", "1", self.app]

    def spawn(self) -> None:
        self.port = free_port()
        self.plain_port = free_port() if self.tls is not None else None
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def health_problem(self) -> str | None:
        """None once ``GET /health/`` answers 200 on every socket, else why not (bounded)."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        last_problem = "no attempt made"
        ports = [(self.port, self.tls is not None)]
        if self.plain_port is not None:
            ports.append((self.plain_port, False))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"hypercorn exited with status {self.process.returncode}"
            for port, secure in ports:
                connection = (
                    http.client.HTTPSConnection(HOST, port, timeout=1.0, context=unverified_tls())
                    if secure
                    else http.client.HTTPConnection(HOST, port, timeout=1.0)
                )
                try:
                    connection.request("GET", "/health/")
                    response = connection.getresponse()
                    response.read()
                    if response.status != 200:
                        last_problem = f"GET /health/ on {port} answered {response.status}"
                        break
                except (OSError, http.client.HTTPException) as error:
                    last_problem = f"GET /health/ on {port} failed: {error!r}"
                    break
                finally:
                    connection.close()
            else:
                return None
            time.sleep(0.05)
        return f"not healthy after {START_TIMEOUT:.0f} s ({last_problem})"

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()  # Hypercorn's main process stops its worker, then exits
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Not reaped yet, so the process group (its own session) is still ours to kill.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)


def start_all(servers: Sequence[Hypercorn]) -> None:
    """Start every server in parallel, each retried on fresh ports; all healthy, or all
    stopped and the test fails with their logs."""
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            for attempt in range(1, START_ATTEMPTS + 1):
                problem = server.health_problem()
                if problem is None:
                    break
                server.stop()
                server.failures.append(f"attempt {attempt} on port {server.port}: {problem}")
                if attempt == START_ATTEMPTS:
                    pytest.fail(
                        f"Hypercorn ({server.app}) did not start:\n"
                        + "\n".join(server.failures)
                        + f"\n{server.log()}",
                        pytrace=False,
                    )
                server.spawn()
    except BaseException:
        stop_all(servers)
        raise


def stop_all(servers: Sequence[Hypercorn]) -> None:
    for server in servers:
        server.stop()


# --- the server of this module ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hypercorn]:
    base = tmp_path_factory.mktemp("http2")
    env = server_env(base / "data")
    migrate(env)
    hypercorn = Hypercorn(CONTRACT_APP, env, base / "hypercorn.log", make_certificate(base))
    start_all([hypercorn])
    try:
        yield hypercorn
    finally:
        stop_all([hypercorn])


# --- the configuration --------------------------------------------------------------------


def test_hypercorn_toml_is_valid_for_development_and_production() -> None:
    """Hypercorn silently ignores an unknown key: every key must be a Config attribute."""
    raw = tomllib.loads(CONFIG_PATH.read_text())
    unknown = sorted(key for key in raw if not hasattr(Config, key))
    assert unknown == [], f"hypercorn.toml keys Hypercorn does not know: {unknown}"
    config = Config.from_toml(CONFIG_PATH)
    assert config.bind == ["127.0.0.1:8000"] and config.workers == 1  # ./dev run
    assert config.certfile is None and config.keyfile is None  # TLS is opted into
    assert config.alpn_protocols == ["h2", "http/1.1"]
    assert "%({x-request-id}o)s" in config.access_log_format
    assert config.accesslog == "-"
    # nginx's upstream keepalive_timeout (60 s) < keep-alive < read timeout: the proxy
    # always closes an idle upstream connection first.
    assert config.read_timeout is not None
    assert 60 < config.keep_alive_timeout < config.read_timeout
    assert config.graceful_timeout > 0


# --- TLS + ALPN ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "selected"),
    [(["h2", "http/1.1"], "h2"), (["http/1.1", "h2"], "h2"), (["http/1.1"], "http/1.1")],
)
def test_alpn_prefers_h2(server: Hypercorn, offered: list[str], selected: str) -> None:
    with (
        socket.create_connection((HOST, server.port), timeout=SOCKET_TIMEOUT) as raw,
        unverified_tls(offered).wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        assert tls.selected_alpn_protocol() == selected


# --- the contract over HTTP/2 and HTTP/1.1 ------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    preflight: bool = False


PREFLIGHT = (
    ("Access-Control-Request-Method", "POST"),
    ("Access-Control-Request-Headers", "authorization, content-type"),
)
CASES = (
    Case("preflight", "OPTIONS", "/api/billing/carts/current/", PREFLIGHT, preflight=True),
    Case("ok", "GET", "/_probe/ok/"),
    Case("not-found", "GET", "/nope/"),
    Case("crash", "GET", "/_probe/crash/"),
)
EXPECTED_STATUS = {
    ("preflight", "allowed-exact"): 204,
    ("preflight", "disallowed"): 403,
    ("ok", "allowed-exact"): 200,
    ("ok", "disallowed"): 200,
    ("not-found", "allowed-exact"): 404,
    ("not-found", "disallowed"): 404,
    ("crash", "allowed-exact"): 500,
    ("crash", "disallowed"): 500,
}
ORIGINS = ("allowed-exact", "disallowed")


def request_headers(case: Case, origin_class: str) -> dict[str, str]:
    headers = dict(case.headers)
    origin = ORIGIN_CLASSES[origin_class]
    if origin is not None:
        headers["Origin"] = origin
    return headers


def cors_view(response: httpx.Response) -> dict[str, object]:
    """What the CORS contract depends on, comparable between protocols."""
    headers = list(response.headers.multi_items())
    return {
        "status": response.status_code,
        "cors": sorted(
            (name.lower(), value)
            for name, value in headers
            if name.lower().startswith("access-control-")
        ),
        "vary": sorted(vary_items(headers)),
        "request-id lines": sum(1 for name, _ in headers if name.lower() == "x-request-id"),
        "content-type": response.headers.get("content-type"),
        "body": response.content,
    }


def describe(response: httpx.Response, server: Hypercorn) -> str:
    lines = "\n".join(f"    {name}: {value}" for name, value in response.headers.multi_items())
    return (
        f"\n{response.request.method} {response.request.url} -> {response.http_version} "
        f"{response.status_code}\n{lines}\n  body: {response.content[:400]!r}\n"
        f"  server log (tail):\n{server.log()}"
    )


def check_contract(
    response: httpx.Response, case: Case, origin_class: str, server: Hypercorn
) -> None:
    assert response.status_code == EXPECTED_STATUS[case.id, origin_class], describe(
        response, server
    )
    try:
        assert_cors_contract(
            origin_class,
            response.status_code,
            list(response.headers.multi_items()),
            response.content,
            method=case.method,
            preflight=case.preflight,
        )
    except AssertionError as error:
        pytest.fail(f"{error}{describe(response, server)}", pytrace=False)


@pytest.mark.parametrize("origin_class", ORIGINS)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_http2_keeps_the_contract_of_http1(
    server: Hypercorn, case: Case, origin_class: str
) -> None:
    headers = request_headers(case, origin_class)
    async with (
        httpx.AsyncClient(http2=True, verify=False, timeout=SOCKET_TIMEOUT) as h2_client,
        httpx.AsyncClient(http1=True, http2=False, verify=False, timeout=SOCKET_TIMEOUT) as h1,
    ):
        over_h2 = await h2_client.request(case.method, server.base_url + case.path, headers=headers)
        over_h1 = await h1.request(case.method, server.base_url + case.path, headers=headers)
    assert over_h2.http_version == "HTTP/2", describe(over_h2, server)
    assert over_h1.http_version == "HTTP/1.1", describe(over_h1, server)
    check_contract(over_h2, case, origin_class, server)
    check_contract(over_h1, case, origin_class, server)
    assert cors_view(over_h2) == cors_view(over_h1), describe(over_h2, server) + describe(
        over_h1, server
    )


async def test_concurrent_streams_keep_their_own_cors_headers(server: Hypercorn) -> None:
    """Many requests from different origins multiplexed on one HTTP/2 connection: each
    response carries the headers of its own request, nothing leaks between streams."""
    work = [(case, origin_class) for case in CASES for origin_class in ORIGINS] * 3
    async with httpx.AsyncClient(http2=True, verify=False, timeout=SOCKET_TIMEOUT) as client:
        first = await client.get(server.base_url + "/health/")  # opens the connection
        responses = await asyncio.gather(
            *(
                client.request(
                    case.method,
                    server.base_url + case.path,
                    headers=request_headers(case, origin_class),
                )
                for case, origin_class in work
            )
        )
    assert first.http_version == "HTTP/2"
    for response, (case, origin_class) in zip(responses, work, strict=True):
        assert response.http_version == "HTTP/2", describe(response, server)
        check_contract(response, case, origin_class, server)
    connections = {id(r.extensions["network_stream"]) for r in [first, *responses]}
    streams = {r.extensions["stream_id"] for r in [first, *responses]}
    assert len(connections) == 1, "the requests were not multiplexed on one connection"
    assert len(streams) == len(responses) + 1


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_h2c_prior_knowledge_for_a_proxy(server: Hypercorn, case: Case) -> None:
    """The plain socket speaks HTTP/2 without TLS (h2c), as a proxy in front would use it."""
    headers = request_headers(case, "allowed-exact")
    async with httpx.AsyncClient(http1=False, http2=True, timeout=SOCKET_TIMEOUT) as client:
        response = await client.request(case.method, server.plain_url + case.path, headers=headers)
    assert response.http_version == "HTTP/2", describe(response, server)
    check_contract(response, case, "allowed-exact", server)


async def test_access_log_names_protocol_and_request_id(server: Hypercorn) -> None:
    origin = ORIGIN_CLASSES["allowed-exact"]
    assert origin is not None
    async with httpx.AsyncClient(http2=True, verify=False, timeout=SOCKET_TIMEOUT) as client:
        response = await client.get(server.base_url + "/nope/", headers={"Origin": origin})
    request_id = response.headers["x-request-id"]
    expected = '"GET /nope/ 2" 404 '
    deadline = time.monotonic() + LOG_WAIT
    while time.monotonic() < deadline:
        lines = [line for line in server.log(200_000).splitlines() if f"rid={request_id}" in line]
        if lines:
            assert expected in lines[0], lines[0]
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"no access log line with rid={request_id}:\n{server.log()}", pytrace=False)


# --- WebSockets: RFC 8441 over HTTP/2, compared with HTTP/1.1 -------------------------------


@dataclass
class H2WebSocket:
    settings: dict[int, int]
    status: int
    headers: list[tuple[str, str]]
    messages: list[str]
    body: bytes


def h2_websocket(port: int, path: str, origin: str, messages: int = 2) -> H2WebSocket:
    """An extended CONNECT (``:protocol: websocket``) on a TLS HTTP/2 connection; reads
    ``messages`` text frames once the server answers 200, then closes (1000)."""
    deadline = time.monotonic() + SOCKET_TIMEOUT
    with (
        socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT) as raw,
        unverified_tls(["h2"]).wrap_socket(raw, server_hostname=HOST) as sock,
    ):
        assert sock.selected_alpn_protocol() == "h2"
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        settings: dict[int, int] = {}
        frames = FrameProtocol(client=True, extensions=[])
        result: H2WebSocket | None = None
        stream_id: int | None = None
        finished = False
        while not finished:
            assert time.monotonic() < deadline, "the HTTP/2 WebSocket exchange timed out"
            data = sock.recv(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.RemoteSettingsChanged) and stream_id is None:
                    settings = {int(k): v.new_value for k, v in event.changed_settings.items()}
                    stream_id = connection.get_next_available_stream_id()
                    connection.send_headers(
                        stream_id,
                        [
                            (":method", "CONNECT"),
                            (":protocol", "websocket"),
                            (":scheme", "https"),
                            (":path", path),
                            (":authority", f"{HOST}:{port}"),
                            ("sec-websocket-version", "13"),
                            ("origin", origin),
                        ],
                    )
                elif isinstance(event, h2.events.ResponseReceived):
                    headers = [(str(k), str(v)) for k, v in event.headers]
                    status = int(dict(headers)[":status"])
                    result = H2WebSocket(settings, status, headers, [], b"")
                elif isinstance(event, h2.events.DataReceived):
                    assert result is not None
                    connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                    if result.status != 200:
                        result.body += event.data
                        continue
                    frames.receive_bytes(event.data)
                    for frame in frames.received_frames():
                        if frame.opcode is Opcode.TEXT:
                            result.messages.append(str(frame.payload))
                    if len(result.messages) >= messages:
                        assert stream_id is not None
                        connection.send_data(stream_id, frames.close(1000, "done"))
                        finished = True
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    finished = True
            sock.sendall(connection.data_to_send())
        assert result is not None, "no response to the extended CONNECT"
        return result


def h1_websocket(port: int, path: str, origin: str) -> tuple[int, str | None]:
    """The same handshake over HTTP/1.1 (wss): (101, first message) or (refusal status, None)."""
    try:
        with websockets.sync.client.connect(
            f"wss://{HOST}:{port}{path}",
            origin=Origin(origin),
            ssl=unverified_tls(["http/1.1"]),
            open_timeout=SOCKET_TIMEOUT,
            close_timeout=SOCKET_TIMEOUT,
            proxy=None,
        ) as connection:
            message = connection.recv(timeout=SOCKET_TIMEOUT)
            assert connection.response is not None
            return connection.response.status_code, str(message)
    except websockets.exceptions.InvalidStatus as error:
        return error.response.status_code, None


def test_http2_websocket_from_allowed_origin(server: Hypercorn) -> None:
    origin = ORIGIN_CLASSES["allowed-exact"]
    assert origin is not None
    over_h2 = h2_websocket(server.port, "/ws/chat/sales/", origin)
    # Hypercorn announces RFC 8441 and the limits of hypercorn.toml in its SETTINGS.
    config = Config.from_toml(CONFIG_PATH)
    assert over_h2.settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    assert over_h2.settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == (
        config.h2_max_concurrent_streams
    )
    assert over_h2.settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == (
        config.h2_max_header_list_size
    )
    assert over_h2.status == 200, (over_h2, server.log())
    greeting = json.loads(over_h2.messages[0])
    assert greeting["type"] == "connection_established" and greeting["room"] == "sales"
    status, message = h1_websocket(server.port, "/ws/chat/sales/", origin)
    assert status == 101
    assert message is not None and json.loads(message)["type"] == greeting["type"]


def test_http2_websocket_from_disallowed_origin_is_refused(server: Hypercorn) -> None:
    origin = ORIGIN_CLASSES["disallowed"]
    assert origin is not None
    over_h2 = h2_websocket(server.port, "/ws/chat/sales/", origin)
    assert over_h2.status == 403, (over_h2, server.log())
    assert over_h2.messages == []
    assert not any(name.startswith("access-control-") for name, _ in over_h2.headers)
    assert json.loads(over_h2.body)["status"] == 403
    assert h1_websocket(server.port, "/ws/chat/sales/", origin) == (403, None)
