"""``python -m slyker serve``: Hypercorn workers under a supervisor that replaces dead ones.

Why not ``hypercorn --workers N``: Hypercorn's main process (0.18, ``hypercorn/run.py``) waits
for any worker to exit and, if its exit code is not 0, stops all the others and exits — with
the exit code of those others, 0, and without a log line. So one worker killed by the kernel
(OOM) or by ``kill -KILL`` took the whole API down silently, and a worker that could not start
(a bad setting) also ended in exit status 0.

This supervisor keeps Hypercorn for everything else: the configuration is ``hypercorn.toml``
(plus the few command-line options below, which win over it, as with ``hypercorn``), the
listening sockets are created once here and shared with every worker as Hypercorn does, and
each worker runs Hypercorn's own asyncio server (``worker_serve``). What differs:

* A worker that dies after it started serving is logged (pid, exit code or signal) and
  replaced at once; the other workers keep accepting on the shared sockets meanwhile.
* A worker that exits before it ever served — the app cannot load (a bad setting), or its
  lifespan start-up failed — is fatal while no worker has served yet: the others are stopped
  and the supervisor exits 1, logged. Later (the service was up) such failures are retried
  with a growing delay, and fatal after ``MAX_START_FAILURES`` in a row.
* SIGTERM or SIGINT to the supervisor (or SIGTERM to the whole process group): every worker
  drains. Draining (``slyker.lifecycle``): ``/ready/`` answers 503 and chat sockets close with
  1001 at once (widgets reconnect elsewhere); the worker keeps accepting for ``--drain-delay``
  seconds so that a load balancer sees the 503 first; then it stops accepting and in-flight
  requests finish within ``graceful_timeout``. The supervisor closes its copy of the listening
  sockets at once, so that once the workers stop accepting new connections are refused at once
  instead of waiting unanswered in the kernel's backlog. Then exit 0.
* SIGTERM to one worker: that worker drains the same way (without the delay: the others keep
  serving), exits, and is replaced.
* A worker whose supervisor has gone (SIGKILLed) shuts down instead of serving unsupervised.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import multiprocessing
import os
import secrets
import signal
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import load_application

from slyker.access_log import AccessLogger, flush_access_log
from slyker.lifecycle import start_draining
from slyker.settings import SettingsError, read_access_log_flush_seconds
from slyker.settings_reader import Reader

log = logging.getLogger("slyker.serve")

DEFAULT_CONFIG = "hypercorn.toml"
DEFAULT_APP = "slyker:create_app()"
MAX_START_FAILURES = 5  # in a row, once the service has been up; then the supervisor gives up
MAX_RESTART_DELAY = 10.0  # seconds between attempts to start a failing worker
POLL_INTERVAL = 0.5  # seconds: how often the supervisor looks at its workers
WORKER_POLL_INTERVAL = 0.1  # seconds: how often a worker looks for the shutdown signal
STOP_MARGIN = 5.0  # seconds beyond graceful + shutdown timeouts before workers are killed
DEFAULT_DRAIN_DELAY = 1.0  # seconds a stopping service keeps accepting with /ready/ 503

EXIT_OK = 0
EXIT_FATAL = 1  # a worker could not start, or the sockets could not be bound
EXIT_USAGE = 2  # bad command line or configuration file


# --- the command line ------------------------------------------------------------------------


def parse_config(argv: list[str], environ: Mapping[str, str] | None = None) -> Config:
    """hypercorn.toml, then the command-line options (which win, as with ``hypercorn``), and
    ACCESS_LOG_FLUSH_SECONDS from ``environ`` (default ``os.environ``; a bad value raises
    :class:`SettingsError` before any worker starts)."""
    parser = argparse.ArgumentParser(
        prog="python -m slyker serve",
        description="Hypercorn workers under a supervisor that replaces dead ones.",
    )
    parser.add_argument("application", nargs="?", default=DEFAULT_APP)
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="a Hypercorn TOML file")
    parser.add_argument("--bind", "-b", dest="binds", action="append", default=[])
    parser.add_argument("--insecure-bind", dest="insecure_binds", action="append", default=[])
    parser.add_argument("--workers", "-w", type=int)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--access-logfile")
    parser.add_argument("--access-logformat")
    parser.add_argument("--error-logfile")
    parser.add_argument(
        "--drain-delay",
        type=float,
        default=DEFAULT_DRAIN_DELAY,
        help="seconds a stopping service keeps accepting, answering /ready/ with 503",
    )
    args = parser.parse_args(argv)

    if not Path(args.config).is_file():
        parser.error(f"--config: no such file: {args.config}")
    config = Config.from_toml(args.config)
    config.logger_class = AccessLogger  # the same lines, fewer atoms built (slyker.access_log)
    config.application_path = args.application
    if args.binds:
        config.bind = args.binds
    if args.insecure_binds:
        config.insecure_bind = args.insecure_binds
    for name in ("workers", "certfile", "keyfile"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    if args.access_logfile is not None:
        config.accesslog = args.access_logfile
    if args.access_logformat is not None:
        config.access_log_format = args.access_logformat
    if args.error_logfile is not None:
        config.errorlog = args.error_logfile
    if config.workers < 1:
        parser.error(f"workers must be at least 1, not {config.workers}")
    if config.worker_class not in LOOP_FACTORIES:
        parser.error(f"worker_class must be one of {sorted(LOOP_FACTORIES)}")
    if not 0 <= args.drain_delay <= 60:
        parser.error(f"--drain-delay must be between 0 and 60 seconds, not {args.drain_delay}")
    config.drain_delay = args.drain_delay  # type: ignore[attr-defined]  # ours, not Hypercorn's
    # Read by AccessLogger (slyker.access_log) in each worker; ours, not Hypercorn's.
    config.access_log_flush_seconds = read_access_log_flush_seconds(  # type: ignore[attr-defined]
        Reader(os.environ if environ is None else environ)
    )
    return config


def configure_logging(config: Config) -> None:
    """The supervisor's own lines go where Hypercorn's error log goes, in its format."""
    target = config.errorlog
    handler: logging.Handler
    if target in (None, "-") or not isinstance(target, str):
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(target)
    handler.setFormatter(
        logging.Formatter(
            "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S %z"
        )
    )
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: list[str]) -> int:
    try:
        config = parse_config(argv)
    except SettingsError as error:  # ACCESS_LOG_FLUSH_SECONDS (a SystemExit too: first)
        print(f"python -m slyker serve: {error}", file=sys.stderr)
        return EXIT_FATAL
    except SystemExit as exit_:  # argparse: usage printed
        return int(exit_.code or 0) and EXIT_USAGE
    except (OSError, ValueError) as error:  # an unreadable or invalid hypercorn.toml
        print(f"python -m slyker serve: {error}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config)
    if _debug_without_secret_key(os.environ):
        # One random key for every worker (inherited), not one each: a token issued by one
        # worker must be valid on the others. Never a key from the source.
        os.environ["SECRET_KEY"] = secrets.token_urlsafe(48)
        log.warning("DEBUG without SECRET_KEY: the workers share a random key made at start-up")
    return Supervisor(config).run()


def _debug_without_secret_key(environ: Mapping[str, str]) -> bool:
    from slyker.settings import SettingsError
    from slyker.settings_reader import Reader

    read = Reader(environ)
    try:
        return read.bool("DEBUG", False) and not read.raw("SECRET_KEY")
    except SettingsError:
        return False  # the workers report the bad DEBUG value


# --- a worker process --------------------------------------------------------------------------


def _new_uvloop() -> asyncio.AbstractEventLoop:
    import uvloop  # type: ignore[import-not-found]

    return uvloop.new_event_loop()  # type: ignore[no-any-return]


LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {
    "asyncio": None,
    "uvloop": _new_uvloop,
}


def _ignore_tls_handshake_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # As Hypercorn's own worker: a client's failed TLS handshake is not the server's error.
    if not isinstance(context.get("exception"), ssl.SSLError):
        loop.default_exception_handler(context)


def run_worker(
    config: Config, sockets: Sockets, shutdown: Event, serving: Event, supervisor: int
) -> None:
    """One worker (in a process of its own): load the app, then Hypercorn's asyncio server on
    the shared sockets until the supervisor says stop or is gone. ``serving`` is set once the
    app's start-up has finished and the sockets accept."""
    configure_logging(config)
    try:
        app = load_application(config.application_path, config.wsgi_max_body_size)
    except SettingsError as error:
        log.error("Worker %d cannot load the app: %s", os.getpid(), error)
        sys.exit(EXIT_FATAL)

    terminated = False  # SIGTERM to this worker (alone, or with its process group)

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True

    async def serve_until_shutdown() -> None:
        # Hypercorn awaits this only after lifespan start-up, with its servers listening.
        # Start-up's objects (modules, routes, schemas: ~120k) go to the permanent generation:
        # full collections stop walking them (90 ms pauses, the chat's p99, before).
        gc.collect()
        gc.freeze()
        serving.set()
        # A process-shared Event cannot be awaited: poll it, as Hypercorn's own worker does.
        while not (shutdown.is_set() or terminated) and os.getppid() == supervisor:  # noqa: ASYNC110
            await asyncio.sleep(WORKER_POLL_INTERVAL)
        if terminated and not shutdown.is_set():
            # A SIGTERM to the whole group reaches the supervisor too: then the service stops.
            await asyncio.sleep(WORKER_POLL_INTERVAL * 2)
        start_draining()  # /ready/ 503, chat sockets closed with 1001, new ones refused
        if shutdown.is_set():
            # The whole service stops: keep accepting a moment, answering /ready/ with 503.
            # A worker stopped alone stops accepting at once: the others serve.
            await asyncio.sleep(getattr(config, "drain_delay", 0.0))
        log.info("Worker %d draining", os.getpid())

    with asyncio.Runner(
        debug=config.debug, loop_factory=LOOP_FACTORIES[config.worker_class]
    ) as runner:
        loop = runner.get_loop()
        loop.set_exception_handler(_ignore_tls_handshake_errors)
        # Before the app starts: the app's own SIGTERM watcher then stays out of the way.
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            runner.run(
                worker_serve(app, config, sockets=sockets, shutdown_trigger=serve_until_shutdown)
            )
        finally:
            flush_access_log()  # the buffered lines (ACCESS_LOG_FLUSH_SECONDS); atexit too


# --- the supervisor ----------------------------------------------------------------------------


@dataclass
class Worker:
    process: SpawnProcess
    serving: Event
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def describe_exit(self) -> str:
        code = self.process.exitcode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"


class Fatal(Exception):
    """The supervisor must stop every worker and exit non-zero."""


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.context: SpawnContext = multiprocessing.get_context("spawn")
        self.shutdown = self.context.Event()
        self.workers: list[Worker] = []
        self.stopping: str | None = None  # the signal that asked for a stop
        self.ever_served = False
        self.start_failures = 0  # in a row
        self.next_start = 0.0  # monotonic time before which no worker is started

    def run(self) -> int:
        if self.config.pid_path is not None:
            Path(self.config.pid_path).write_text(str(os.getpid()))
        # The workers inherit these sockets, so they need no SO_REUSEPORT, which Hypercorn sets
        # when workers > 1 and which would let a second, forgotten server bind the same port
        # and silently take part of the connections: create them as for one worker.
        workers, self.config.workers = self.config.workers, 1
        try:
            self.sockets = self.config.create_sockets()
        except OSError as error:
            log.critical("Cannot listen on %s: %s", self.config.bind, error)
            return EXIT_FATAL
        finally:
            self.config.workers = workers
        for name in ("SIGTERM", "SIGINT"):
            signal.signal(getattr(signal, name), self._request_stop)
        log.info(
            "Supervising %d worker(s) of %s on %s",
            self.config.workers,
            self.config.application_path,
            ", ".join([*self.config.bind, *self.config.insecure_bind]),
        )
        exit_code = EXIT_OK
        try:
            self._supervise()
        except Fatal as problem:
            log.critical("%s; stopping every worker (exit %d)", problem, EXIT_FATAL)
            exit_code = EXIT_FATAL
        finally:
            self._stop_workers()
            for sock in [*self.sockets.secure_sockets, *self.sockets.insecure_sockets]:
                sock.close()
        if exit_code == EXIT_OK:
            log.info("Stopped (%s)", self.stopping)
        return exit_code

    def _request_stop(self, signum: int, _frame: Any) -> None:
        self.stopping = signal.Signals(signum).name
        self.shutdown.set()

    def _supervise(self) -> None:
        while self.stopping is None:
            if len(self.workers) < self.config.workers and time.monotonic() >= self.next_start:
                self._start_worker()
                continue
            sentinels = [worker.process.sentinel for worker in self.workers]
            wait(sentinels, timeout=POLL_INTERVAL)
            if self.stopping is not None:
                return
            if not self.ever_served and any(w.serving.is_set() for w in self.workers):
                self.ever_served = True
                log.info("Serving: %s", ", ".join(str(w.pid) for w in self.workers))
            for worker in [w for w in self.workers if not w.process.is_alive()]:
                self._reap(worker)

    def _start_worker(self) -> None:
        serving = self.context.Event()
        process = self.context.Process(  # type: ignore[attr-defined]
            target=run_worker,
            kwargs={
                "config": self.config,
                "sockets": self.sockets,
                "shutdown": self.shutdown,
                "serving": serving,
                "supervisor": os.getpid(),
            },
            daemon=False,
        )
        # The worker inherits an ignored SIGINT (a terminal's Ctrl+C reaches the whole
        # group): the supervisor alone decides, and tells the workers through ``shutdown``.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        self.workers.append(Worker(process, serving))
        log.info("Started worker %d", process.pid)

    def _reap(self, worker: Worker) -> None:
        worker.process.join()
        self.workers.remove(worker)
        how = worker.describe_exit()
        if worker.serving.is_set():
            self.start_failures = 0
            log.log(
                logging.WARNING if worker.process.exitcode == 0 else logging.ERROR,
                "Worker %d %s (%s) %.0f s after it started; starting a replacement",
                worker.pid,
                "stopped" if worker.process.exitcode == 0 else "died",
                how,
                time.monotonic() - worker.started,
            )
            return
        if not self.ever_served:
            raise Fatal(f"Worker {worker.pid} failed to start ({how})")
        self.start_failures += 1
        if self.start_failures >= MAX_START_FAILURES:
            raise Fatal(f"{self.start_failures} workers in a row failed to start (last: {how})")
        delay = min(MAX_RESTART_DELAY, 0.5 * 2 ** (self.start_failures - 1))
        self.next_start = time.monotonic() + delay
        log.error("Worker %d failed to start (%s); trying again in %.1f s", worker.pid, how, delay)

    def _stop_workers(self) -> None:
        """Tell every worker to drain and stop; kill what is still running after the
        graceful and shutdown timeouts (and a margin)."""
        self.shutdown.set()
        # Once the workers stop accepting, new connections are refused instead of waiting in
        # the backlog of a socket nobody accepts on any more.
        for sock in [*self.sockets.secure_sockets, *self.sockets.insecure_sockets]:
            sock.close()
        limit = self.config.graceful_timeout + self.config.shutdown_timeout + STOP_MARGIN
        limit += getattr(self.config, "drain_delay", 0.0)
        deadline = time.monotonic() + limit
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
        for worker in self.workers:
            if worker.process.is_alive():
                log.error("Worker %d did not stop within %.0f s; killing it", worker.pid, limit)
                worker.process.kill()
                worker.process.join(STOP_MARGIN)
            elif worker.process.exitcode not in (0, None):
                log.warning("Worker %d stopped with %s", worker.pid, worker.describe_exit())
