"""slyker's benchmark (issue 12): ``./dev bench [--quick]`` or ``python -m bench.run``.

It starts slyker itself on loopback (free ports), seeds what it needs, loads it with wrk
(HTTP/1.1 keep-alive; a Lua script for the POSTs) and prints one table with req/s, p50 and
p99 per workload, each next to the minimal Quart + quart-cors app and raw Hypercorn serving
the same ``/health/`` JSON in the same run (:mod:`bench.reference_app`):

- ``sqlite``: SQLite, 1 worker (``./dev run``'s set-up): /health/, catalog list, cart
  ``current/`` (3 items, by cart token), ``add_item``, login, checkout.
- ``postgres``: PostgreSQL + Redis, 2 workers, the same workloads.
- ``scaling``: PostgreSQL + Redis with 1, 2 and 4 workers: /health/ and cart ``current/``.
- chat: ``python -m bench.chat`` (when present) at 50 and 200 visitors per agent.

Login and checkout run against a second server started with ``TRUSTED_PROXY_HOPS=1`` (as
behind nginx): wrk sends a different ``X-Forwarded-For`` per login, so the per-address
login limit (10/min) counts each synthetic client apart instead of refusing the benchmark.
Cart write limits are raised for the run (settings). Non-2xx answers are counted and shown.

Durations are bounded (``--duration``, default 10 s per workload; ``--quick``: 3 s and the
SQLite set-up only). Results also go to bench/results/<UTC time>.json. Never a CI gate.

Before/after in one run: ``--only health,cart --rounds N --compare DIR`` (:func:`interleaved`)
loads this checkout and another one (a worktree of the branch point: only its ``slyker`` is
used, seeded through its own CLI and HTTP API) in alternating rounds, each ratio taken within
its round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
HOST = "127.0.0.1"
ORIGIN = "http://localhost:3000"
PASSWORD = "bench-Password-81!"
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/test"
)
POSTGRES_URL = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/slyker_bench"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
START_TIMEOUT = 60.0
CONNECTIONS = 32  # wrk connections for cheap requests (wrk -c); login uses fewer
LOGIN_CONNECTIONS = 4  # Argon2 in 2 threads: more only queue (and then get 503)
CHECKOUT_CLIENTS = 4
REFERENCE_APP = "bench.reference_app:create_reference_app()"
QUART_REFERENCE = "Quart + quart-cors"


@dataclass
class Measurement:
    workload: str
    setup: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int = 0
    errors: int = 0
    note: str = ""
    reference: dict[str, float] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def python() -> str:
    return sys.executable


def base_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "QUART_SKIP_DOTENV": "1",
        "DEBUG": "false",
        "SECRET_KEY": "bench-" + "k" * 60,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url or "",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CORS_ALLOWED_ORIGINS": ORIGIN,
        "CART_WRITES_PER_MINUTE": "100000000",
        "CART_CREATIONS_PER_MINUTE": "100000000",
        "LOG_LEVEL": "WARNING",
        "BENCH_ORIGIN": ORIGIN,
    }
    env.update(extra)
    return env


class Server:
    """One server process (its own process group), its log in a file."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], port: int, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://{HOST}:{port}"
        safe_name = re.sub(r"[^A-Za-z0-9_.]+", "-", name)
        self.log_path = Path(tempfile.mkstemp(prefix=f"bench-{safe_name}-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, path: str = "/health/") -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not start; log: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def slyker_server(
    name: str, env: dict[str, str], workers: int, extra_args: tuple[str, ...] = ()
) -> Iterator[Server]:
    port = free_port()
    command = [
        python(),
        "-m",
        "slyker",
        "serve",
        "--config",
        "hypercorn.toml",
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(workers),
        *extra_args,
        "slyker:create_app()",
    ]
    server = Server(name, command, env, port, cwd=Path(env.get("BENCH_SLYKER_ROOT", ROOT)))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def hypercorn_server(name: str, app: str) -> Iterator[Server]:
    port = free_port()
    command = [python(), "-m", "hypercorn", "--bind", f"{HOST}:{port}", "--workers", "1", app]
    server = Server(name, command, base_env("sqlite://:memory:", None), port)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


# --- wrk -------------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def lua_script(method: str, body: dict[str, Any] | None, headers: dict[str, str]) -> str:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(json.dumps(body))}")
        headers = {**headers, "Content-Type": "application/json"}
    lines += [f'wrk.headers["{key}"] = {json.dumps(value)}' for key, value in headers.items()]
    return "\n".join(lines) + "\n"


LOGIN_LUA = """
-- A different X-Forwarded-For per request: the server trusts one proxy hop (as behind
-- nginx), so the per-address login limit counts each synthetic client apart.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Origin"] = "%(origin)s"
local counter = 0
request = function()
  counter = counter + 1
  local address = string.format("10.%%d.%%d.%%d", math.random(0, 255), math.random(0, 255),
    counter %% 250 + 1)
  wrk.headers["X-Forwarded-For"] = address
  return wrk.format(nil, nil, nil, '%(body)s')
end
"""


def wrk(
    url: str,
    duration: float,
    connections: int,
    script: str | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script or "")
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        file.name,
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    os.unlink(file.name)
    result: dict[str, Any] = {"non_2xx": 0, "errors": 0}
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(line.split()[1])
        elif re.match(r"^50(\.0+)?%", line):
            result["p50"] = _ms(line.split()[1])
        elif re.match(r"^99(\.0+)?%", line):
            result["p99"] = _ms(line.split()[1])
        elif "requests in" in line:
            result["requests"] = int(line.split()[0])
        elif line.startswith("Non-2xx or 3xx responses:"):
            result["non_2xx"] = int(line.split()[-1])
        elif line.startswith("Socket errors:"):
            result["errors"] = sum(int(n) for n in re.findall(r"\d+", line))
    if "rps" not in result:
        raise RuntimeError("wrk output not understood:\n" + output)
    return result


def measured(workload: str, setup: str, result: dict[str, Any], note: str = "") -> Measurement:
    return Measurement(
        workload=workload,
        setup=setup,
        requests_per_second=result["rps"],
        p50_ms=result.get("p50", float("nan")),
        p99_ms=result.get("p99", float("nan")),
        requests=result.get("requests", 0),
        non_2xx=result["non_2xx"],
        errors=result["errors"],
        note=note,
    )


# --- seeding ---------------------------------------------------------------------------------


def prepare_database(env: dict[str, str]) -> None:
    """Migrations and the demo catalog, by the CLI of the checkout being measured
    (``BENCH_SLYKER_ROOT``: ``python -m`` imports from its working directory first), so an
    older checkout gets its own schema. Both commands exist since before the bench."""
    root = Path(env.get("BENCH_SLYKER_ROOT", ROOT))
    subprocess.run(
        [python(), "-m", "slyker", "migrate"],
        cwd=root,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    quart = str(Path(python()).with_name("quart"))
    subprocess.run(
        [quart, "--app", "slyker:create_app()", "load-demo-catalog"],
        cwd=root,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def reset_postgres() -> None:
    """A fresh database of the bench's own for each PostgreSQL set-up (never the test suite's:
    it is made and dropped through the admin database ``BENCH_POSTGRES_ADMIN_URL``), and an
    emptied Redis database the tests do not use (14; the suite uses 15)."""
    name = POSTGRES_URL.rsplit("/", 1)[1]
    for statement in (
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
        f'CREATE DATABASE "{name}"',
    ):
        subprocess.run(
            [
                "psql",
                "-q",
                POSTGRES_ADMIN_URL.replace("postgres://", "postgresql://", 1),
                "-c",
                statement,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    subprocess.run(["redis-cli", "-u", REDIS_URL, "flushdb"], check=True, stdout=subprocess.DEVNULL)


ADD_ITEM_CARTS = 100  # add_item rotates over these: a cart holds at most CART_MAX_LINES (50)

ADD_ITEM_LUA = """
-- add_item rotates over %(count)d empty carts (one line each time): a cart holds 50 lines.
local carts = {%(carts)s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Origin"] = "%(origin)s"
request = function()
  i = i %% #carts + 1
  wrk.headers["X-Cart-Token"] = carts[i][2]
  return wrk.format(nil, "/api/billing/carts/" .. carts[i][1] .. "/add_item/", nil, '%(body)s')
end
"""


@dataclass
class Seed:
    product_ids: list[int]
    cart_id: int
    cart_token: str
    emails: list[str]
    empty_carts: list[tuple[int, str]]

    def add_item_script(self) -> str:
        carts = ", ".join(f'{{{cart_id}, "{token}"}}' for cart_id, token in self.empty_carts)
        body = {"hosting_product": self.product_ids[0], "billing_cycle": "monthly"}
        return ADD_ITEM_LUA % {
            "count": len(self.empty_carts),
            "carts": carts,
            "origin": ORIGIN,
            "body": json.dumps(body),
        }


def seed(server: Server, users: int) -> Seed:
    """Through the HTTP API only (and the demo catalog of :func:`prepare_database`), so the
    same seeding works against an older checkout (``--compare``): a cart of 3 hosting lines
    with its token, ``ADD_ITEM_CARTS`` empty carts for add_item when there are ``users``,
    and that many registered users."""
    with httpx.Client(base_url=server.url, headers={"Origin": ORIGIN}, timeout=30) as client:
        products = client.get("/api/services/hosting-products/").json()
        items = products["results"] if isinstance(products, dict) else products
        product_ids = [product["id"] for product in items][:3]
        cart = client.get("/api/billing/carts/current/")
        cart.raise_for_status()
        token = cart.headers["X-Cart-Token"]
        cart_id = cart.json()["id"]
        for product_id in product_ids:
            added = client.post(
                f"/api/billing/carts/{cart_id}/add_item/",
                json={"hosting_product": product_id, "billing_cycle": "monthly"},
                headers={"X-Cart-Token": token},
                cookies={},
            )
            if added.status_code != 201 and added.status_code != 200:
                raise RuntimeError(f"seeding the cart: {added.status_code} {added.text}")
        client.cookies.clear()
        # What the cart workload will read: this cart, by its token alone, with its 3 lines
        # (a token the server did not take would be answered with a new, empty cart).
        read = client.get("/api/billing/carts/current/", headers={"X-Cart-Token": token})
        read.raise_for_status()
        if read.json()["id"] != cart_id or read.json()["item_count"] != 3:
            raise RuntimeError(f"seeding the cart: read back {read.text[:500]}")
        client.cookies.clear()
        empty_carts = []
        for _ in range(ADD_ITEM_CARTS if users else 0):
            empty = client.get("/api/billing/carts/current/")
            empty_carts.append((empty.json()["id"], empty.headers["X-Cart-Token"]))
            client.cookies.clear()
        emails = []
        for number in range(users):
            email = f"bench{number}-{int(time.time())}@example.com"
            registered = client.post(
                "/api/accounts/register/",
                json={"email": email, "password": PASSWORD, "password2": PASSWORD},
            )
            registered.raise_for_status()
            emails.append(email)
    return Seed(product_ids, cart_id, token, emails, empty_carts)


# --- checkout: a Python driver (each checkout needs a freshly filled cart) --------------------


async def _checkout_loop(
    url: str,
    email: str,
    product_id: int,
    deadline: float,
    latencies: list[float],
    failures: list[int],
) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Origin": ORIGIN}, timeout=30) as client:
        login = await client.post(
            "/api/token/",
            json={"email": email, "password": PASSWORD},
            headers={"X-Forwarded-For": f"10.200.0.{len(email) % 250 + 1}"},
        )
        login.raise_for_status()
        client.headers["Authorization"] = "Bearer " + login.json()["access"]
        body = {
            "billing_info": {"full_name": "Bench Customer", "email": email},
            "payment_method": "bank",
        }
        while time.monotonic() < deadline:
            cart = await client.get("/api/billing/carts/current/")
            cart_id = cart.json()["id"]
            await client.post(
                f"/api/billing/carts/{cart_id}/add_item/",
                json={"hosting_product": product_id, "billing_cycle": "monthly"},
            )
            started = time.perf_counter()
            response = await client.post(f"/api/billing/carts/{cart_id}/checkout/", json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 201:
                failures.append(response.status_code)


def checkout(server: Server, seeded: Seed, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[int] = []

    async def run() -> float:
        deadline = time.monotonic() + duration
        started = time.monotonic()
        await asyncio.gather(
            *(
                _checkout_loop(
                    server.url, email, seeded.product_ids[0], deadline, latencies, failures
                )
                for email in seeded.emails[:CHECKOUT_CLIENTS]
            )
        )
        return time.monotonic() - started

    elapsed = asyncio.run(run())
    ordered = sorted(latencies)
    return {
        "rps": len(ordered) / elapsed,
        "p50": statistics.median(ordered) if ordered else float("nan"),
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        if ordered
        else float("nan"),
        "requests": len(ordered),
        "non_2xx": len(failures),
        "errors": 0,
    }


# --- set-ups ---------------------------------------------------------------------------------


HEALTH = "GET /health/"
CART_CURRENT = "GET cart current/ (3 items)"


def load_health(server: Server, duration: float) -> dict[str, Any]:
    """``GET /health/`` with an allowed Origin (as a browser sends it), over wrk."""
    script = lua_script("GET", None, {"Origin": ORIGIN})
    return wrk(server.url + "/health/", duration, CONNECTIONS, script)


def load_cart_current(server: Server, seeded: Seed, duration: float) -> dict[str, Any]:
    """``GET /api/billing/carts/current/`` of the seeded cart (3 lines) by its cart token,
    with an allowed Origin, over wrk: the same request every time, no cookie."""
    script = lua_script("GET", None, {"Origin": ORIGIN, "X-Cart-Token": seeded.cart_token})
    return wrk(server.url + "/api/billing/carts/current/", duration, CONNECTIONS, script)


def http_workloads(
    server: Server, proxied: Server, seeded: Seed, setup: str, duration: float, full: bool
) -> list[Measurement]:
    origin = {"Origin": ORIGIN}
    results = [
        measured(HEALTH, setup, load_health(server, duration)),
        measured(CART_CURRENT, setup, load_cart_current(server, seeded, duration)),
    ]
    if not full:
        return results
    results += [
        measured(
            "GET catalog list (hosting products)",
            setup,
            wrk(
                server.url + "/api/services/hosting-products/",
                duration,
                CONNECTIONS,
                lua_script("GET", None, origin),
            ),
        ),
        measured(
            "POST add_item (carts of 0-50 lines)",
            setup,
            wrk(server.url, duration, CONNECTIONS, seeded.add_item_script()),
        ),
        measured(
            "POST login (/api/token/, Argon2)",
            setup,
            wrk(
                proxied.url + "/api/token/",
                duration,
                LOGIN_CONNECTIONS,
                LOGIN_LUA
                % {
                    "origin": ORIGIN,
                    "body": json.dumps({"email": seeded.emails[0], "password": PASSWORD}),
                },
            ),
            note=f"{LOGIN_CONNECTIONS} connections",
        ),
        measured(
            "POST checkout (fresh cart each)",
            setup,
            checkout(proxied, seeded, duration),
            note=f"Python driver, {CHECKOUT_CLIENTS} clients",
        ),
    ]
    return results


def run_setup(
    setup: str, database_url: str, redis_url: str | None, workers: int, duration: float, full: bool
) -> list[Measurement]:
    env = base_env(database_url, redis_url)
    prepare_database(env)
    proxied_env = base_env(database_url, redis_url, TRUSTED_PROXY_HOPS="1")
    with slyker_server(setup, env, workers) as server:
        seeded = seed(server, CHECKOUT_CLIENTS if full else 0)
        if not full:
            return http_workloads(server, server, seeded, setup, duration, full)
        with slyker_server(setup + "-proxied", proxied_env, workers) as proxied:
            return http_workloads(server, proxied, seeded, setup, duration, full)


def references(duration: float) -> dict[str, Measurement]:
    found = {}
    for name, app in (
        (QUART_REFERENCE, REFERENCE_APP),
        ("raw Hypercorn ASGI", "bench.reference_app:raw_asgi"),
    ):
        with hypercorn_server(name, app) as server:
            found[name] = measured(HEALTH, name, load_health(server, duration))
    return found


INTERLEAVED_WORKLOADS = ("health", "cart")


def interleaved(
    workloads: list[str], duration: float, rounds: int, compare: Path | None
) -> list[Measurement]:
    """``--only health,cart``: A/B interleaved. Every server is started first (idle ones
    cost nothing); then each round loads, one after the other, for ``health`` the minimal
    Quart + quart-cors app, and for each workload slyker as served in production (its access
    log on), slyker without the access log (the reference logs nothing) and, with
    ``--compare``, another slyker checkout (e.g. the branch point) the same two ways. Each
    figure gets the ratio to the baseline of its own round (``health``: the Quart app;
    ``cart``: the ``--compare`` checkout with the same access-log set-up), so drift of the
    machine's load between rounds cancels out. SQLite, 1 worker; the cart is seeded through
    the HTTP API (:func:`seed`), so an older checkout needs no bench code of its own."""
    data_dir = Path(tempfile.mkdtemp(prefix="bench-interleaved-"))
    roots = {"this checkout": ROOT}
    if compare is not None:
        roots[f"--compare {compare.name}"] = compare
    found: list[Measurement] = []
    with contextlib.ExitStack() as stack:
        reference: Server | None = None
        if "health" in workloads:
            reference = stack.enter_context(hypercorn_server(QUART_REFERENCE, REFERENCE_APP))
        slykers: list[tuple[str, str, str, Server]] = []  # name, root label, log label, server
        seeds: dict[str, Seed] = {}
        for number, (label, root) in enumerate(roots.items()):
            env = base_env(f"sqlite://{data_dir}/{number}.sqlite3", None)
            env["PYTHONPATH"] = str(root)
            env["BENCH_SLYKER_ROOT"] = str(root)
            prepare_database(env)
            for log_label, extra in (
                ("access log on", ()),
                ("access log off", ("--access-logfile", "")),
            ):
                name = f"slyker ({label}, {log_label})"
                server = stack.enter_context(slyker_server(name, env, 1, extra))
                slykers.append((name, label, log_label, server))
                if "cart" in workloads:
                    seeds[name] = seed(server, 0)
        # Warm-up: first requests build caches, pages get mapped.
        if reference is not None:
            load_health(reference, 1)
        for name, _, _, server in slykers:
            if "health" in workloads:
                load_health(server, 1)
            if "cart" in workloads:
                load_cart_current(server, seeds[name], 1)
        for number in range(1, rounds + 1):
            # Alternate the order of the slyker servers (ABBA): whoever goes first in a round
            # does not always meet the same moment of the machine's load.
            ordered = slykers if number % 2 else slykers[::-1]
            if "health" in workloads:
                assert reference is not None
                baseline = measured(
                    HEALTH, QUART_REFERENCE, load_health(reference, duration), _round(number)
                )
                found.append(baseline)
                for name, _, _, server in ordered:
                    m = measured(HEALTH, name, load_health(server, duration), _round(number))
                    m.reference = {QUART_REFERENCE: baseline.requests_per_second}
                    found.append(m)
            if "cart" in workloads:
                this_round: dict[tuple[str, str], Measurement] = {}
                for name, label, log_label, server in ordered:
                    result = load_cart_current(server, seeds[name], duration)
                    m = measured(CART_CURRENT, name, result, _round(number))
                    this_round[label, log_label] = m
                    found.append(m)
                if compare is not None:
                    for (label, log_label), m in this_round.items():
                        if label != "this checkout":
                            continue
                        before = this_round[f"--compare {compare.name}", log_label]
                        m.reference = {before.setup: before.requests_per_second}
    shutil.rmtree(data_dir, ignore_errors=True)
    return found


def _round(number: int) -> str:
    return f"round {number}, load {os.getloadavg()[0]:.2f}"


def _round_number(m: Measurement) -> int:
    return int(m.note.split(",")[0].removeprefix("round "))


def interleaved_table(found: list[Measurement], workload: str, baseline: str) -> str:
    """One workload's rows, round by round, with each row's ratio to its baseline of the same
    round, then the mean ratio per server."""
    rows = [
        f"{workload}:",
        "",
        f"| server | round | req/s | p50 ms | p99 ms | non-2xx | x {baseline} (same round) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    mine = sorted(
        (m for m in found if m.workload == workload),
        key=lambda m: (_round_number(m), m.setup != QUART_REFERENCE, m.setup),
    )
    for m in mine:
        reference = next(iter(m.reference.values()), None)
        ratio = f"{m.requests_per_second / reference:.2f}" if reference else "-"
        rows.append(
            f"| {m.setup} | {m.note} | {m.requests_per_second:,.0f} | {m.p50_ms:.1f} "
            f"| {m.p99_ms:.1f} | {m.non_2xx + m.errors} | {ratio} |"
        )
    ratios: dict[str, list[float]] = {}
    for m in mine:
        for reference in m.reference.values():
            ratios.setdefault(m.setup, []).append(m.requests_per_second / reference)
    for setup, values in ratios.items():
        rows.append(
            f"| {setup} | mean of {len(values)} | | | | | **{statistics.mean(values):.2f}** |"
        )
    return "\n".join(rows)


def chat_figures(duration: float) -> list[dict[str, Any]]:
    if not (ROOT / "bench" / "chat.py").exists():
        return []
    figures = []
    for visitors in (50, 200):
        command = [
            python(),
            "-m",
            "bench.chat",
            "--visitors",
            str(visitors),
            "--duration",
            str(round(duration)),
        ]
        done = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=base_env("sqlite://:memory:", None),
        )
        lines = [line for line in done.stdout.splitlines() if line.strip().startswith("{")]
        if done.returncode != 0 or not lines:
            figures.append({"visitors": visitors, "error": done.stderr[-500:]})
            continue
        figures.append({"visitors": visitors, **json.loads(lines[-1])})
    return figures


# --- output ----------------------------------------------------------------------------------


def table(measurements: list[Measurement], refs: dict[str, Measurement]) -> str:
    quart = refs.get("Quart + quart-cors")
    raw = refs.get("raw Hypercorn ASGI")
    rows = [
        "| set-up | workload | req/s | p50 ms | p99 ms | non-2xx "
        "| x Quart+quart-cors /health/ | x raw Hypercorn |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in [*refs.values(), *measurements]:
        ratio_quart = f"{m.requests_per_second / quart.requests_per_second:.2f}" if quart else "-"
        ratio_raw = f"{m.requests_per_second / raw.requests_per_second:.2f}" if raw else "-"
        note = f" ({m.note})" if m.note else ""
        rows.append(
            f"| {m.setup} | {m.workload}{note} | {m.requests_per_second:,.0f} | {m.p50_ms:.1f} "
            f"| {m.p99_ms:.1f} | {m.non_2xx + m.errors} | {ratio_quart} | {ratio_raw} |"
        )
    return "\n".join(rows)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "?",
        )
        if Path("/proc/cpuinfo").exists()
        else "?",
        "load_average_at_start": os.getloadavg(),
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 s per workload, SQLite only")
    parser.add_argument("--duration", type=float, help="seconds per workload (default 10)")
    parser.add_argument(
        "--setups",
        default=None,
        help="comma-separated: sqlite,postgres,scaling,chat (default all; --quick: sqlite)",
    )
    parser.add_argument(
        "--only",
        type=_workload_list,
        help="interleaved A/B rounds of these workloads only (comma-separated): health "
        "(GET /health/, against the minimal Quart + quart-cors app), cart (GET cart current/, "
        "3 items, by cart token); slyker with its access log on and off",
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --only (default 3)")
    parser.add_argument(
        "--compare",
        type=Path,
        help="with --only: another slyker checkout (e.g. a worktree of the branch point; it "
        "needs no bench/ of its own) measured in the same rounds; cart rows get the ratio to it",
    )
    args = parser.parse_args(argv)
    if args.compare is not None and args.only is None:
        parser.error("--compare needs --only (health, cart or health,cart)")
    if args.compare is not None and not (args.compare / "slyker" / "__main__.py").exists():
        parser.error(f"--compare {args.compare}: not a slyker checkout")
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (./dev bench installs it)", file=sys.stderr)
        return 1
    duration = args.duration or (3.0 if args.quick else 10.0)
    if args.only:
        return _interleaved_main(args, duration, argv)
    setups = (args.setups or ("sqlite" if args.quick else "sqlite,postgres,scaling,chat")).split(
        ","
    )
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    info = machine()
    print(
        f"bench: {info['cpus']} CPUs ({info['cpu']}), load {info['load_average_at_start']}, "
        f"{duration:g} s per workload, set-ups {', '.join(setups)}",
        file=sys.stderr,
    )

    refs = references(duration)
    measurements: list[Measurement] = []
    full = not args.quick
    if "sqlite" in setups:
        data_dir = tempfile.mkdtemp(prefix="bench-sqlite-")
        measurements += run_setup(
            "SQLite, 1 worker", f"sqlite://{data_dir}/db.sqlite3", None, 1, duration, True
        )
        shutil.rmtree(data_dir, ignore_errors=True)
    if "postgres" in setups:
        reset_postgres()
        measurements += run_setup(
            "PostgreSQL+Redis, 2 workers", POSTGRES_URL, REDIS_URL, 2, duration, full
        )
    if "scaling" in setups:
        for workers in (1, 2, 4):
            reset_postgres()
            measurements += run_setup(
                f"PostgreSQL+Redis, {workers} worker(s)",
                POSTGRES_URL,
                REDIS_URL,
                workers,
                duration,
                False,
            )
    refs_after = references(duration)  # again: the machine's load drifts during a run
    chats = chat_figures(duration) if "chat" in setups else []

    for name, after in refs_after.items():
        before = refs[name]
        before.requests_per_second = (before.requests_per_second + after.requests_per_second) / 2
        before.note = f"mean of start and end of run: {before.requests_per_second:,.0f}"
        before.p50_ms = (before.p50_ms + after.p50_ms) / 2
        before.p99_ms = (before.p99_ms + after.p99_ms) / 2
    print(table(measurements, refs))
    for figure in chats:
        print(f"chat, {figure['visitors']} visitors per agent: {json.dumps(figure)}")
    write_results(
        f"{started}.json",
        {
            "started": started,
            "command": "./dev bench " + " ".join(sys.argv[1:] if argv is None else argv),
            "duration_s": duration,
            "machine": info,
            "references": {name: asdict(m) for name, m in refs.items()},
            "measurements": [asdict(m) for m in measurements],
            "chat": chats,
        },
    )
    return 0


def write_results(name: str, record: dict[str, Any]) -> Path:
    """One run's figures as ``bench/results/NAME`` (JSON), and say where."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / name
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"bench: results written to {out.relative_to(ROOT)}", file=sys.stderr)
    return out


def _workload_list(text: str) -> list[str]:
    workloads = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(workloads) - set(INTERLEAVED_WORKLOADS))
    if unknown or not workloads:
        raise argparse.ArgumentTypeError(
            f"choose from {', '.join(INTERLEAVED_WORKLOADS)} (comma-separated), not {text!r}"
        )
    return [name for name in INTERLEAVED_WORKLOADS if name in workloads]


def _interleaved_main(args: argparse.Namespace, duration: float, argv: list[str] | None) -> int:
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    info = machine()
    compare = args.compare.resolve() if args.compare else None
    print(
        f"bench: {info['cpus']} CPUs ({info['cpu']}), load {info['load_average_at_start']}, "
        f"{' and '.join(args.only)} only, {duration:g} s x {args.rounds} rounds"
        + (f", against {compare}" if compare else ""),
        file=sys.stderr,
    )
    found = interleaved(args.only, duration, args.rounds, compare)
    tables = []
    if "health" in args.only:
        tables.append(interleaved_table(found, HEALTH, QUART_REFERENCE))
    if "cart" in args.only:
        baseline = f"--compare {compare.name}, same access log" if compare else "--compare (none)"
        tables.append(interleaved_table(found, CART_CURRENT, baseline))
    print("\n\n".join(tables))
    write_results(
        f"{'-'.join(args.only)}-{started}.json",
        {
            "started": started,
            "command": "./dev bench " + " ".join(sys.argv[1:] if argv is None else argv),
            "compare": str(compare) if compare else None,
            "duration_s": duration,
            "machine": info,
            "load_average_at_end": os.getloadavg(),
            "measurements": [asdict(m) for m in found],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
