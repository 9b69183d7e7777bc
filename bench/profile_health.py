"""Profile slyker's fixed cost per request in-process: ``GET /health/`` through the whole
ASGI stack (every middleware, Quart, hooks) without sockets or a server, under cProfile.

    python -m bench.profile_health [--requests 5000] [--top 40] [--origin URL]
    python -m bench.profile_health --versus 6 --requests 1000   # CPU µs/request vs reference

It prints requests/s of the in-process loop (no HTTP parsing: an upper bound for the
server) and the cProfile breakdown by cumulative and own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quart import Quart

ORIGIN = "http://localhost:3000"


def _scope(path: str, origin: str | None) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    if origin:
        headers.append((b"origin", origin.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "extensions": {},
    }


async def _one(app: Any, path: str, origin: str | None) -> int:
    status = 0
    body_sent = False
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        # Like Hypercorn: the body once, then http.disconnect when the response is complete.
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(_scope(path, origin), receive, send)
    return status


async def _run(
    requests: int, top: int, path: str, origin: str | None, profile: bool, reference: bool
) -> None:
    if reference:
        from bench.reference_app import create_reference_app

        app = create_reference_app()
        await app.startup()
        try:
            await _measure(app, requests, top, path, origin, profile)
        finally:
            await app.shutdown()
        return
    app = _slyker_app()
    await app.startup()
    try:
        await _measure(app, requests, top, path, origin, profile)
    finally:
        await app.shutdown()


def _slyker_app() -> Quart:
    """slyker as profiled: SQLite in a fresh directory, the bench's allowed origin."""
    from slyker import create_app

    data_dir = tempfile.mkdtemp(prefix="slyker-profile-")
    return create_app(
        {
            "SECRET_KEY": "x" * 50,
            "DATABASE_URL": f"sqlite://{data_dir}/db.sqlite3",
            "ALLOWED_HOSTS": "localhost,127.0.0.1",
            "CORS_ALLOWED_ORIGINS": ORIGIN,
            "LOG_LEVEL": "WARNING",
        }
    )


async def _versus(requests: int, blocks: int, path: str, origin: str | None) -> None:
    """CPU time per request (``time.process_time``, so other processes on the machine do
    not count) of slyker and of the minimal Quart + quart-cors app, in one process, in
    alternating blocks: the in-process counterpart of ``bench.run --only health``, precise
    enough to see a few per cent. The reference shares nothing with slyker's set-up
    (quart-cors on its own, no quart-schema)."""
    from bench.reference_app import create_reference_app

    slyker_app = _slyker_app()
    reference_app = create_reference_app()
    apps = {"slyker": slyker_app, "Quart + quart-cors": reference_app}
    for app in apps.values():
        await app.startup()
    try:
        for app in apps.values():
            for _ in range(300):  # warm-up
                assert await _one(app, path, origin) == 200
        spent: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(blocks):
            for name, app in apps.items():
                started = time.process_time()
                for _ in range(requests):
                    await _one(app, path, origin)
                spent[name].append((time.process_time() - started) / requests * 1e6)
        best = {name: min(times) for name, times in spent.items()}
        for name, times in spent.items():
            print(
                f"{name}: best {best[name]:.0f} µs CPU per request, median "
                f"{sorted(times)[len(times) // 2]:.0f} ({blocks} blocks of {requests})"
            )
        print(
            f"slyker / reference CPU per request: {best['slyker'] / best['Quart + quart-cors']:.2f}"
        )
    finally:
        for app in apps.values():
            await app.shutdown()


async def _measure(
    app: Any, requests: int, top: int, path: str, origin: str | None, profile: bool
) -> None:
    if True:
        for _ in range(200):  # warm-up
            assert await _one(app, path, origin) == 200
        profiler = cProfile.Profile()
        started = time.perf_counter()
        if profile:
            profiler.enable()
        for _ in range(requests):
            await _one(app, path, origin)
        if profile:
            profiler.disable()
        elapsed = time.perf_counter() - started
        print(
            f"{requests} x GET {path} in-process: {requests / elapsed:,.0f} req/s "
            f"({elapsed / requests * 1e6:.0f} µs each{' under cProfile' if profile else ''})"
        )
        if profile:
            stats = pstats.Stats(profiler)
            stats.sort_stats("cumulative").print_stats(top)
            stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--path", default="/health/")
    parser.add_argument("--origin", default=ORIGIN, help="'' for no Origin header")
    parser.add_argument("--no-profile", action="store_true", help="timing only")
    parser.add_argument(
        "--reference", action="store_true", help="the minimal Quart + quart-cors app instead"
    )
    parser.add_argument(
        "--versus",
        type=int,
        metavar="BLOCKS",
        help="no profile: CPU time per request of slyker and the reference, BLOCKS "
        "alternating blocks of --requests each",
    )
    args = parser.parse_args()
    os.environ.setdefault("QUART_SKIP_DOTENV", "1")
    if args.versus:
        asyncio.run(_versus(args.requests, args.versus, args.path, args.origin or None))
        return
    asyncio.run(
        _run(
            args.requests,
            args.top,
            args.path,
            args.origin or None,
            not args.no_profile,
            args.reference,
        )
    )


if __name__ == "__main__":
    main()
