"""Chat benchmark: many visitors per agent over real WebSockets (the ``websockets`` client).

    python -m bench.chat --visitors 200 --rate 1 --duration 20         # SQLite, 1 worker
    python -m bench.chat --workers 2 --redis --visitors 200 --rate 1  # PostgreSQL + Redis
    python -m bench.chat --url ws://127.0.0.1:8000 --token <staff access token> [--pid 1234]

Phases, each bounded:

1. handshakes: ``--handshakes`` visitor sockets opened one after another
   (``--handshake-concurrency`` at a time), as a widget does on a page load; the time from
   connect to the ``connection_established`` frame (what a widget waits for to talk).
2. idle sockets: RSS of the server's worker processes (``/proc/PID/status`` VmRSS, summed over
   workers) with the agents only, then with ``--visitors`` idle visitor sockets open.
3. load: each visitor sends ``--rate`` messages a second for ``--duration`` seconds (random phase);
   an agent socket answers every message in the visitor's conversation. Latencies: visitor send →
   agent receive, and agent send → visitor receive. Lost: a message sent and not refused (no
   ``error`` frame for it) that never arrived; refused: answered with an ``error`` frame.

``--timeline`` also prints the p99 of each second of the load (by send time): a tail in one
or two seconds is a stall, one spread over the run a throughput limit. The driver samples its
own event-loop lag too (a late driver inflates what it measures).

Without ``--url`` the driver starts slyker itself on 127.0.0.1 (``python -m slyker serve`` with
hypercorn.toml), in a temporary directory, and stops it at the end: SQLite by default, or with
``--redis`` PostgreSQL (a database of its own at ``--postgres``, dropped afterwards) and a private
redis-server. Prints a table, then one JSON line (``{"bench": "chat", ...}``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ORIGIN = "http://bench.example"  # an allowed CORS origin of the server the driver starts
DEPARTMENT = "sales"
STAFF_EMAIL = "bench.agent@example.com"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
FRAME_TIMEOUT = 10.0
DRAIN_SECONDS = 10.0  # after the load: at most this long for replies still on their way
OPEN_CONCURRENCY = 20  # idle sockets opened this many at a time
# Environment variables passed on to the server the driver starts (everything else is set here).
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")


# --- numbers -----------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def summary_ms(values: list[float]) -> dict[str, float | None]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 2)

    return {
        "n": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(max(values) if values else None),
    }


def rss_kib(pids: list[int]) -> int | None:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match is None:
            return None
        total += int(match.group(1))
    return total


def cpu_seconds(pids: list[int]) -> float | None:
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields_[11]) + int(fields_[12])) / ticks  # utime + stime
    return total


# --- the server under test ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


def children(pid: int) -> list[int]:
    """Hypercorn workers of the ``python -m slyker serve`` supervisor ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


@dataclass
class Server:
    """slyker under ``python -m slyker serve`` in a temporary directory (plus its Redis and
    PostgreSQL database when asked), bound to 127.0.0.1."""

    workers: int
    redis: bool
    postgres_admin_url: str
    extra_env: dict[str, str]
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-chat-")))
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    database: str | None = None
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    port: int = 0
    supervisor: subprocess.Popen[bytes] | None = None
    keep: bool = False  # the directory (logs, database) stays after the run

    def env(self) -> dict[str, str]:
        env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        env.update(
            {
                "QUART_SKIP_DOTENV": "1",
                "DEBUG": "false",
                "SECRET_KEY": self.secret_key,
                "DATA_DIR": str(self.directory),
                "ALLOWED_HOSTS": HOST,
                "CORS_ALLOWED_ORIGINS": ORIGIN,
                "LOG_LEVEL": "WARNING",
                # Every visitor of the benchmark comes from 127.0.0.1.
                "CHAT_MAX_SOCKETS_PER_CLIENT": "100000",
                "CHAT_NEW_CONVERSATIONS_PER_MINUTE": "100000",
            }
        )
        if self.database is not None:
            env["DATABASE_URL"] = self.postgres_admin_url.rsplit("/", 1)[0] + "/" + self.database
        if self.redis:
            env["REDIS_URL"] = f"redis://{HOST}:{self.redis_port}/0"
        env.update(self.extra_env)
        return env

    def run(self, args: list[str]) -> str:
        result = subprocess.run(
            args,
            cwd=REPO_ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {result.returncode}\n{result.stderr[-3000:]}")
        return result.stdout

    def spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with (self.directory / log_name).open("wb") as log_file:
            process = subprocess.Popen(
                args,
                cwd=REPO_ROOT,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def start(self) -> tuple[str, str]:
        """Start everything: the WebSocket base URL and a staff access token."""
        if self.redis:
            self.redis_port = free_port()
            redis = self.spawn(
                [
                    *("redis-server", "--bind", HOST, "--port", str(self.redis_port)),
                    *("--save", "", "--appendonly", "no"),
                ],
                "redis.log",
            )
            wait_for_port(self.redis_port, redis, START_TIMEOUT)
            self.database = f"bench_chat_{os.getpid()}"
            self.admin(f'CREATE DATABASE "{self.database}"')
        self.run([sys.executable, "-m", "slyker", "migrate"])
        password = secrets.token_urlsafe(16) + "-Aa1"
        created = self.run(
            [
                *(sys.executable, "-m", "quart", "--app", "slyker:create_app()", "create-user"),
                *(STAFF_EMAIL, "--role", "staff", "--password", password),
                *("--first-name", "Bench", "--last-name", "Agent"),
            ]
        )
        match = re.search(r"\(id (\d+)\)", created)
        if match is None:
            raise RuntimeError(f"create-user said: {created}")
        self.port = free_port()
        self.supervisor = self.spawn(
            [
                *(sys.executable, "-m", "slyker", "serve", "--config", "hypercorn.toml"),
                *("--bind", f"{HOST}:{self.port}", "--workers", str(self.workers)),
                *("--access-logfile", str(self.directory / "access.log")),
            ],
            "server.log",
        )
        wait_for_port(self.port, self.supervisor, START_TIMEOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while len(children(self.supervisor.pid)) < self.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        self.wait_healthy()
        now = datetime.now(UTC)
        claims = {
            "sub": match.group(1),
            "iat": now,
            "exp": now + timedelta(hours=2),
            "jti": uuid.uuid4().hex,
            "type": "access",
            "role": "staff",
        }
        return f"ws://{HOST}:{self.port}", jwt.encode(claims, self.secret_key, algorithm="HS256")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            url = f"http://{HOST}:{self.port}/health/"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("slyker did not become ready")

    def pids(self) -> list[int]:
        return children(self.supervisor.pid) if self.supervisor else []

    def admin(self, statement: str) -> None:
        import asyncpg  # only for --redis (PostgreSQL)

        async def execute() -> None:
            connection = await asyncpg.connect(self.postgres_admin_url)
            try:
                await connection.execute(statement)
            finally:
                await connection.close()

        asyncio.run(execute())

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(STOP_TIMEOUT)
        if self.database is not None:
            with contextlib.suppress(Exception):
                self.admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        if self.keep:
            print(f"server directory kept: {self.directory}", file=sys.stderr)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)


# --- clients -------------------------------------------------------------------------------


async def open_visitor(base: str, origin: str) -> tuple[str, ClientConnection]:
    """A visitor socket as the widget opens it on a page load (no ``session_id`` yet: the
    server's one, from ``connection_established``, is used)."""
    socket_ = await connect(
        f"{base}/livechat/ws/{DEPARTMENT}/",
        origin=Origin(origin),
        open_timeout=FRAME_TIMEOUT,
        max_queue=None,
    )
    async with asyncio.timeout(FRAME_TIMEOUT):
        while True:
            frame = json.loads(await socket_.recv())
            if frame.get("type") == "connection_established":
                return frame["session_id"], socket_


async def open_agent(base: str, token: str, origin: str) -> ClientConnection:
    socket_ = await connect(
        f"{base}/ws/chat/agents/?departments={DEPARTMENT}",
        origin=Origin(origin),
        subprotocols=["bearer", token],  # type: ignore[list-item]
        open_timeout=FRAME_TIMEOUT,
        max_queue=None,
    )
    async with asyncio.timeout(FRAME_TIMEOUT):
        while json.loads(await socket_.recv()).get("type") != "active_conversations":
            pass
    return socket_


async def handshakes(
    base: str, origin: str, count: int, concurrency: int
) -> tuple[list[float], float]:
    """``count`` visitor handshakes, ``concurrency`` at a time: their times, and the wall time."""
    times: list[float] = []
    remaining = iter(range(count))

    async def one_after_another() -> None:
        for _ in remaining:
            started = time.perf_counter()
            _, socket_ = await open_visitor(base, origin)
            times.append(time.perf_counter() - started)
            await socket_.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_after_another() for _ in range(concurrency)))
    return times, time.perf_counter() - started


@dataclass
class Load:
    """What the load phase saw. Keys: (session_id, seq)."""

    visitor_sent: dict[tuple[str, int], float] = field(default_factory=dict)
    agent_received: set[tuple[str, int]] = field(default_factory=set)
    agent_sent: dict[tuple[str, int], float] = field(default_factory=dict)
    visitor_received: set[tuple[str, int]] = field(default_factory=set)
    visitor_refused: set[tuple[str, int]] = field(default_factory=set)
    agent_refused: set[tuple[str, int]] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    to_agent: list[float] = field(default_factory=list)
    to_visitor: list[float] = field(default_factory=list)
    # (seconds since the load started, latency) of every delivery: where in the run the tail is
    to_agent_at: list[tuple[float, float]] = field(default_factory=list)
    to_visitor_at: list[tuple[float, float]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    duplicates: int = 0
    out_of_order: int = 0
    closed: Counter[str] = field(default_factory=Counter)

    def outstanding(self) -> int:
        waiting_agent = (
            len(self.visitor_sent) - len(self.agent_received) - len(self.visitor_refused)
        )
        waiting_visitor = (
            len(self.agent_sent) - len(self.visitor_received) - len(self.agent_refused)
        )
        return waiting_agent + waiting_visitor


async def visitor(
    socket_: ClientConnection, session_id: str, load: Load, rate: float, duration: float
) -> None:
    """Send ``rate`` messages a second; read the agent's replies (and errors) meanwhile."""
    last_reply = -1

    async def read() -> None:
        nonlocal last_reply
        async for raw in socket_:
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "message" and frame.get("sender_type") == "agent":
                seq = int(frame["message"].split()[1])
                key = (session_id, seq)
                if key in load.visitor_received:
                    load.duplicates += 1
                    continue
                load.visitor_received.add(key)
                if seq < last_reply:
                    load.out_of_order += 1
                last_reply = max(last_reply, seq)
                sent_at = load.agent_sent[key]
                load.to_visitor.append(time.perf_counter() - sent_at)
                load.to_visitor_at.append((sent_at - load.started, load.to_visitor[-1]))
            elif kind == "error":
                load.errors[f"visitor:{frame.get('code')}"] += 1
                if isinstance(frame.get("client_id"), int):
                    load.visitor_refused.add((session_id, frame["client_id"]))

    reader = asyncio.create_task(read())
    try:
        await asyncio.sleep(random.random() / rate)
        started = time.perf_counter()
        for seq in range(int(duration * rate)):
            await asyncio.sleep(max(0.0, started + seq / rate - time.perf_counter()))
            load.visitor_sent[(session_id, seq)] = time.perf_counter()
            frame = {
                "type": "message",
                "message": f"v {seq}",
                "session_id": session_id,
                "visitor_name": "Bench Visitor",
                "client_id": seq,
            }
            await socket_.send(json.dumps(frame))
        async with asyncio.timeout(DRAIN_SECONDS):
            while load.outstanding() > 0:  # noqa: ASYNC110 - bounded
                await asyncio.sleep(0.05)
    except ConnectionClosed as closed:
        load.closed[f"visitor:{closed.rcvd.code if closed.rcvd else 'none'}"] += 1
    except TimeoutError:
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await reader


async def agent(socket_: ClientConnection, index: int, agents: int, load: Load) -> None:
    """Answer every visitor message of the conversations this agent owns (hash of the id).

    Replies go out from a task of their own, so that a server slow to read the agent's frames
    (back-pressure) never stops this agent reading: visitor -> agent stays a measure of the
    server's fan-out, and the wait shows in agent -> visitor, where it belongs."""
    replies: asyncio.Queue[str] = asyncio.Queue()

    async def send() -> None:
        while True:
            await socket_.send(await replies.get())

    sender = asyncio.create_task(send())
    try:
        async for raw in socket_:
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "message" and frame.get("sender_type") == "user":
                session_id = frame["session_id"]
                seq = int(frame["message"].split()[1])
                key = (session_id, seq)
                if key in load.agent_received:
                    load.duplicates += 1
                    continue
                load.agent_received.add(key)
                sent_at = load.visitor_sent[key]
                load.to_agent.append(time.perf_counter() - sent_at)
                load.to_agent_at.append((sent_at - load.started, load.to_agent[-1]))
                if hash(session_id) % agents != index:
                    continue
                load.agent_sent[key] = time.perf_counter()
                reply = {
                    "type": "message",
                    "session_id": session_id,
                    "message": f"r {seq}",
                    "client_id": f"{seq} {session_id}",
                }
                replies.put_nowait(json.dumps(reply))
            elif kind == "error":
                load.errors[f"agent:{frame.get('code')}"] += 1
                client_id = frame.get("client_id")
                if isinstance(client_id, str) and " " in client_id:
                    seq_text, session_id = client_id.split(" ", 1)
                    load.agent_refused.add((session_id, int(seq_text)))
    except ConnectionClosed as closed:
        load.closed[f"agent:{closed.rcvd.code if closed.rcvd else 'none'}"] += 1
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await sender


def timeline(load: Load, seconds: int) -> list[dict[str, Any]]:
    """p99 of each direction per second of the load (by send time): a tail spread over the
    run is a throughput limit; one in a few seconds is a stall."""
    rows = []
    for second in range(seconds):
        to_agent = [took for at, took in load.to_agent_at if second <= at < second + 1]
        to_visitor = [took for at, took in load.to_visitor_at if second <= at < second + 1]
        rows.append(
            {
                "s": second,
                "n": len(to_agent),
                "to_agent_p99_ms": summary_ms(to_agent)["p99_ms"],
                "to_visitor_p99_ms": summary_ms(to_visitor)["p99_ms"],
            }
        )
    return rows


async def loop_lag(lags: list[float], interval: float = 0.01) -> None:
    """The driver's own event-loop lag: a late driver inflates every latency it measures."""
    while True:
        planned = time.perf_counter() + interval
        await asyncio.sleep(interval)
        lags.append(time.perf_counter() - planned)


async def open_many(base: str, origin: str, count: int) -> list[tuple[str, ClientConnection]]:
    opened: list[tuple[str, ClientConnection]] = []
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one() -> None:
        async with gate:
            opened.append(await open_visitor(base, origin))

    await asyncio.gather(*(one() for _ in range(count)))
    return opened


async def bench(args: argparse.Namespace, base: str, token: str, pids: list[int]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "bench": "chat",
        "visitors": args.visitors,
        "rate": args.rate,
        "duration": args.duration,
        "agents": args.agents,
        "workers": args.workers if args.url is None else None,
        "backend": None if args.url else ("postgresql+redis" if args.redis else "sqlite"),
    }
    await handshakes(base, args.origin, 20, 1)  # warm-up: imports, pools, caches
    times, wall = await handshakes(base, args.origin, args.handshakes, args.handshake_concurrency)
    result["handshake"] = {**summary_ms(times), "per_second": round(len(times) / wall, 1)}

    agents = [await open_agent(base, token, args.origin) for _ in range(args.agents)]
    await asyncio.sleep(1.0)
    rss_before = rss_kib(pids)
    visitors = await open_many(base, args.origin, args.visitors)
    await asyncio.sleep(2.0)
    rss_after = rss_kib(pids)
    if rss_before is not None and rss_after is not None and args.visitors:
        result["rss_kib"] = {"idle_0": rss_before, "idle_n": rss_after}
        result["rss_per_idle_socket_kib"] = round((rss_after - rss_before) / args.visitors, 1)

    load = Load()
    lags: list[float] = []
    lag_sampler = asyncio.create_task(loop_lag(lags))
    cpu_before, started = cpu_seconds(pids), time.perf_counter()
    agent_tasks = [
        asyncio.create_task(agent(a, i, args.agents, load)) for i, a in enumerate(agents)
    ]
    await asyncio.gather(*(visitor(s, sid, load, args.rate, args.duration) for sid, s in visitors))
    wall = time.perf_counter() - started
    cpu_after = cpu_seconds(pids)
    lag_sampler.cancel()
    for task in agent_tasks:
        task.cancel()
    await asyncio.gather(*agent_tasks, return_exceptions=True)
    await asyncio.gather(*(s.close() for _, s in visitors), *(a.close() for a in agents))

    sent, replies = len(load.visitor_sent), len(load.agent_sent)
    lost_to_agent = len(set(load.visitor_sent) - load.agent_received - load.visitor_refused)
    lost_to_visitor = len(set(load.agent_sent) - load.visitor_received - load.agent_refused)
    result.update(
        {
            "visitor_messages": sent,
            "visitor_messages_per_second": round(sent / args.duration, 1),
            "agent_replies": replies,
            "visitor_to_agent": summary_ms(load.to_agent),
            "agent_to_visitor": summary_ms(load.to_visitor),
            "lost": lost_to_agent + lost_to_visitor,
            "lost_to_agent": lost_to_agent,
            "lost_to_visitor": lost_to_visitor,
            "refused_visitor": len(load.visitor_refused),
            "refused_agent": len(load.agent_refused),
            "errors": dict(load.errors),
            "closed": dict(load.closed),
            "duplicates": load.duplicates,
            "out_of_order": load.out_of_order,
            "load_wall_s": round(wall, 1),
            "driver_loop_lag": summary_ms(lags),
            "timeline": timeline(load, math.ceil(args.duration)),
        }
    )
    if cpu_before is not None and cpu_after is not None:
        result["server_cpu_percent"] = round(100 * (cpu_after - cpu_before) / wall, 1)
    return result


def table(result: dict[str, Any], show_timeline: bool = False) -> str:
    def row(name: str, value: Any) -> str:
        return f"  {name:<34} {value}"

    def latency(values: dict[str, Any]) -> str:
        p50, p99, most = values["p50_ms"], values["p99_ms"], values["max_ms"]
        return f"p50 {p50} ms  p99 {p99} ms  max {most} ms  (n={values['n']})"

    where = result["backend"] or result.get("url")
    lines = [
        f"chat: {result['visitors']} visitors x {result['rate']} msg/s, {result['duration']} s, "
        f"{result['agents']} agent(s), {result['workers'] or '?'} worker(s), {where}",
        row("handshake", f"{latency(result['handshake'])}  {result['handshake']['per_second']}/s"),
        row("RSS per idle visitor socket", f"{result.get('rss_per_idle_socket_kib', '?')} KiB"),
        row(
            "visitor messages",
            f"{result['visitor_messages']} ({result['visitor_messages_per_second']}/s)",
        ),
        row("visitor -> agent", latency(result["visitor_to_agent"])),
        row("agent -> visitor", latency(result["agent_to_visitor"])),
        row("lost (sent, not refused, not delivered)", result["lost"]),
        row(
            "refused (error frames)",
            f"visitor {result['refused_visitor']}, agent {result['refused_agent']}",
        ),
        row("errors / closes", f"{result['errors'] or '-'} / {result['closed'] or '-'}"),
        row("duplicates / out of order", f"{result['duplicates']} / {result['out_of_order']}"),
        row("server CPU during load", f"{result.get('server_cpu_percent', '?')} %"),
        row("driver loop lag (10 ms ticks)", latency(result["driver_loop_lag"])),
    ]
    if show_timeline:
        lines.append("  second  n    p99 visitor->agent ms  p99 agent->visitor ms")
        lines.extend(
            f"  {row_['s']:>6}  {row_['n']:<4} {row_['to_agent_p99_ms']!s:>22}"
            f"  {row_['to_visitor_p99_ms']!s:>21}"
            for row_ in result["timeline"]
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chat", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", help="ws://host:port of a running slyker (else one is started)")
    parser.add_argument("--token", help="with --url: a staff access token")
    parser.add_argument(
        "--pid", type=int, action="append", default=[], help="with --url: worker pids (RSS)"
    )
    parser.add_argument("--origin", default=ORIGIN, help="the Origin of every socket")
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--rate", type=float, default=1.0, help="messages per second per visitor")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (max 300)")
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument("--handshake-concurrency", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis", action="store_true", help="PostgreSQL + a private Redis")
    parser.add_argument(
        "--postgres",
        default="postgres://postgres@127.0.0.1:5432/test",
        help="with --redis: an existing database to connect to for CREATE/DROP DATABASE",
    )
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--keep", action="store_true", help="keep the server's directory (logs)")
    parser.add_argument(
        "--timeline", action="store_true", help="print the p99 of each second of the load"
    )
    args = parser.parse_args(argv)
    if args.url and not args.token:
        parser.error("--url needs --token (a staff user's access token)")
    if not 0 < args.duration <= 300 or args.rate <= 0 or args.agents < 1:
        parser.error("--duration must be in (0, 300], --rate > 0, --agents >= 1")
    if args.workers > 1 and not args.redis and not args.url:
        parser.error("more than one worker needs --redis (chat fan-out between workers)")
    return args


@contextlib.contextmanager
def target(args: argparse.Namespace) -> Iterator[tuple[str, str, list[int]]]:
    if args.url:
        yield args.url.rstrip("/"), args.token, args.pid
        return
    extra = dict(item.split("=", 1) for item in args.env)
    server = Server(args.workers, args.redis, args.postgres, extra, keep=args.keep)
    try:
        base, token = server.start()
        yield base, token, server.pids()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with target(args) as (base, token, pids):
        result = asyncio.run(asyncio.wait_for(bench(args, base, token, pids), args.duration + 600))
    if args.url:
        result["url"] = args.url
    print(table(result, args.timeline))
    print(json.dumps(result))
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
