"""Debian's real nginx running the committed ``docker/nginx.conf`` on loopback, in front of a
live Hypercorn — the Docker stack's proxy without Docker (there is no engine here).

The test-time configuration is the committed file with these text substitutions and nothing
else (``render_config``). Each must match exactly as often as listed, so an edit of
``docker/nginx.conf`` that a substitution no longer fits fails loudly instead of quietly testing
a different file; the maps, locations, proxy headers and error pages run byte for byte.

=====================================  ================================================  ======
committed                              test copy                                         times
=====================================  ================================================  ======
``user nginx;``                        ``user root;`` as root (temp files stay ours),    1
                                       else dropped (nginx ignores it unprivileged)
``worker_processes auto;``             ``worker_processes 1;``                           1
``pid /run/nginx.pid;``                ``pid <tmp>/nginx.pid;``                          1
``/var/log/nginx/``                    ``<tmp>/`` (error.log, access.log)                2
``/var/cache/nginx/``                  ``<tmp>/cache/`` (the five temp paths)            5
``/var/www/certbot``                   ``<tmp>/acme``                                    1
``listen 80;``                         ``listen 127.0.0.1:<http port>;``                 1
``listen 443 ssl http2;``              ``listen 127.0.0.1:<tls port> ssl http2;``        1
``/etc/nginx/certs/fullchain.pem``     the test's self-signed certificate                1
``/etc/nginx/certs/privkey.pem``       its key                                           1
``server api:8000;``                   ``server 127.0.0.1:<upstream port>;``             1
``proxy_read_timeout 60s;``            ``proxy_read_timeout 1s;`` — only for the 504     1
                                       test, so that "too slow" takes one second
=====================================  ================================================  ======

Everything binds 127.0.0.1, every wait is bounded, and every process runs in its own session
so that teardown can kill its whole process group (nginx's workers, Hypercorn's worker).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quart import Quart

from tests.contract_app import create_contract_app, probe_blueprint
from tests.live_servers import (
    COMMAND_TIMEOUT,
    HOST,
    REPO_ROOT,
    SOCKET_TIMEOUT,
    START_TIMEOUT,
    Hypercorn,
    LiveServer,
    free_port,
    migrate,
    spawn,
    start_hypercorn,
    start_with_retries,
    stop_process,
    tail,
    unverified_tls,
)
from tests.live_servers import child_env as server_env
from tests.live_servers import make_certificate as make_certificate
from tests.live_servers import wait_for_health as wait_for_health

DOCKER_DIR = REPO_ROOT / "docker"
NGINX_CONF = DOCKER_DIR / "nginx.conf"
SLOW_READ_TIMEOUT = "1s"
# The contract app's probes under /api/ too: nginx only proxies the API's own paths.
PROXIED_APP_PATH = "tests.live_nginx:create_proxied_contract_app()"
API_PROBE_PREFIX = "/api/_probe"
NGINX_INSTALL = "apt-get update && apt-get install -y nginx"


def create_proxied_contract_app() -> Quart:
    """The contract app, its probe routes also mounted at ``/api/_probe/``."""
    app = create_contract_app()
    app.register_blueprint(
        probe_blueprint(app.extensions["probe.recorder"]),
        name="api_probe",
        url_prefix=API_PROBE_PREFIX,
    )
    return app


# --- the committed configuration -------------------------------------------------------------


def committed_config() -> str:
    return NGINX_CONF.read_text()


def strip_comments(text: str) -> str:
    """nginx.conf without comments (a ``#`` outside quotes starts one)."""
    lines = []
    for line in text.splitlines():
        quote = ""
        for index, char in enumerate(line):
            if quote:
                if char == quote:
                    quote = ""
            elif char in "'\"":
                quote = char
            elif char == "#":
                line = line[:index]
                break
        lines.append(line.rstrip())
    return "\n".join(lines)


def blocks(text: str, header: str) -> list[str]:
    """The bodies of every ``<header> { ... }`` block (braces balanced, comments stripped)."""
    text = strip_comments(text)
    found = []
    for match in re.finditer(re.escape(header) + r"\s*\{", text):
        depth, start, quote = 1, match.end(), ""
        for index in range(start, len(text)):
            char = text[index]
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    found.append(text[start:index])
                    break
    return found


def nginx_map(text: str, source: str, variable: str) -> dict[str, str]:
    """The entries of ``map <source> <variable> { ... }``, quotes removed."""
    (body,) = blocks(text, f"map {source} {variable}")
    entries = {}
    token = r'"[^"]*"|\'[^\']*\'|[^\s;"\']+'
    for match in re.finditer(rf"({token})\s+({token})\s*;", body):
        key, value = (part.strip("\"'") for part in match.groups())
        entries[key] = value
    return entries


# --- certificates ----------------------------------------------------------------------------


def unverified_context() -> ssl.SSLContext:
    """TLS without verification (the certificate is the test's own, self-signed)."""
    return unverified_tls()


# --- rendering the test copy -------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    http: int
    tls: int
    upstream: int


def _replace(text: str, old: str, new: str, times: int) -> str:
    found = text.count(old)
    if found != times:
        raise AssertionError(
            f"docker/nginx.conf: expected {old!r} {times} time(s) for the test copy, found "
            f"{found}; update tests/live_nginx.py's substitutions with the file"
        )
    return text.replace(old, new)


def render_config(
    source: str,
    directory: Path,
    ports: Ports,
    cert: Path,
    key: Path,
    *,
    slow_read_timeout: bool = False,
) -> str:
    """The committed configuration with the substitutions of the module docstring."""
    cache = directory / "cache"
    acme = directory / "acme"
    for path in (cache, acme):
        path.mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else "# user: not root, nginx would ignore it"
    text = _replace(source, "user nginx;", user, 1)
    text = _replace(text, "worker_processes auto;", "worker_processes 1;", 1)
    text = _replace(text, "pid /run/nginx.pid;", f"pid {directory / 'nginx.pid'};", 1)
    text = _replace(text, "/var/log/nginx/", f"{directory}/", 2)
    text = _replace(text, "/var/cache/nginx/", f"{cache}/", 5)
    text = _replace(text, "/var/www/certbot", str(acme), 1)
    text = _replace(text, "listen 80;", f"listen {HOST}:{ports.http};", 1)
    text = _replace(text, "listen 443 ssl http2;", f"listen {HOST}:{ports.tls} ssl http2;", 1)
    text = _replace(text, "/etc/nginx/certs/fullchain.pem", str(cert), 1)
    text = _replace(text, "/etc/nginx/certs/privkey.pem", str(key), 1)
    text = _replace(text, "server api:8000;", f"server {HOST}:{ports.upstream};", 1)
    if slow_read_timeout:
        text = _replace(
            text, "proxy_read_timeout 60s;", f"proxy_read_timeout {SLOW_READ_TIMEOUT};", 1
        )
    return text


def nginx_binary() -> str:
    """Debian's nginx; the message says how to install it when it is missing."""
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx",) if Path(path).exists()), None
    )
    if found is None:
        raise RuntimeError(f"nginx is not installed; as root: {NGINX_INSTALL}")
    return found


def nginx_check(conf: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on a configuration file (it loads certificates and resolves upstreams)."""
    return subprocess.run(
        [nginx_binary(), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )


# --- processes ---------------------------------------------------------------------------------


# What docker/.env.example sets for the api behind this nginx: trust its X-Forwarded-* headers.
PRODUCTION_PROXY_SETTINGS = {"TRUSTED_PROXY_HOPS": "1"}


def start_upstream(directory: Path, **settings: str) -> LiveServer:
    """``python -m slyker serve --config hypercorn.toml`` as in the image (one Hypercorn worker,
    loopback) serving the proxied contract app on a migrated DATA_DIR, with ``settings`` in its
    environment."""
    directory.mkdir(parents=True, exist_ok=True)
    env = server_env(DATA_DIR=str(directory / "data"), **settings)
    migrate(env)
    spec = Hypercorn(
        "hypercorn", env, PROXIED_APP_PATH, args=("--config", "hypercorn.toml"), supervised=True
    )
    return start_hypercorn(spec, directory)


@dataclass
class Nginx:
    """One ``nginx -c <test copy> -g 'daemon off;'`` process."""

    name: str
    directory: Path
    ports: Ports
    process: subprocess.Popen[bytes]
    upstream_log: Callable[[], str] | None = None  # for failure messages

    @property
    def conf(self) -> Path:
        return self.directory / "nginx.conf"

    def log(self) -> str:
        parts = [
            f"--- nginx {self.name} stdout/stderr ---\n{tail(self.directory / 'nginx.out')}",
            f"--- nginx {self.name} error.log ---\n{tail(self.directory / 'error.log')}",
            f"--- nginx {self.name} access.log ---\n{tail(self.directory / 'access.log', 3000)}",
        ]
        if self.upstream_log is not None:
            parts.append(f"--- upstream ---\n{self.upstream_log()}")
        return "\n".join(parts)

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            HOST, self.ports.tls, timeout=SOCKET_TIMEOUT, context=unverified_context()
        )

    @property
    def base_url(self) -> str:
        return f"https://{HOST}:{self.ports.tls}"

    @property
    def ws_url(self) -> str:
        return f"wss://{HOST}:{self.ports.tls}"

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM)  # nginx: TERM is the fast shutdown


def _tls_ready(port: int) -> bool:
    try:
        with (
            socket.create_connection((HOST, port), timeout=1.0) as sock,
            unverified_context().wrap_socket(sock, server_hostname="localhost"),
        ):
            return True
    except OSError:
        return False


def start_nginx(
    name: str,
    directory: Path,
    cert: Path,
    key: Path,
    upstream_port: int,
    *,
    slow_read_timeout: bool = False,
    upstream_log: Callable[[], str] | None = None,
) -> Nginx:
    """nginx with the test copy of docker/nginx.conf in front of ``upstream_port``; retried on
    fresh ports, since one can be taken between choosing it and nginx binding it."""
    binary = nginx_binary()
    source = committed_config()

    def attempt(number: int) -> tuple[Nginx, None] | tuple[None, str]:
        run_dir = directory / f"{name}-{number}"
        run_dir.mkdir(parents=True, exist_ok=True)
        ports = Ports(http=free_port(), tls=free_port(), upstream=upstream_port)
        conf = run_dir / "nginx.conf"
        conf.write_text(
            render_config(source, run_dir, ports, cert, key, slow_read_timeout=slow_read_timeout)
        )
        process = spawn(
            [binary, "-c", str(conf), "-g", "daemon off;"], run_dir / "nginx.out", cwd=run_dir
        )
        server = Nginx(name, run_dir, ports, process, upstream_log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _tls_ready(ports.tls):
                return server, None
            time.sleep(0.05)
        problem = (
            f"exited with {process.returncode}" if process.poll() is not None else "no TLS port"
        )
        server.stop()
        return None, f"{problem}\n{server.log()}"

    return start_with_retries("nginx", attempt)


class SilentUpstream:
    """A listening socket that never accepts: nginx connects (the kernel completes the
    handshake into the backlog), sends the request and never gets an answer -> 504."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()
