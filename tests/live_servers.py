"""Real processes for live tests: Hypercorn, nginx, a private redis-server, raw HTTP.

The one place for the machinery the live test modules share: free loopback ports, the
environment of a child server, processes spawned in a session of their own with a log file,
health polling with retries on fresh ports, teardown of a whole process group, log tails, and
raw ``http.client`` exchanges that keep every header line.

Everything binds to 127.0.0.1 on a free port, every wait is bounded, and every process runs
in its own session so that teardown can kill its whole process group (Hypercorn's worker
included) if a polite signal is not enough.

Hypercorn imports some test modules that use this one (``tests/live_nginx.py`` is an app
factory), so ``tests.conftest`` is only imported inside the functions that need it: importing
it in a worker would empty the worker's slyker settings (DATA_DIR included).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SOCKET_TIMEOUT = 5.0
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0
START_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it
APP_PATH = "slyker:create_app()"
VENV_BIN = Path(sys.executable).parent

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_env(**settings: str) -> dict[str, str]:
    """The test process's environment without any slyker setting, plus ``settings``."""
    from tests.conftest import SETTING_NAMES  # not at import time: see the module docstring

    env = {name: value for name, value in os.environ.items() if name not in SETTING_NAMES}
    env["QUART_SKIP_DOTENV"] = "1"  # never read the developer's .env
    env.update(settings)
    return env


def slyker_env(**settings: str) -> dict[str, str]:
    """:func:`child_env` with the test SECRET_KEY (``settings`` may replace it)."""
    from tests.conftest import TEST_SECRET_KEY

    # A socket without a token is closed within the tests' waits (default 5 s).
    return child_env(**{"SECRET_KEY": TEST_SECRET_KEY, "CHAT_AUTH_FRAME_TIMEOUT": "1", **settings})


def venv_tool(name: str, module: str) -> list[str]:
    """The virtualenv's console script ``name``, else ``python -m module``."""
    executable = VENV_BIN / name
    return [str(executable)] if executable.exists() else [sys.executable, "-m", module]


def run_command(args: list[str], env: Mapping[str, str], cwd: Path = REPO_ROOT) -> str:
    """Run a short command to completion (bounded); its output, or a failure naming it."""
    result = subprocess.run(
        args,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def migrate(env: Mapping[str, str], cwd: Path = REPO_ROOT) -> str:
    """``python -m slyker migrate`` for the database of ``env``."""
    return run_command([sys.executable, "-m", "slyker", "migrate"], env, cwd)


def create_user(
    env: Mapping[str, str], cwd: Path, email: str, password: str, role: str, **names: str
) -> str:
    """``quart --app 'slyker:create_app()' create-user`` against the database of ``env``."""
    args = [*venv_tool("quart", "quart"), "--app", APP_PATH, "create-user", email]
    args += ["--role", role, "--password", password]
    if names.get("first_name"):
        args += ["--first-name", names["first_name"]]
    if names.get("last_name"):
        args += ["--last-name", names["last_name"]]
    return run_command(args, env, cwd)


# --- processes -----------------------------------------------------------------------------


def spawn(
    args: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO_ROOT,
) -> subprocess.Popen[bytes]:
    """``args`` in a session of its own, stdout and stderr to ``log_path``."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            list(args),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """``sig`` (Hypercorn stops its worker, then exits; for nginx TERM is the fast shutdown),
    then SIGKILL to the whole process group if it does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        # Not reaped yet, so the process group (its own session) is still ours to kill.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


def tail(path: Path, limit: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"<log unreadable: {error}>"
    return text[-limit:] if len(text) > limit else text


def start_with_retries(
    what: str,
    attempt: Callable[[int], tuple[T, None] | tuple[None, str]],
    attempts: int = START_ATTEMPTS,
) -> T:
    """``attempt(1)``, ``attempt(2)``, ...: each returns (the started server, None) or, having
    stopped what it started, (None, why not with its log). A RuntimeError with every failure
    when no attempt succeeds."""
    failures = []
    for number in range(1, attempts + 1):
        started, problem = attempt(number)
        if problem is None:
            assert started is not None
            return started
        failures.append(f"attempt {number}: {problem}")
    raise RuntimeError(f"{what} did not start:\n" + "\n\n".join(failures))


# --- TLS -----------------------------------------------------------------------------------


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


def unverified_tls(alpn: Sequence[str] | None = None) -> ssl.SSLContext:
    """TLS without verification (the certificate is the test's own, self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        context.set_alpn_protocols(list(alpn))
    return context


# --- health --------------------------------------------------------------------------------


def connection_to(
    port: int, secure: bool = False, timeout: float = SOCKET_TIMEOUT
) -> http.client.HTTPConnection:
    if secure:
        return http.client.HTTPSConnection(HOST, port, timeout=timeout, context=unverified_tls())
    return http.client.HTTPConnection(HOST, port, timeout=timeout)


def health_problem(
    process: subprocess.Popen[bytes],
    endpoints: Sequence[tuple[int, bool]],
    timeout: float = START_TIMEOUT,
    what: str = "hypercorn",
) -> str | None:
    """None once ``GET /health/`` answers 200 on every (port, TLS?) endpoint, else why not
    (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    last_problem = "no attempt made"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"{what} exited with status {process.returncode}"
        for port, secure in endpoints:
            connection = connection_to(port, secure, timeout=1.0)
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
    return f"not healthy after {timeout:.0f} s ({last_problem})"


def wait_for_health(port: int, process: subprocess.Popen[bytes], timeout: float) -> str | None:
    """None once ``GET /health/`` answers 200 on ``port`` (plain HTTP), else why not."""
    return health_problem(process, [(port, False)], timeout, what="process")


# --- Hypercorn -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hypercorn:
    """What to run: ``hypercorn [args] --bind 127.0.0.1:<port> --workers 1 <app>``, or with
    ``supervised`` the same options to ``python -m slyker serve`` (what ``./dev run`` and the
    Docker image run: Hypercorn's worker under slyker's supervisor).

    ``args`` are extra options (``--config``, access log settings); with ``tls``
    (certfile, keyfile) the main bind is TLS and a plain ``--insecure-bind`` runs next to it.
    """

    name: str
    env: Mapping[str, str]
    app: str = APP_PATH
    args: Sequence[str] = ()
    tls: tuple[Path, Path] | None = None
    supervised: bool = False
    workers: int = 1

    def command(self, port: int, plain_port: int | None) -> list[str]:
        if self.supervised:
            program = [sys.executable, "-m", "slyker", "serve"]
        else:
            program = venv_tool("hypercorn", "hypercorn")
        args = [*program, *self.args, "--bind", f"{HOST}:{port}"]
        if self.tls is not None:
            certfile, keyfile = self.tls
            args += ["--certfile", str(certfile), "--keyfile", str(keyfile)]
            args += ["--insecure-bind", f"{HOST}:{plain_port}"]
        return [*args, "--workers", str(self.workers), self.app]


@dataclass
class LiveServer:
    """One running Hypercorn process (see :class:`Hypercorn`)."""

    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    failures: list[str] = field(default_factory=list)
    tls: bool = False
    plain_port: int | None = None  # the plain-HTTP bind of a TLS server

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{HOST}:{self.port}"

    @property
    def plain_url(self) -> str:
        assert self.plain_port is not None
        return f"http://{HOST}:{self.plain_port}"

    @property
    def endpoints(self) -> list[tuple[int, bool]]:
        found = [(self.port, self.tls)]
        if self.plain_port is not None:
            found.append((self.plain_port, False))
        return found

    def log(self, limit: int = 8000) -> str:
        return tail(self.log_path, limit)

    def connect(self) -> http.client.HTTPConnection:
        return connection_to(self.port, self.tls)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """A JSON request on a fresh connection: (status, decoded body or raw bytes)."""
        request_headers = dict(headers or {})
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            request_headers["Content-Type"] = "application/json"
        if token is not None:
            request_headers["Authorization"] = f"Bearer {token}"
        connection = self.connect()
        try:
            connection.request(method, path, body=payload, headers=request_headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw


def _spawn_hypercorn(spec: Hypercorn, log_dir: Path, attempt: int) -> LiveServer:
    server = LiveServer(spec.name, free_port(), log_dir / f"{spec.name}-{attempt}.log")
    server.tls = spec.tls is not None
    server.plain_port = free_port() if spec.tls is not None else None
    server.process = spawn(spec.command(server.port, server.plain_port), server.log_path, spec.env)
    return server


def start_hypercorns(
    specs: Sequence[Hypercorn], log_dir: Path, attempts: int = START_ATTEMPTS
) -> list[LiveServer]:
    """Start one Hypercorn per spec (in parallel), each retried on fresh ports; all healthy,
    in the order of ``specs``, or every process stopped again and a RuntimeError with the
    logs."""
    log_dir.mkdir(parents=True, exist_ok=True)
    started: dict[int, LiveServer] = {}
    pending: dict[int, tuple[int, LiveServer]] = {}
    failures: list[str] = []
    try:
        for index, spec in enumerate(specs):
            pending[index] = (1, _spawn_hypercorn(spec, log_dir, 1))
        while pending:
            index, (attempt, server) = next(iter(pending.items()))
            assert server.process is not None
            problem = health_problem(server.process, server.endpoints)
            del pending[index]
            if problem is None:
                started[index] = server
                continue
            server.stop()
            failures.append(
                f"{server.name} ({specs[index].app}) attempt {attempt} on {server.port}: "
                f"{problem}\n{server.log()}"
            )
            if attempt >= attempts:
                raise RuntimeError("Hypercorn did not start:\n" + "\n\n".join(failures))
            pending[index] = (attempt + 1, _spawn_hypercorn(specs[index], log_dir, attempt + 1))
    except BaseException:
        stop_servers(list(started.values()))
        stop_servers([server for _attempt, server in pending.values()])
        raise
    return [started[index] for index in range(len(specs))]


def start_hypercorn(spec: Hypercorn, log_dir: Path, attempts: int = START_ATTEMPTS) -> LiveServer:
    """One healthy Hypercorn (see :func:`start_hypercorns`)."""
    (server,) = start_hypercorns([spec], log_dir, attempts)
    return server


def start_servers(names: list[str], env: Mapping[str, str], log_dir: Path) -> list[LiveServer]:
    """One ``hypercorn 'slyker:create_app()'`` per name, all with ``env``."""
    return start_hypercorns([Hypercorn(name, env) for name in names], log_dir)


def stop_servers(servers: Sequence[LiveServer]) -> None:
    for server in servers:
        server.stop()


# --- raw HTTP: every header line the server wrote ------------------------------------------


class Connectable(Protocol):
    def connect(self) -> http.client.HTTPConnection: ...


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name.lower()]


@dataclass
class RawResponse:
    method: str
    path: str
    status: int
    headers: list[tuple[str, str]]  # every header line, in order, duplicates kept
    body: bytes

    def values(self, name: str) -> list[str]:
        return header_values(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        """The raw exchange, for failure messages (callers add the server's log)."""
        lines = "\n".join(f"    {key}: {value}" for key, value in self.headers)
        return (
            f"\n{self.method} {self.path} -> {self.status}\n  raw headers:\n{lines}\n"
            f"  body: {self.body[:600]!r}"
        )


def assert_raw_cors_contract(
    response: RawResponse,
    origin_class: str,
    single_headers: Sequence[str],
    context: Callable[[], str],
    *,
    preflight: bool = False,
) -> None:
    """The shared CORS contract (``tests/cors_contract.py``) on the raw header lines, and no
    header of ``single_headers`` repeated; ``context()`` (the raw exchange and the server's
    log) ends every failure message."""
    import pytest  # not at import time: Hypercorn workers import this module

    from tests.cors_contract import assert_cors_contract

    try:
        assert_cors_contract(
            origin_class,
            response.status,
            response.headers,
            response.body,
            method=response.method,
            preflight=preflight,
        )
    except AssertionError as error:
        pytest.fail(f"{error}{context()}", pytrace=False)
    for name in single_headers:
        count = len(response.values(name))
        assert count <= 1, f"{name} repeated ({count} lines)" + context()


def send(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    origin: str | None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> RawResponse:
    """One exchange on ``connection`` (kept open), with ``Origin`` when given."""
    request_headers = dict(headers or {})
    if origin is not None:
        request_headers["Origin"] = origin
    connection.request(method, path, body=body, headers=request_headers)
    response = connection.getresponse()
    payload = response.read()
    return RawResponse(method, path, response.status, response.getheaders(), payload)


def fetch(
    server: Connectable,
    method: str,
    path: str,
    origin: str | None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> RawResponse:
    """One exchange on a fresh connection to ``server``."""
    connection = server.connect()
    try:
        return send(connection, method, path, origin, headers, body)
    finally:
        connection.close()


# --- redis-server --------------------------------------------------------------------------


class RedisProcess:
    """A private ``redis-server`` on a free loopback port: no persistence, never the
    machine's own Redis. ``kill()`` is SIGKILL (a crash); ``start()`` again reuses the port."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.port_fixed = False  # once clients know the port, a restart must reuse it

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        for _attempt in range(START_ATTEMPTS):
            self.starts += 1
            log_path = self.log_dir / f"redis-{self.starts}.log"
            with log_path.open("wb") as log_file:
                self.process = subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(self.port),
                        "--bind",
                        HOST,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(self.log_dir),
                    ],
                    cwd=self.log_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.process.poll() is None:
                if self.ping():
                    self.port_fixed = True
                    return
                time.sleep(0.02)
            self.stop()
            if not self.port_fixed:  # taken between choosing and binding it: a fresh one
                self.port = free_port()
        raise RuntimeError(f"redis-server did not start:\n{tail(log_path, 4000)}")

    def ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: Redis vanishes mid-conversation, as in a crash."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


# --- a private PostgreSQL ------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """Debian's PostgreSQL binaries (``initdb``, ``postgres``), the newest version, if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parent)
    return found[-1].parent if found else None


class PostgresProcess:
    """A private PostgreSQL cluster (``initdb`` in a temporary directory, ``postgres`` on a
    free loopback port, trust authentication), never the machine's own server.

    ``pause()`` stops every process of the cluster with SIGSTOP (the postmaster and each
    connection's backend, as a hung host or disk would), ``resume()`` continues them. As root
    the cluster runs as the ``postgres`` user (``initdb`` refuses root)."""

    def __init__(self) -> None:
        import pwd
        import tempfile

        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL binaries not found under /usr/lib/postgresql")
        self.bin_dir = bin_dir
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.root = Path(tempfile.mkdtemp(prefix="slyker-pg-"))
        if self.user is not None:
            os.chown(self.root, self.uid, self.gid)
        self.data_dir = self.root / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"postgres://postgres@{HOST}:{self.port}/postgres"

    def _run(self, args: list[str]) -> None:
        subprocess.run(
            args,
            user=self.user,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=True,
        )

    def start(self) -> None:
        if not self.data_dir.exists():
            initdb = [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres"]
            self._run([*initdb, "-A", "trust", "--no-sync", "-E", "UTF8"])
        for attempt in range(1, START_ATTEMPTS + 1):
            log_path = self.root / f"postgres-{attempt}.log"
            with log_path.open("wb") as log_file:
                if self.user is not None:
                    os.chown(log_path, self.uid, self.gid)
                args = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
                args += ["-p", str(self.port), "-k", str(self.root), "-h", HOST]
                args += ["-c", "fsync=off", "-c", "max_connections=100"]
                self.process = subprocess.Popen(
                    args,
                    user=self.user,
                    cwd=self.root,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.process.poll() is None:
                if self._accepts():
                    return
                time.sleep(0.1)
            self.stop()
            self.port = free_port()
        raise RuntimeError(f"postgres did not start:\n{tail(log_path, 4000)}")

    def _accepts(self) -> bool:
        result = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-h", HOST, "-p", str(self.port), "-t", "1"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return result.returncode == 0

    def _children(self) -> list[int]:
        """The postmaster's processes (each backend calls setsid(): no shared group)."""
        assert self.process is not None
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rpartition(")")[2].split()[1])
            if parent == self.process.pid:
                children.append(int(entry.name))
        return children

    def pause(self) -> None:
        """SIGSTOP the postmaster first (it forks nothing more), then every backend."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True
        for pid in self._children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        for pid in self._children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if self.paused:
            self.resume()
        self.process.send_signal(signal.SIGINT)  # fast shutdown
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)

    def remove(self) -> None:
        import shutil

        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# --- raw WebSocket handshakes --------------------------------------------------------------


@dataclass
class Handshake:
    status: int
    status_line: bytes
    headers: list[tuple[str, str]]
    body: bytes  # what followed the header block (for 101: the first WebSocket bytes)

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def describe(self) -> str:
        lines = "\n".join(f"    {key}: {value}" for key, value in self.headers)
        return f"{self.status_line!r}\n{lines}\n  body: {self.body[:300]!r}"


def raw_handshake(
    port: int,
    path: str,
    origin: str | bytes | None,
    host: str,
    *,
    read_first_frame: bool = False,
) -> Handshake:
    """Send a raw HTTP/1.1 WebSocket upgrade; the raw status line and headers as sent."""
    lines = [
        f"GET {path} HTTP/1.1".encode(),
        b"Host: " + host.encode(),
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)),
        b"Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        value = origin if isinstance(origin, bytes) else origin.encode("utf-8")
        lines.append(b"Origin: " + value)
    with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        headers = []
        for line in header_lines:
            key, _, value = line.decode("latin-1").partition(":")
            headers.append((key.strip(), value.strip()))
        parts = status_line.split(b" ", 2)
        status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
        if status == 101 and read_first_frame:
            rest = _read_frame(sock, rest)
        elif status != 101:
            length = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
            while length is not None and len(rest) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
    return Handshake(status, status_line, headers, rest)


def _read_frame(sock: socket.socket, buffered: bytes) -> bytes:
    """The payload of the first (unmasked, server-to-client) WebSocket frame."""
    data = buffered

    def need(count: int) -> None:
        nonlocal data
        while len(data) < count:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed inside a frame: {data!r}")
            data += chunk

    need(2)
    length, offset = data[1] & 0x7F, 2
    if length == 126:
        need(4)
        length, offset = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        need(10)
        length, offset = int.from_bytes(data[2:10], "big"), 10
    need(offset + length)
    opcode = data[0] & 0x0F
    payload = data[offset : offset + length]
    return bytes([opcode]) + payload


# --- an app the test already started, served over HTTP in the test's own event loop --------


def loopback_listener() -> tuple[socket.socket, str]:
    """A listening socket on a free loopback port and its base URL: the URL is known (for
    settings that name it) before the app that will serve on it exists."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(128)
    return listener, f"http://{HOST}:{listener.getsockname()[1]}"


@asynccontextmanager
async def serving_in_loop(app: Any, listener: socket.socket) -> AsyncIterator[str]:
    """Serve ``app`` (a Quart app inside ``async with app.test_app()``, so its database is
    the test's) with Hypercorn in this event loop on ``listener`` (see
    :func:`loopback_listener`); yields its base URL. For peers that must reach slyker over
    the network (the Paynow simulator POSTing to the result URL) while the test keeps using
    the in-process client and models.

    Hypercorn's lifespan messages are answered here: the app was started by ``test_app``,
    and a second start-up would replace its database context.
    """
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    async def without_lifespan(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                stage = (await receive())["type"].rsplit(".", 1)[-1]  # startup / shutdown
                await send({"type": f"lifespan.{stage}.complete"})
                if stage == "shutdown":
                    return
        await app(scope, receive, send)

    port = int(listener.getsockname()[1])
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]  # Hypercorn owns (and closes) the socket
    config.accesslog = None
    config.graceful_timeout = 2
    shutdown = asyncio.Event()
    task = asyncio.create_task(serve(without_lifespan, config, shutdown_trigger=shutdown.wait))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if task.done():
                task.result()  # raises why it stopped
                raise RuntimeError("Hypercorn stopped before serving")
            try:
                _reader, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Hypercorn did not listen on {port}") from None
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            break
        yield f"http://{HOST}:{port}"
    finally:
        shutdown.set()
        await asyncio.wait_for(task, STOP_TIMEOUT)
