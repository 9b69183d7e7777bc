"""The buffered access log (ACCESS_LOG_FLUSH_SECONDS) under a real ``python -m slyker serve``.

A worker keeps its access lines in memory: a graceful stop (SIGTERM) still writes every one,
a short delay writes them without further traffic, and the lines are the ones Hypercorn
writes (rid= included).
"""

from __future__ import annotations

import http.client
import re
import signal
import time
import uuid
from pathlib import Path

from tests.live_servers import HOST, migrate, slyker_env
from tests.test_serve_live import EXIT_TIMEOUT, start_serve

REQUESTS = 5
LOG_WAIT = 20.0  # seconds a line may take to show up under a loaded machine (flush is 0.3 s)
LINE = re.compile(
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[INFO\] "
    r'127\.0\.0\.1:\d+ "GET /_probe/pid/ 1\.1" 200 \d+ \d+us rid=(\S+) "-"$'
)


def send_requests(port: int) -> list[str]:
    """``REQUESTS`` requests, each with its own X-Request-ID; the ids."""
    ids = []
    for _ in range(REQUESTS):
        request_id = uuid.uuid4().hex
        connection = http.client.HTTPConnection(HOST, port, timeout=10.0)
        try:
            connection.request("GET", "/_probe/pid/", headers={"X-Request-ID": request_id})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            assert response.headers["X-Request-ID"] == request_id
        finally:
            connection.close()
        ids.append(request_id)
    return ids


def access_lines(log: str, ids: list[str]) -> list[str]:
    return [line for line in log.splitlines() if any(f"rid={i} " in line for i in ids)]


def test_a_graceful_stop_writes_every_buffered_line(tmp_path: Path) -> None:
    env = slyker_env(DATA_DIR=str(tmp_path / "data"), ACCESS_LOG_FLUSH_SECONDS="60")
    migrate(env)
    server = start_serve(tmp_path / "serve", env, workers=1)
    try:
        ids = send_requests(server.port)
        # 60 s to the timer: none of them is written yet (the buffer is working).
        assert access_lines(server.full_log(), ids) == [], server.log()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(EXIT_TIMEOUT) == 0, server.log()
    finally:
        server.stop()
    lines = access_lines(server.full_log(), ids)
    assert [LINE.match(line).group(1) for line in lines] == ids, lines  # type: ignore[union-attr]


def test_lines_show_up_without_more_traffic(tmp_path: Path) -> None:
    env = slyker_env(DATA_DIR=str(tmp_path / "data"), ACCESS_LOG_FLUSH_SECONDS="0.3")
    migrate(env)
    server = start_serve(tmp_path / "serve", env, workers=1)
    try:
        ids = send_requests(server.port)
        deadline = time.monotonic() + LOG_WAIT
        while len(access_lines(server.full_log(), ids)) < REQUESTS:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        lines = access_lines(server.full_log(), ids)
        assert [LINE.match(line).group(1) for line in lines] == ids, lines  # type: ignore[union-attr]
    finally:
        server.stop()
