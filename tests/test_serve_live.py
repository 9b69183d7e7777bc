"""``python -m slyker serve`` (slyker/serve.py) with real processes and real sockets.

The outage: under ``hypercorn --workers 2``, ``kill -KILL`` of one worker made Hypercorn's main
process stop the other and exit 0, logging nothing; a worker that could not start (a bad
setting) also ended in exit 0. Here:

1. Two workers serve ``tests.contract_app`` (``/_probe/pid/`` says which worker answered) while
   two clients send requests continuously, each on a fresh connection; one worker is SIGKILLed.
   The other keeps answering, a replacement (a new pid) answers, the death is logged, and at
   most the requests in flight on the killed worker (one per client) fail.
2. A bad setting: exit 1 within seconds, the setting and the failed start in the log.
3. SIGTERM to the process group: every chat socket closes with 1001 at once (as under plain
   Hypercorn), the workers drain, the supervisor exits 0.
4. The port already taken: exit 1, logged. The supervisor SIGKILLed: its workers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from tests.live_servers import (
    HOST,
    START_TIMEOUT,
    free_port,
    migrate,
    slyker_env,
    spawn,
    start_with_retries,
    stop_process,
    tail,
    wait_for_health,
)

CONTRACT_APP = "tests.contract_app:create_contract_app()"
ORIGIN = "https://slykertech.co.zw"  # in the contract app's CORS_ALLOWED_ORIGINS
CLIENTS = 2
RECOVERY_TIMEOUT = 30.0  # a replacement worker answers within this (start-up is ~2-4 s here)
EXIT_TIMEOUT = 20.0


@dataclass
class Supervised:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self, limit: int = 8000) -> str:
        return tail(self.log_path, limit)

    def full_log(self) -> str:
        # Under traffic the access log soon pushes the first lines out of any tail.
        return self.log_path.read_text(errors="replace")

    def started_workers(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"Started worker (\d+)", self.full_log())]

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM)


def start_serve(
    directory: Path, env: dict[str, str], *, workers: int = 2, app: str = CONTRACT_APP
) -> Supervised:
    """``python -m slyker serve --config hypercorn.toml --bind ... --workers N APP``, healthy
    with every worker serving (the supervisor's "Serving:" line)."""
    directory.mkdir(parents=True, exist_ok=True)

    def attempt(number: int) -> tuple[Supervised, None] | tuple[None, str]:
        port = free_port()
        log_path = directory / f"serve-{number}.log"
        command = [sys.executable, "-m", "slyker", "serve", "--config", "hypercorn.toml"]
        command += ["--bind", f"{HOST}:{port}", "--workers", str(workers), app]
        server = Supervised(port, spawn(command, log_path, env), log_path)
        problem = wait_for_health(port, server.process, START_TIMEOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while problem is None and "Serving:" not in server.log(200_000):
            if time.monotonic() > deadline:
                problem = "no 'Serving:' line"
            time.sleep(0.05)
        if problem is None:
            return server, None
        server.stop()
        return None, f"{problem}\n{server.log()}"

    return start_with_retries("python -m slyker serve", attempt)


@pytest.fixture
def serve_env(tmp_path: Path) -> dict[str, str]:
    env = slyker_env(DATA_DIR=str(tmp_path / "data"))
    migrate(env)
    return env


# --- 1. a killed worker -----------------------------------------------------------------------


@dataclass
class Traffic:
    """Clients that each send ``GET /_probe/pid/`` on a fresh connection, back to back."""

    port: int
    answers: list[tuple[float, int]] = field(default_factory=list)  # (when, pid)
    failures: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def client(self) -> None:
        while not self.stop.is_set():
            connection = http.client.HTTPConnection(HOST, self.port, timeout=5.0)
            try:
                connection.request("GET", "/_probe/pid/")
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    raise http.client.HTTPException(f"status {response.status}")
                self.answers.append((time.monotonic(), int(json.loads(body)["pid"])))
            except (OSError, http.client.HTTPException, ValueError) as error:
                self.failures.append((time.monotonic(), repr(error)))
            finally:
                connection.close()

    def pids_since(self, moment: float) -> set[int]:
        return {pid for when, pid in list(self.answers) if when >= moment}


def test_a_killed_worker_is_replaced_while_the_other_keeps_serving(
    tmp_path: Path, serve_env: dict[str, str]
) -> None:
    server = start_serve(tmp_path / "kill", serve_env)
    traffic = Traffic(server.port)
    threads = [threading.Thread(target=traffic.client, daemon=True) for _ in range(CLIENTS)]
    try:
        original = server.started_workers()
        assert len(original) == 2, server.log()
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        assert traffic.answers and not traffic.failures, (traffic.failures, server.log())
        victim, survivor = original
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        deadline = killed_at + RECOVERY_TIMEOUT
        new_pids: set[int] = set()
        while time.monotonic() < deadline:
            new_pids = traffic.pids_since(killed_at) - set(original)
            if new_pids:
                break
            time.sleep(0.02)
        recovered_at = time.monotonic()
        time.sleep(0.5)  # the replacement and the survivor share the traffic
    finally:
        traffic.stop.set()
        for thread in threads:
            thread.join(timeout=10)
        server.stop()

    log = server.full_log()
    assert new_pids, f"no replacement answered within {RECOVERY_TIMEOUT} s\n{log}"
    (replacement,) = new_pids
    assert server.started_workers() == [*original, replacement], log
    assert re.search(rf"Worker {victim} died \(killed by SIGKILL\)", log), log
    after_kill = [(when, pid) for when, pid in traffic.answers if when >= killed_at]
    # The survivor answered throughout: before the replacement was up, and without a gap.
    assert any(pid == survivor and when < recovered_at for when, pid in after_kill), log
    moments = [killed_at] + [when for when, _ in after_kill if when <= recovered_at]
    longest_gap = max(b - a for a, b in itertools.pairwise(moments))
    assert longest_gap < 1.0, f"no answer for {longest_gap:.2f} s after the kill\n{log}"
    # Only what was in flight on the killed worker failed: one request per client at most.
    assert len(traffic.failures) <= CLIENTS, traffic.failures
    assert all(when >= killed_at for when, _ in traffic.failures), traffic.failures
    assert server.process.returncode == 0, log
    print(
        f"\nrequests answered: {len(traffic.answers)}, failed: {len(traffic.failures)} "
        f"({[why for _, why in traffic.failures]}); survivor {survivor} answered "
        f"{sum(1 for when, pid in after_kill if pid == survivor and when < recovered_at)} "
        f"between the kill and the replacement; replacement {replacement} answered "
        f"{recovered_at - killed_at:.2f} s after the kill; longest gap {longest_gap:.3f} s"
    )


# --- 2. a fatal start-up error ---------------------------------------------------------------


def test_a_bad_setting_is_fatal_logged_and_non_zero(tmp_path: Path) -> None:
    env = slyker_env(DATA_DIR=str(tmp_path / "data"), SECRET_KEY="too-short")
    log_path = tmp_path / "bad.log"
    command = [sys.executable, "-m", "slyker", "serve", "--bind", f"{HOST}:{free_port()}"]
    process = spawn([*command, "--workers", "2"], log_path, env)
    try:
        code = process.wait(timeout=EXIT_TIMEOUT)
    finally:
        stop_process(process)
    log = tail(log_path)
    assert code == 1, log
    assert "invalid setting SECRET_KEY" in log, log
    assert re.search(r"\[CRITICAL\] Worker \d+ failed to start \(exit code 1\)", log), log


def test_the_port_already_taken_is_fatal(tmp_path: Path, serve_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        log_path = tmp_path / "taken.log"
        command = [sys.executable, "-m", "slyker", "serve", "--bind", f"{HOST}:{port}"]
        process = spawn(command, log_path, serve_env)
        try:
            code = process.wait(timeout=EXIT_TIMEOUT)
        finally:
            stop_process(process)
    assert code == 1, tail(log_path)
    assert f"Cannot listen on ['{HOST}:{port}']" in tail(log_path)


def test_a_second_server_cannot_bind_the_port_of_a_running_one(
    tmp_path: Path, serve_env: dict[str, str]
) -> None:
    """The supervisor's sockets carry no SO_REUSEPORT: a forgotten second server (here a
    socket that asks for SO_REUSEPORT, as Hypercorn's own with workers > 1) cannot bind the
    same port and silently take part of the traffic."""
    server = start_serve(tmp_path / "first", serve_env, workers=2)
    try:
        with socket.socket() as second:
            second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with pytest.raises(OSError) as refused:
                second.bind((HOST, server.port))
        assert refused.value.errno == errno.EADDRINUSE
    finally:
        server.stop()


def test_a_bad_command_line_is_a_usage_error(tmp_path: Path, serve_env: dict[str, str]) -> None:
    for arguments in (["--workers", "0"], ["--config", str(tmp_path / "missing.toml")]):
        result = subprocess.run(
            [sys.executable, "-m", "slyker", "serve", *arguments],
            env=serve_env,
            capture_output=True,
            text=True,
            timeout=EXIT_TIMEOUT,
            check=False,
        )
        assert result.returncode == 2, result.stderr


# --- 3. SIGTERM to the group -----------------------------------------------------------------


async def test_sigterm_to_the_group_closes_chat_with_1001_and_exits_0(
    tmp_path: Path, serve_env: dict[str, str]
) -> None:
    server = start_serve(tmp_path / "term", serve_env)
    try:
        sockets = []
        for department in ("sales", "support", "billing", "sales"):
            ws = await connect(
                f"ws://{HOST}:{server.port}/ws/chat/{department}/",
                origin=Origin(ORIGIN),
                proxy=None,
                open_timeout=5,
            )
            sockets.append(ws)
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert frame["type"] == "connection_established", frame
        started = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)
        for ws in sockets:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None, server.log()
            assert closed.value.rcvd.code == 1001, server.log()
        assert time.monotonic() - started < 3  # far below hypercorn.toml's graceful timeout
        assert await asyncio.to_thread(server.process.wait, EXIT_TIMEOUT) == 0, server.log()
        assert "Stopped (SIGTERM)" in server.log(), server.log()
    finally:
        server.stop()


# --- 4. the supervisor gone --------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_stop_when_the_supervisor_is_killed(
    tmp_path: Path, serve_env: dict[str, str]
) -> None:
    server = start_serve(tmp_path / "orphans", serve_env)
    workers = server.started_workers()
    try:
        server.process.kill()
        server.process.wait(timeout=EXIT_TIMEOUT)
        deadline = time.monotonic() + EXIT_TIMEOUT
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in workers), server.log()
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of its group
            os.killpg(server.process.pid, signal.SIGKILL)


# --- 5. draining: in-flight requests, chat sockets, readiness ---------------------------------

SLOW_SECONDS = 3.0  # each in-flight request takes this long
IN_FLIGHT = 4
SLOW_PATH = f"/_probe/slow/?seconds={SLOW_SECONDS}"


@dataclass
class Answer:
    status: int | None
    body: dict[str, object] | None
    error: str | None
    seconds: float


def timed_get(port: int, path: str, timeout: float = 30.0) -> Answer:
    started = time.monotonic()
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        raw = response.read()
        body = json.loads(raw) if raw.startswith(b"{") else None
        return Answer(response.status, body, None, time.monotonic() - started)
    except (OSError, http.client.HTTPException) as error:
        return Answer(None, None, repr(error), time.monotonic() - started)
    finally:
        connection.close()


async def open_chat(port: int) -> object:
    ws = await connect(
        f"ws://{HOST}:{port}/ws/chat/sales/", origin=Origin(ORIGIN), proxy=None, open_timeout=5
    )
    frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert frame["type"] == "connection_established", frame
    return ws


async def close_code(ws: object, within: float) -> int | None:
    """The close code the server sent within ``within`` seconds (None: none)."""
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(within):
            while True:
                await ws.recv()  # type: ignore[attr-defined]
    received = ws.protocol.close_rcvd  # type: ignore[attr-defined]
    return None if received is None else int(received.code)


async def test_sigterm_to_one_worker_drains_it_and_the_supervisor_replaces_it(
    tmp_path: Path, serve_env: dict[str, str]
) -> None:
    """The worker stops accepting at once (the other serves every new request and chat
    socket), closes its chat sockets with 1001, finishes its in-flight requests, exits and is
    replaced. It used to keep serving HTTP and refuse new chat sockets with 503 for minutes."""
    server = start_serve(tmp_path / "one", serve_env)
    try:
        victim, survivor = server.started_workers()
        # Everything below lands on the victim: the survivor accepts nothing while stopped.
        os.kill(survivor, signal.SIGSTOP)
        try:
            chats = [await open_chat(server.port) for _ in range(2)]
            slow = [
                asyncio.create_task(
                    asyncio.to_thread(
                        timed_get, server.port, f"/_probe/slow/?seconds={SLOW_SECONDS}"
                    )
                )
                for _ in range(IN_FLIGHT)
            ]
            await asyncio.sleep(0.5)
        finally:
            os.kill(survivor, signal.SIGCONT)
        terminated_at = time.monotonic()
        os.kill(victim, signal.SIGTERM)
        codes = await asyncio.gather(*(close_code(ws, 3.0) for ws in chats))
        # New work during the drain: every request and chat socket is served.
        during: list[Answer] = []
        late_victim_answers = 0  # the victim stops accepting within a fraction of a second
        refused_chats = 0
        while time.monotonic() - terminated_at < SLOW_SECONDS + 1:
            during.append(await asyncio.to_thread(timed_get, server.port, "/_probe/pid/"))
            if during[-1].body and during[-1].body["pid"] == victim:
                late_victim_answers += time.monotonic() - terminated_at > 1.0
            try:
                ws = await open_chat(server.port)
                await ws.close()  # type: ignore[attr-defined]
            except Exception:
                refused_chats += 1
            await asyncio.sleep(0.2)
        in_flight = await asyncio.gather(*slow)
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while len(server.started_workers()) < 3 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        replaced_after = time.monotonic() - terminated_at
        log = server.log(200_000)
        print(
            f"\nSIGTERM to one worker: chat closes {codes}; in-flight "
            f"{[(a.status, a.error) for a in in_flight]}; during the drain "
            f"{sum(a.status == 200 for a in during)}/{len(during)} requests answered, "
            f"{refused_chats} chat sockets refused; replaced after {replaced_after:.1f} s"
        )
        assert codes == [1001, 1001], log
        assert [(a.status, a.body and a.body["pid"]) for a in in_flight] == [
            (200, victim)
        ] * IN_FLIGHT, (in_flight, log)
        assert all(a.status == 200 for a in during), (during, log)
        assert late_victim_answers == 0, (during, log)
        assert refused_chats == 0, log
        assert len(server.started_workers()) == 3, log
        assert not alive(victim), log
        assert re.search(rf"Worker {victim} stopped \(exit code 0\)", log), log
        replacement = server.started_workers()[-1]
        answered = {
            (await asyncio.to_thread(timed_get, server.port, "/_probe/pid/")).body["pid"]  # type: ignore[index]
            for _ in range(20)
        }
        assert answered <= {survivor, replacement}, answered
    finally:
        server.stop()


@pytest.mark.parametrize("whom", ["supervisor", "group"])
async def test_sigterm_drains_the_service(
    tmp_path: Path, serve_env: dict[str, str], whom: str
) -> None:
    """SIGTERM to the supervisor (or to the whole group): /ready/ answers 503 at once (while
    the workers still accept, --drain-delay), chat sockets close with 1001 at once, in-flight
    requests all finish, new connections afterwards are refused rather than left hanging, and
    the supervisor exits 0 long before the graceful timeout. It used to hold in-flight
    requests and chat sockets for the whole graceful timeout (20 s), then close chat with 1011."""
    server = start_serve(tmp_path / whom, serve_env)
    try:
        chats = [await open_chat(server.port) for _ in range(4)]
        slow = [
            asyncio.create_task(asyncio.to_thread(timed_get, server.port, SLOW_PATH))
            for _ in range(IN_FLIGHT)
        ]
        await asyncio.sleep(0.5)
        terminated_at = time.monotonic()
        if whom == "group":
            os.killpg(server.process.pid, signal.SIGTERM)
        else:
            server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        ready = await asyncio.to_thread(timed_get, server.port, "/ready/", 5.0)
        codes = await asyncio.gather(*(close_code(ws, 3.0) for ws in chats))
        closed_after = time.monotonic() - terminated_at
        await asyncio.sleep(max(0.0, 1.5 - (time.monotonic() - terminated_at)))
        late = await asyncio.to_thread(timed_get, server.port, "/_probe/pid/", 30.0)
        in_flight = await asyncio.gather(*slow)
        exit_code = await asyncio.to_thread(server.process.wait, EXIT_TIMEOUT)
        stopped_after = time.monotonic() - terminated_at
        log = server.log(200_000)
        print(
            f"\nSIGTERM to the {whom}: /ready/ {ready.status}; chat closes {codes} after "
            f"{closed_after:.2f} s; in-flight {[(a.status, a.error) for a in in_flight]}; a "
            f"request 1.5 s later: {late.status or late.error} after {late.seconds:.2f} s; "
            f"exit {exit_code} after {stopped_after:.1f} s"
        )
        assert ready.status == 503 and ready.body is not None, (ready, log)
        assert ready.body["status"] == "stopping", (ready, log)
        assert codes == [1001] * 4, log
        assert closed_after < 3, log
        assert [a.status for a in in_flight] == [200] * IN_FLIGHT, (in_flight, log)
        assert late.seconds < 2, (late, log)  # answered or refused, never left hanging
        assert exit_code == 0, log
        assert stopped_after < SLOW_SECONDS + 5, log
    finally:
        server.stop()
