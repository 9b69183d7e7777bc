"""Real processes for live tests: Hypercorn serving slyker, and a private redis-server.

Everything binds to 127.0.0.1 on a free port, every wait is bounded, and every process runs
in its own session so that teardown can kill its whole process group (Hypercorn's worker
included) if a polite SIGTERM is not enough. The approach is the one of
``tests/test_hypercorn_live.py``, for the real ``slyker:create_app()`` instead of the
contract app.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import SETTING_NAMES, TEST_SECRET_KEY

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SOCKET_TIMEOUT = 5.0
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0
START_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it
APP_PATH = "slyker:create_app()"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def slyker_env(**settings: str) -> dict[str, str]:
    """The test process's environment without any slyker setting, plus ``settings``."""
    env = {name: value for name, value in os.environ.items() if name not in SETTING_NAMES}
    env["SECRET_KEY"] = TEST_SECRET_KEY
    env["QUART_SKIP_DOTENV"] = "1"  # never read the developer's .env
    env.update(settings)
    return env


def _tool(name: str, module: str) -> list[str]:
    executable = VENV_BIN / name
    return [str(executable)] if executable.exists() else [sys.executable, "-m", module]


def run_command(args: list[str], env: Mapping[str, str], cwd: Path) -> str:
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


def migrate(env: Mapping[str, str], cwd: Path) -> str:
    return run_command([sys.executable, "-m", "slyker", "migrate"], env, cwd)


def create_user(
    env: Mapping[str, str], cwd: Path, email: str, password: str, role: str, **names: str
) -> str:
    """``quart --app 'slyker:create_app()' create-user`` against the database of ``env``."""
    args = [*_tool("quart", "quart"), "--app", APP_PATH, "create-user", email]
    args += ["--role", role, "--password", password]
    if names.get("first_name"):
        args += ["--first-name", names["first_name"]]
    if names.get("last_name"):
        args += ["--last-name", names["last_name"]]
    return run_command(args, env, cwd)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        # Not reaped yet, so the process group (its own session) is still ours to kill.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


def _tail(path: Path, limit: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"<log unreadable: {error}>"
    return text[-limit:] if len(text) > limit else text


# --- Hypercorn -----------------------------------------------------------------------------


@dataclass
class LiveServer:
    """One ``hypercorn --workers 1 'slyker:create_app()'`` process."""

    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def log(self, limit: int = 8000) -> str:
        return _tail(self.log_path, limit)

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
        connection = http.client.HTTPConnection(HOST, self.port, timeout=SOCKET_TIMEOUT)
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


def _hypercorn_command(port: int) -> list[str]:
    return [
        *_tool("hypercorn", "hypercorn"),
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        "1",
        APP_PATH,
    ]


def _health_problem(
    server: LiveServer, process: subprocess.Popen[bytes], deadline: float
) -> str | None:
    last_problem = "no attempt made"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"hypercorn exited with status {process.returncode}"
        connection = http.client.HTTPConnection(HOST, server.port, timeout=1.0)
        try:
            connection.request("GET", "/health/")
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                return None
            last_problem = f"GET /health/ answered {response.status}"
        except (OSError, http.client.HTTPException) as error:
            last_problem = f"GET /health/ failed: {error!r}"
        finally:
            connection.close()
        time.sleep(0.05)
    return f"not healthy after {START_TIMEOUT:.0f} s ({last_problem})"


def _spawn_hypercorn(
    name: str, env: Mapping[str, str], log_dir: Path, attempt: int
) -> tuple[LiveServer, subprocess.Popen[bytes]]:
    server = LiveServer(name, free_port(), log_dir / f"{name}-{attempt}.log")
    with server.log_path.open("wb") as log_file:
        process = subprocess.Popen(
            _hypercorn_command(server.port),
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server.process = process
    return server, process


def start_servers(names: list[str], env: Mapping[str, str], log_dir: Path) -> list[LiveServer]:
    """Start one Hypercorn per name (in parallel), each retried on a fresh port; all
    healthy, or every process stopped again and a RuntimeError with the logs."""
    started: list[LiveServer] = []
    pending: dict[str, tuple[int, LiveServer, subprocess.Popen[bytes]]] = {}
    failures: list[str] = []
    try:
        for name in names:
            pending[name] = (1, *_spawn_hypercorn(name, env, log_dir, 1))
        while pending:
            name, (attempt, server, process) = next(iter(pending.items()))
            problem = _health_problem(server, process, time.monotonic() + START_TIMEOUT)
            del pending[name]
            if problem is None:
                started.append(server)
                continue
            _stop_process(process)
            failures.append(f"{name} attempt {attempt} on {server.port}: {problem}\n{server.log()}")
            if attempt >= START_ATTEMPTS:
                raise RuntimeError("Hypercorn did not start:\n" + "\n\n".join(failures))
            pending[name] = (attempt + 1, *_spawn_hypercorn(name, env, log_dir, attempt + 1))
    except BaseException:
        stop_servers(started)
        for _attempt, _server, process in pending.values():
            _stop_process(process)
        raise
    order = {name: index for index, name in enumerate(names)}
    return sorted(started, key=lambda server: order[server.name])


def stop_servers(servers: list[LiveServer]) -> None:
    for server in servers:
        if server.process is not None:
            _stop_process(server.process)


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
        raise RuntimeError(f"redis-server did not start:\n{_tail(log_path, 4000)}")

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
            _stop_process(self.process)


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
