"""``python -m slyker check-cors`` (:mod:`slyker.tools.corscheck`) against live local stacks.

- the real app (``slyker:create_app()``, migrated SQLite database) on Hypercorn, over plain
  HTTP and over TLS with HTTP/2: every check passes, exit status 0;
- the real app behind a proxy that adds its own ``Access-Control-Allow-Origin`` (the old
  outage): as a test-only ASGI wrapper served by Hypercorn, and with Debian's real nginx and
  ``add_header Access-Control-Allow-Origin $http_origin always;`` when nginx is installed;
- the real app behind a proxy that lets every origin in (reflects any Origin into the CORS
  headers and rewrites the WebSocket handshake's Origin): the foreign-origin checks fail;
- nothing listening at all; and bad command lines (exit status 2).

The misconfigured apps are built by :func:`misconfigured_app`, which Hypercorn imports from
this module; their settings travel in the app path, not the environment.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

from slyker.app import create_app
from slyker.tools import corscheck
from tests.conftest import TEST_SECRET_KEY
from tests.live_servers import (
    COMMAND_TIMEOUT,
    HOST,
    REPO_ROOT,
    Hypercorn,
    LiveServer,
    child_env,
    free_port,
    health_problem,
    make_certificate,
    migrate,
    spawn,
    start_hypercorns,
    start_with_retries,
    stop_process,
    stop_servers,
    tail,
)

FRONT = "https://front.example"
FOREIGN = "https://evil.example"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
ALLOWED_REQUESTS = (
    "OPTIONS /api/billing/carts/current/",
    "OPTIONS /api/token/",
    "OPTIONS /health/",
    "GET /health/",
)
ALL_CHECKS = {
    "preflight",
    "normal-response",
    "error-response",
    "duplicate-acao",
    "credentials",
    "vary-origin",
    "foreign-origin",
    "websocket-allowed",
    "websocket-foreign",
}
ROW_COUNT = 31  # 3 preflights x 3 + 2 GETs x 4 + 5 foreign requests x 2 + 2 GETs' Vary + 2 WS


def app_settings(data_dir: str) -> dict[str, str]:
    return {"SECRET_KEY": TEST_SECRET_KEY, "CORS_ALLOWED_ORIGINS": FRONT, "DATA_DIR": data_dir}


# --- the misconfigured proxies (test-only ASGI wrappers) ----------------------------------


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key.lower() == name), None)


class ProxyAddsAllowOrigin:
    """What nginx's ``add_header Access-Control-Allow-Origin $http_origin always;`` did in
    front of the app: one more ``Access-Control-Allow-Origin`` on every response."""

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None:
            await self.app(scope, receive, send)
            return

        async def add_header(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"access-control-allow-origin", origin)]
                message = {**message, "headers": headers}
            await send(message)  # type: ignore[arg-type]

        await self.app(scope, receive, add_header)  # type: ignore[arg-type]


REFLECTED = (b"access-control-allow-origin", b"access-control-allow-credentials")


class ProxyLetsEveryOriginIn:
    """CORS "fixed" in the proxy without an allow-list: any Origin is reflected with
    credentials, and the WebSocket handshake's Origin is rewritten to the front-end's (the
    ``proxy_set_header Origin ...`` hack that silences 403s)."""

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        origin = _header(scope, b"origin")
        if scope["type"] == "websocket" and origin is not None:
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"origin"]
            scope = {**scope, "headers": [*headers, (b"origin", FRONT.encode())]}  # type: ignore[typeddict-item]
        if scope["type"] != "http" or origin is None:
            await self.app(scope, receive, send)
            return

        async def reflect(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                headers = [
                    (key, value)
                    for key, value in message.get("headers", [])
                    if key.lower() not in REFLECTED
                ]
                headers += [
                    (b"access-control-allow-origin", origin),
                    (b"access-control-allow-credentials", b"true"),
                ]
                message = {**message, "headers": headers}
            await send(message)  # type: ignore[arg-type]

        await self.app(scope, receive, reflect)  # type: ignore[arg-type]


FAULTS: dict[str, type[ProxyAddsAllowOrigin] | type[ProxyLetsEveryOriginIn]] = {
    "duplicate": ProxyAddsAllowOrigin,
    "reflect": ProxyLetsEveryOriginIn,
}


def misconfigured_app(fault: str, data_dir: str) -> ASGIFramework:
    """``hypercorn 'tests.test_corscheck:misconfigured_app("duplicate", "/data")'``."""
    app = create_app(app_settings(data_dir))
    wrapper = FAULTS[fault](app)  # type: ignore[arg-type]
    # Hypercorn serves whatever it gets as ASGI; Quart's lifespan (database, chat broker)
    # still runs because the wrappers pass every non-HTTP scope through.
    return wrapper  # type: ignore[return-value]


# --- the stacks ---------------------------------------------------------------------------


@dataclass
class Stacks:
    good: LiveServer
    duplicate: LiveServer
    reflect: LiveServer


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    base = tmp_path_factory.mktemp("corscheck")
    data_dir = base / "data"
    env = child_env(**app_settings(str(data_dir)))
    migrate(env)
    config = ("--config", str(REPO_ROOT / "hypercorn.toml"))
    good = Hypercorn("good", env, "slyker:create_app()", config, make_certificate(base))
    faulty = [
        Hypercorn(
            fault,
            env,
            f"tests.test_corscheck:misconfigured_app({fault!r}, {str(data_dir)!r})",
            config,
        )
        for fault in FAULTS
    ]
    servers = start_hypercorns([good, *faulty], base)
    try:
        yield Stacks(*servers)
    finally:
        stop_servers(servers)


@dataclass
class Nginx:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log(self) -> str:
        return tail(self.log_path, 4000)


NGINX_CONF = """
daemon off;
master_process off;  # one process, run as the test's user: nothing to drop privileges to
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {base}/client_temp;
    proxy_temp_path {base}/proxy_temp;
    fastcgi_temp_path {base}/fastcgi_temp;
    uwsgi_temp_path {base}/uwsgi_temp;
    scgi_temp_path {base}/scgi_temp;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://{host}:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 10s;
            # THE MISTAKE (the old outage): CORS added by the proxy as well as by the app.
            add_header Access-Control-Allow-Origin $http_origin always;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def nginx_adding_cors(stacks: Stacks, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if NGINX is None:
        pytest.skip("nginx is not installed")
    nginx_binary = NGINX

    def attempt(number: int) -> tuple[Nginx, None] | tuple[None, str]:
        base = tmp_path_factory.mktemp("nginx")
        port = free_port()
        conf = base / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(base=base, host=HOST, port=port, upstream=stacks.good.plain_port)
        )
        log_path = base / "nginx-error.log"
        command = [nginx_binary, "-p", str(base), "-e", str(log_path), "-c", str(conf)]
        process = spawn(command, base / "nginx-stderr.log", cwd=base)
        nginx = Nginx(port, process, log_path)
        problem = health_problem(process, [(port, False)], what="nginx")
        if problem is None:
            return nginx, None
        stop_process(process)  # fast shutdown
        stderr = tail(base / "nginx-stderr.log")
        return None, f"on {port}: {problem}\n{stderr}\n{nginx.log()}"

    nginx = start_with_retries("nginx", attempt)
    try:
        yield nginx
    finally:
        stop_process(nginx.process)


# --- running the checker ------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    status: int
    output: str
    rows: list[tuple[str, str, str, str]]  # check, request, PASS/FAIL, reason

    def failed(self) -> set[tuple[str, str]]:
        return {(check, request) for check, request, result, _ in self.rows if result == "FAIL"}

    def failed_checks(self) -> set[str]:
        return {check for check, _ in self.failed()}

    def result(self, check: str, request: str) -> str:
        found = [row[2] for row in self.rows if row[0] == check and row[1] == request]
        assert len(found) == 1, (check, request, self.output)
        return found[0]


def parse_table(output: str) -> list[tuple[str, str, str, str]]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("CHECK "))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = re.split(r" {2,}", line.strip(), maxsplit=3)
        rows.append((cells[0], cells[1], cells[2], cells[3] if len(cells) > 3 else ""))
    return rows


def run(*args: str) -> Run:
    out = io.StringIO()
    status = corscheck.main(list(args), stdout=out)
    output = out.getvalue()
    return Run(status, output, parse_table(output) if output else [])


def check_args(api: str, *extra: str) -> list[str]:
    return ["--api", api, "--origin", FRONT, "--foreign-origin", FOREIGN, "--timeout", "5", *extra]


# --- a correct stack ----------------------------------------------------------------------


def test_correct_stack_passes_every_check(stacks: Stacks) -> None:
    result = run(*check_args(stacks.good.plain_url))
    assert result.status == 0, result.output + stacks.good.log()
    assert len(result.rows) == ROW_COUNT, result.output
    assert {row[0] for row in result.rows} == ALL_CHECKS
    assert {row[2] for row in result.rows} == {"PASS"}, result.output
    assert result.output.rstrip().endswith(f"{ROW_COUNT} checks, 0 failed")
    assert result.result("websocket-allowed", "WS /ws/chat/sales/") == "PASS"
    assert result.result("websocket-foreign", "WS /ws/chat/sales/ (foreign)") == "PASS"


def test_correct_stack_over_tls_and_http2(stacks: Stacks) -> None:
    result = run(*check_args(stacks.good.base_url, "--insecure", "--http2"))
    assert result.status == 0, result.output + stacks.good.log()
    assert {row[2] for row in result.rows} == {"PASS"}, result.output
    # The certificate is self-signed: without --insecure every request fails verification.
    strict = run(*check_args(stacks.good.base_url, "--path", "/health/"))
    assert strict.status == 1
    assert {row[2] for row in strict.rows} == {"FAIL"}, strict.output
    assert "CERTIFICATE_VERIFY_FAILED" in strict.output


def test_preflight_paths_are_chosen_with_path(stacks: Stacks) -> None:
    result = run(*check_args(stacks.good.plain_url, "--path", "/api/accounts/users/me/"))
    assert result.status == 0, result.output
    assert result.result("preflight", "OPTIONS /api/accounts/users/me/") == "PASS"
    assert not any(row[1] == "OPTIONS /api/token/" for row in result.rows)


def test_as_a_subprocess(stacks: Stacks) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "slyker.tools.corscheck", *check_args(stacks.good.plain_url)],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"{ROW_COUNT} checks, 0 failed" in completed.stdout
    assert len(parse_table(completed.stdout)) == ROW_COUNT


def test_as_a_slyker_subcommand() -> None:
    from slyker import __main__ as slyker_main

    if "check-cors" not in slyker_main.USAGE:
        pytest.skip("python -m slyker has no check-cors subcommand yet")
    completed = subprocess.run(
        [sys.executable, "-m", "slyker", "check-cors", "--api", "ftp://x", "--origin", FRONT],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "--api" in completed.stderr and "check-cors" in completed.stderr


# --- misconfigured stacks -----------------------------------------------------------------


def assert_caught_duplicate(result: Run, log: str) -> None:
    assert result.status == 1, result.output + log
    not_found = next(row[1] for row in result.rows if row[0] == "error-response")
    for request in (*ALLOWED_REQUESTS, not_found):
        assert result.result("duplicate-acao", request) == "FAIL", result.output
    assert "2 Access-Control-Allow-Origin headers" in result.output
    # The proxy's copy reaches the foreign origin too.
    assert {request for check, request in result.failed() if check == "foreign-origin"} == {
        row[1] for row in result.rows if row[0] == "foreign-origin"
    }
    assert result.failed_checks() == {
        "duplicate-acao",
        "foreign-origin",
        "preflight",
        "normal-response",
        "error-response",
    }, result.output
    # What the proxy did not touch is still reported as fine.
    assert {row[2] for row in result.rows if row[0] in ("credentials", "vary-origin")} == {"PASS"}
    assert result.result("websocket-allowed", "WS /ws/chat/sales/") == "PASS"
    assert result.result("websocket-foreign", "WS /ws/chat/sales/ (foreign)") == "PASS"


def test_catches_a_proxy_adding_its_own_allow_origin(stacks: Stacks) -> None:
    result = run(*check_args(stacks.duplicate.base_url))
    assert_caught_duplicate(result, stacks.duplicate.log())


def test_catches_nginx_adding_its_own_allow_origin(nginx_adding_cors: Nginx) -> None:
    result = run(*check_args(nginx_adding_cors.base_url))
    assert_caught_duplicate(result, nginx_adding_cors.log())


def test_catches_a_proxy_that_lets_every_origin_in(stacks: Stacks) -> None:
    result = run(*check_args(stacks.reflect.base_url))
    assert result.status == 1, result.output + stacks.reflect.log()
    assert result.failed_checks() == {"foreign-origin", "websocket-foreign"}, result.output
    foreign_rows = [row for row in result.rows if row[0] == "foreign-origin"]
    assert len(foreign_rows) == 5 and {row[2] for row in foreign_rows} == {"FAIL"}
    assert all(f"access-control-allow-origin: {FOREIGN}" in row[3] for row in foreign_rows)
    assert "upgraded (101)" in result.output


def test_nothing_listening_fails_every_check() -> None:
    result = run(*check_args(f"http://{HOST}:{free_port()}", "--timeout", "2"))
    assert result.status == 1
    assert len(result.rows) == ROW_COUNT
    assert {row[2] for row in result.rows} == {"FAIL"}, result.output
    assert all("failed" in row[3] for row in result.rows), result.output


# --- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "required"),
        (["--api", "http://127.0.0.1:1"], "--origin"),
        (["--api", "ftp://api.example", "--origin", FRONT], "--api"),
        (["--api", "https://api.example?x=1", "--origin", FRONT], "--api"),
        (["--api", "https://api.example", "--origin", "https://front.example/app"], "--origin"),
        (["--api", "https://api.example", "--origin", "front.example"], "--origin"),
        (["--api", "https://api.example", "--origin", FRONT, "--foreign-origin", FRONT], "differ"),
        (["--api", "https://api.example", "--origin", FRONT, "--timeout", "0"], "--timeout"),
        (["--api", "https://api.example", "--origin", FRONT, "--timeout", "x"], "--timeout"),
        (["--api", "https://api.example", "--origin", FRONT, "--path", "api/"], "--path"),
        (["--api", "https://api.example", "--origin", FRONT, "--bogus"], "--bogus"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert corscheck.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err and "usage:" in captured.err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert corscheck.main(["--help"]) == 0
    assert "check-cors" in capsys.readouterr().out
