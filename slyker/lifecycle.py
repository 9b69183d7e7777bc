"""Draining: the app is told that its process is about to stop.

``python -m slyker serve`` (slyker/serve.py) calls :func:`start_draining` in a worker as soon
as that worker is asked to stop (SIGTERM to it, or the supervisor stopping), before Hypercorn
stops accepting. The app then answers ``/ready/`` with 503 (a load balancer stops sending new
work), refuses new chat sockets and closes open ones with 1001 so that widgets reconnect to a
worker that stays, while in-flight requests finish within Hypercorn's ``graceful_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from quart import Quart, current_app

DRAINING_KEY = "slyker.draining"

_draining_events: list[asyncio.Event] = []  # of the apps served by this process


def init_draining(app: Quart) -> None:
    """``app.extensions[DRAINING_KEY]``: an event set when the process starts to stop.

    Under plain Hypercorn with ``workers >= 1`` a worker gets SIGTERM when the whole process
    group is signalled (systemd, or tini with TINI_KILL_PROCESS_GROUP=1): that drains too. With
    ``workers = 0`` Hypercorn owns the SIGTERM handler, and this stays out of its way.
    """
    draining = asyncio.Event()
    app.extensions[DRAINING_KEY] = draining

    @app.before_serving
    async def watch_for_draining() -> None:
        _draining_events.append(draining)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, start_draining)

    @app.after_serving
    async def drained() -> None:
        draining.set()
        with contextlib.suppress(ValueError):
            _draining_events.remove(draining)


def start_draining() -> None:
    """Every app of this process starts draining (idempotent)."""
    for draining in list(_draining_events):
        draining.set()


def is_draining() -> bool:
    event: asyncio.Event | None = current_app.extensions.get(DRAINING_KEY)
    return event is not None and event.is_set()
