"""The real Slykertech storefront (Next.js, ``../shared/storefront``) built and served on
loopback in front of a live slyker, for the journey tests in ``tests/test_storefront.py``.

- **Build**: ``npm ci`` + ``next build`` of an unchanged copy of the storefront, cached under
  ``$XDG_CACHE_HOME/slyker/storefront/`` by the storefront's content and the API URL (Next
  bakes ``NEXT_PUBLIC_API_URL`` into the bundle, so the API's port is part of the build). A
  clean machine builds once (about a minute); later runs reuse the build while its port is free.
- **Serve**: ``next start`` on a free port, and Debian's nginx on the page's port sending ``/`` to
  Next and ``/livechat/ws/`` to slyker, as the storefront's own proxy does in production: the chat
  widget opens its socket on the page's host.
- The page (``http://localhost:<page port>``) and the API (``http://localhost:<api port>/api``) are
  different origins of the same site, like ``slykertech.co.zw`` and ``api.slykertech.co.zw``.

Nothing of the storefront is copied into slyker: the copy lives in the cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.live_servers import HOST, REPO_ROOT, free_port, spawn, stop_process, tail

NPM_CI_TIMEOUT = 600.0
BUILD_TIMEOUT = 900.0
START_TIMEOUT = 60.0
# The storefront is not part of slyker's repository; these are where the workplace keeps it.
SOURCE_CANDIDATES = (
    os.environ.get("SLYKER_STOREFRONT_DIR", ""),
    str(REPO_ROOT.parent / "shared" / "storefront"),
    "/work/shared/storefront",
)
SKIPPED_IN_COPY = {"node_modules", ".next", ".git"}


def storefront_source() -> Path:
    for candidate in SOURCE_CANDIDATES:
        if candidate and (Path(candidate) / "package.json").is_file():
            return Path(candidate)
    raise RuntimeError(
        "the storefront source was not found (set SLYKER_STOREFRONT_DIR); looked in "
        + ", ".join(c for c in SOURCE_CANDIDATES if c)
    )


def source_digest(source: Path) -> str:
    """A digest of every file of the storefront (paths and contents), build output excluded."""
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if relative.parts[0] in SKIPPED_IN_COPY or not path.is_file():
            continue
        digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slyker" / "storefront"


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float, log: Path) -> None:
    with log.open("ab") as log_file:
        log_file.write(f"$ {' '.join(args)}\n".encode())
        log_file.flush()
        result = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n{tail(log)}")


def build_storefront(api_port: int) -> Path:
    """The built storefront for an API at ``http://localhost:<api_port>/api`` (cached)."""
    source = storefront_source()
    api_url = f"http://localhost:{api_port}/api"
    key = f"{source_digest(source)}-{api_port}"
    target = cache_root() / key
    if (target / ".next" / "BUILD_ID").is_file():
        return target
    if shutil.which("npm") is None:
        raise RuntimeError("npm is missing: install Node.js 20 (apt-get install nodejs npm)")
    work = target.with_name(key + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work, ignore=shutil.ignore_patterns(*SKIPPED_IN_COPY))
    for path in [work, *work.rglob("*")]:  # the source may be read-only
        path.chmod(path.stat().st_mode | 0o200)
    env = {
        **os.environ,
        "NEXT_TELEMETRY_DISABLED": "1",
        "NEXT_PUBLIC_API_URL": api_url,
        "NEXT_PUBLIC_WS_URL": f"ws://localhost:{api_port}",
        "npm_config_audit": "false",
        "npm_config_fund": "false",
    }
    log = work / "slyker-build.log"
    _run(["npm", "ci", "--no-audit", "--no-fund"], work, env, NPM_CI_TIMEOUT, log)
    _run(["npx", "--no-install", "next", "build"], work, env, BUILD_TIMEOUT, log)
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    return target


def preferred_api_port() -> int:
    """The API port of the newest cached build when it is free (no rebuild), else a free one."""
    record = cache_root() / "api-port.json"
    try:
        port = int(json.loads(record.read_text())["port"])
        with socket.socket() as probe:
            # As Hypercorn binds: a port with connections in TIME_WAIT is still free to serve.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((HOST, port))
        return port
    except (OSError, ValueError, KeyError):
        port = free_port()
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"port": port}))
        return port


def wait_for_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    problem = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited {process.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status < 500:
                    return
        except OSError as error:
            problem = str(error)
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {START_TIMEOUT} s ({problem}):\n{tail(log)}")


PAGE_PROXY_CONF = """\
{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen {host}:{page_port};
        # The storefront's production proxy: the chat widget's socket goes to the chat backend.
        location /livechat/ws/ {{
            proxy_pass http://{host}:{api_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $http_host;
            proxy_read_timeout 300s;
        }}
        location / {{
            proxy_pass http://{host}:{next_port};
            proxy_set_header Host $http_host;
        }}
    }}
}}
"""


@dataclass
class StorefrontServers:
    """``next start`` and the nginx in front of it; :meth:`stop` ends both."""

    page_port: int
    next_process: subprocess.Popen[bytes]
    nginx_process: subprocess.Popen[bytes]
    directory: Path

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.page_port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{tail(self.directory / name, 4000)}"
            for name in ("next.log", "nginx.log", "nginx-error.log")
        )

    def stop(self) -> None:
        stop_process(self.nginx_process)
        stop_process(self.next_process)


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found:
        raise RuntimeError("nginx is missing: apt-get install nginx")
    return found


def serve_storefront(
    build: Path, api_port: int, directory: Path, page_port: int | None = None
) -> StorefrontServers:
    """Serve ``build`` with ``next start`` behind nginx on ``page_port`` (default: a free one)."""
    directory.mkdir(parents=True, exist_ok=True)
    next_port = free_port()
    page_port = page_port or free_port()
    env = {**os.environ, "NEXT_TELEMETRY_DISABLED": "1", "PORT": str(next_port)}
    next_log = directory / "next.log"
    next_process = spawn(
        [str(build / "node_modules" / ".bin" / "next"), "start", "-p", str(next_port), "-H", HOST],
        next_log,
        env,
        cwd=build,
    )
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / name).mkdir(exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(
        PAGE_PROXY_CONF.format(
            # As root, nginx's workers would run as nobody and fail to write the temp paths.
            user="user root;\n" if os.geteuid() == 0 else "",
            tmp=directory,
            host=HOST,
            page_port=page_port,
            api_port=api_port,
            next_port=next_port,
        )
    )
    nginx_process = spawn(
        [nginx_binary(), "-c", str(conf), "-p", str(directory)], directory / "nginx.log"
    )
    servers = StorefrontServers(page_port, next_process, nginx_process, directory)
    try:
        wait_for_http(f"http://{HOST}:{next_port}/", next_process, next_log)
        wait_for_http(f"http://{HOST}:{page_port}/", nginx_process, directory / "nginx.log")
    except BaseException:
        servers.stop()
        raise
    return servers
