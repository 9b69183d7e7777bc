"""``python -m slyker check-cors``: check a deployed stack's CORS the way a browser sees it.

The checks people used to run by hand with curl, against the public API URL (so through every
proxy in front of slyker), reading every raw header line so that a header added twice counts
twice::

    python -m slyker check-cors --api https://api.slykertech.co.zw \\
        --origin https://slykertech.co.zw [--foreign-origin https://evil.example] \\
        [--path /api/token/ ...] [--ws-path /ws/chat/sales/] [--timeout 5] [--insecure] [--http2]

It prints one row per check (check, request, PASS/FAIL, reason) and exits 0 when every check
passes, 1 when one fails, 2 on a usage error. The checks:

``preflight``
    ``OPTIONS`` of each ``--path`` (default :data:`DEFAULT_PATHS`) from the front-end origin,
    asking for ``POST`` with ``Authorization`` and ``Content-Type``: a 2xx, the origin echoed,
    and both the method and the headers allowed.
``normal-response``
    ``GET /health/`` from the front-end origin: a 2xx carrying the origin.
``error-response``
    ``GET`` of a path that does not exist: a 404 that still carries the origin, so the page can
    read the error instead of seeing a CORS failure.
``duplicate-acao``
    On every response: at most one ``Access-Control-Allow-Origin`` line holding one origin
    (a proxy adding its own copy was the old outage: browsers refuse two values).
``credentials``
    On every response to the front-end origin: ``Access-Control-Allow-Credentials: true``, once.
``vary-origin``
    On every ``GET`` response, for both origins: ``Vary`` names ``Origin`` (else a cache may
    serve one origin's answer to another).
``foreign-origin``
    Every request repeated from ``--foreign-origin``: no ``Access-Control-*`` header at all.
``websocket-allowed`` / ``websocket-foreign``
    WebSocket handshakes on ``--ws-path`` (default ``/ws/chat/sales/``): the front-end origin
    is upgraded (101), the foreign one refused (403).

Needs ``httpx`` (with ``h2`` for ``--http2``) and ``websockets``, nothing from the app: it can
run from any machine.
"""

from __future__ import annotations

import argparse
import secrets
import ssl
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit

try:
    import httpx
    import websockets.exceptions
    import websockets.sync.client
    from websockets.typing import Origin
except ImportError as error:  # pragma: no cover - depends on the installation
    _MISSING: ImportError | None = error
else:
    _MISSING = None

PROG = "python -m slyker check-cors"
DEFAULT_PATHS = ("/api/billing/carts/current/", "/api/token/", "/health/")
NORMAL_PATH = "/health/"
DEFAULT_WS_PATH = "/ws/chat/sales/"
DEFAULT_FOREIGN_ORIGIN = "https://evil.example"
DEFAULT_TIMEOUT = 5.0
PREFLIGHT_METHOD = "POST"
PREFLIGHT_HEADERS = ("authorization", "content-type")
USER_AGENT = "slyker-check-cors/1"
REASON_LIMIT = 200

ALLOW_ORIGIN = "access-control-allow-origin"
ALLOW_CREDENTIALS = "access-control-allow-credentials"
ALLOW_METHODS = "access-control-allow-methods"
ALLOW_HEADERS = "access-control-allow-headers"
CORS_PREFIX = "access-control-"

PASS = "PASS"
FAIL = "FAIL"


class UsageError(Exception):
    """A bad command line: reported on stderr, exit status 2."""


@dataclass(frozen=True)
class Result:
    check: str
    request: str  # "GET /health/", plus " (foreign)" for a request from the foreign origin
    passed: bool
    reason: str

    @property
    def status(self) -> str:
        return PASS if self.passed else FAIL


@dataclass(frozen=True)
class Options:
    api: str  # scheme://host[:port][/prefix], no trailing slash
    origin: str
    foreign_origin: str
    paths: tuple[str, ...]
    ws_path: str | None
    timeout: float
    insecure: bool
    http2: bool


@dataclass(frozen=True)
class Exchange:
    """One request's outcome: the status and every raw header line, or why it failed."""

    label: str
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    error: str | None = None

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name]


# --- the command line ----------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Check the CORS headers and WebSocket origin checks of a deployed API "
        "as a browser on --origin would see them. Exit status: 0 all checks pass, 1 a check "
        "failed, 2 usage error.",
    )
    parser.add_argument("--api", required=True, help="the API base URL, e.g. https://api.example")
    parser.add_argument("--origin", required=True, help="the front-end origin that must work")
    parser.add_argument(
        "--foreign-origin",
        default=DEFAULT_FOREIGN_ORIGIN,
        help=f"an origin that must get no CORS headers (default {DEFAULT_FOREIGN_ORIGIN})",
    )
    parser.add_argument(
        "--path",
        action="append",
        dest="paths",
        metavar="PATH",
        help="an API path to preflight; repeatable (default: " + ", ".join(DEFAULT_PATHS) + ")",
    )
    parser.add_argument(
        "--ws-path",
        default=DEFAULT_WS_PATH,
        help=f"the WebSocket path to handshake with (default {DEFAULT_WS_PATH})",
    )
    parser.add_argument("--no-websocket", action="store_true", help="skip the WebSocket handshakes")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds per request (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")
    parser.add_argument("--http2", action="store_true", help="offer HTTP/2 (needs h2)")
    return parser


def _origin(value: str, option: str) -> str:
    """``scheme://host[:port]`` as a browser sends it (one trailing slash forgiven)."""
    value = value.strip()
    if value.endswith("/") and value.count("/") == 3:
        value = value[:-1]
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or not port_ok
    ):
        raise UsageError(f"{option}: {value!r} is not an origin (scheme://host[:port])")
    return value


def _api(value: str) -> str:
    parts = urlsplit(value.strip())
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or not port_ok
    ):
        raise UsageError(f"--api: {value!r} is not an http(s) URL (https://host[:port][/prefix])")
    return value.strip().rstrip("/")


def _path(value: str, option: str) -> str:
    if not value.startswith("/") or any(char.isspace() for char in value):
        raise UsageError(f"{option}: {value!r} must be a path starting with /")
    return value


def parse_options(argv: Sequence[str]) -> Options:
    args = _parser().parse_args(list(argv))
    if not 0 < args.timeout <= 300:
        raise UsageError("--timeout: must be more than 0 and at most 300 seconds")
    origin = _origin(args.origin, "--origin")
    foreign = _origin(args.foreign_origin, "--foreign-origin")
    if foreign.lower() == origin.lower():
        raise UsageError("--foreign-origin must differ from --origin")
    if args.http2:
        try:
            import h2  # noqa: F401
        except ImportError:
            raise UsageError("--http2 needs the h2 package: pip install 'httpx[http2]'") from None
    return Options(
        api=_api(args.api),
        origin=origin,
        foreign_origin=foreign,
        paths=tuple(_path(path, "--path") for path in (args.paths or DEFAULT_PATHS)),
        ws_path=None if args.no_websocket else _path(args.ws_path, "--ws-path"),
        timeout=args.timeout,
        insecure=args.insecure,
        http2=args.http2,
    )


# --- requests ------------------------------------------------------------------------------


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 3] + "..."


def _describe_error(error: BaseException) -> str:
    return _short(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)


def _request(
    client: httpx.Client, options: Options, method: str, path: str, origin: str, label: str
) -> Exchange:
    headers = {"Origin": origin, "User-Agent": USER_AGENT, "Accept": "application/json"}
    if method == "OPTIONS":
        headers["Access-Control-Request-Method"] = PREFLIGHT_METHOD
        headers["Access-Control-Request-Headers"] = ", ".join(PREFLIGHT_HEADERS)
    try:
        response = client.request(method, options.api + path, headers=headers)
    except httpx.HTTPError as error:
        return Exchange(label, error=_describe_error(error))
    return Exchange(label, response.status_code, tuple(response.headers.multi_items()))


def _items(values: Iterable[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


# --- checks on one response ----------------------------------------------------------------


def _allow_origin_problem(exchange: Exchange, origin: str) -> str | None:
    values = exchange.values(ALLOW_ORIGIN)
    if not values:
        return "no Access-Control-Allow-Origin"
    if values != [origin]:
        return f"Access-Control-Allow-Origin is {values!r}, not {origin!r}"
    return None


def check_duplicate_acao(exchange: Exchange) -> Result:
    values = exchange.values(ALLOW_ORIGIN)
    if len(values) > 1:
        reason = f"{len(values)} Access-Control-Allow-Origin headers: {values!r}"
        return Result("duplicate-acao", exchange.label, False, _short(reason))
    if values and "," in values[0]:
        reason = f"Access-Control-Allow-Origin holds several values: {values[0]!r}"
        return Result("duplicate-acao", exchange.label, False, _short(reason))
    found = "one Access-Control-Allow-Origin" if values else "no Access-Control-Allow-Origin"
    return Result("duplicate-acao", exchange.label, True, found)


def check_credentials(exchange: Exchange) -> Result:
    values = exchange.values(ALLOW_CREDENTIALS)
    if values == ["true"]:
        return Result("credentials", exchange.label, True, "Access-Control-Allow-Credentials: true")
    reason = (
        "no Access-Control-Allow-Credentials"
        if not values
        else f"Access-Control-Allow-Credentials is {values!r}, not ['true']"
    )
    return Result("credentials", exchange.label, False, _short(reason))


def check_vary(exchange: Exchange) -> Result:
    items = _items(exchange.values("vary"))
    if {"origin", "*"} & {item.lower() for item in items}:
        return Result("vary-origin", exchange.label, True, "Vary: " + ", ".join(items))
    reason = "no Vary header" if not items else f"Vary is {', '.join(items)!r}, without Origin"
    return Result("vary-origin", exchange.label, False, _short(reason))


def check_preflight(exchange: Exchange, origin: str) -> Result:
    problems = []
    assert exchange.status is not None
    if not 200 <= exchange.status < 300:
        problems.append(f"status {exchange.status}, not 2xx")
    problem = _allow_origin_problem(exchange, origin)
    if problem:
        problems.append(problem)
    methods = _items(exchange.values(ALLOW_METHODS))
    if PREFLIGHT_METHOD not in methods:
        problems.append(f"Access-Control-Allow-Methods {methods!r} lacks {PREFLIGHT_METHOD}")
    allowed = {item.lower() for item in _items(exchange.values(ALLOW_HEADERS))}
    missing = [name for name in PREFLIGHT_HEADERS if name not in allowed]
    if missing:
        problems.append(f"Access-Control-Allow-Headers lacks {', '.join(missing)}")
    if problems:
        return Result("preflight", exchange.label, False, _short("; ".join(problems)))
    return Result("preflight", exchange.label, True, f"{exchange.status}, origin allowed")


def check_allowed_response(
    exchange: Exchange, origin: str, check: str, expected: range, expected_text: str
) -> Result:
    problems = []
    assert exchange.status is not None
    if exchange.status not in expected:
        problems.append(f"status {exchange.status}, not {expected_text}")
    problem = _allow_origin_problem(exchange, origin)
    if problem:
        problems.append(problem)
    if problems:
        return Result(check, exchange.label, False, _short("; ".join(problems)))
    return Result(check, exchange.label, True, f"{exchange.status}, readable by the origin")


def check_foreign(exchange: Exchange) -> Result:
    found = [
        f"{key}: {value}" for key, value in exchange.headers if key.lower().startswith(CORS_PREFIX)
    ]
    if found:
        return Result("foreign-origin", exchange.label, False, _short("got " + "; ".join(found)))
    return Result("foreign-origin", exchange.label, True, f"{exchange.status}, no CORS headers")


def _failed(exchange: Exchange, checks: Iterable[str]) -> list[Result]:
    reason = f"request failed: {exchange.error}"
    return [Result(check, exchange.label, False, reason) for check in checks]


# --- the HTTP checks -----------------------------------------------------------------------


def http_checks(options: Options) -> list[Result]:
    results: list[Result] = []
    not_found = f"/api/cors-check-{secrets.token_hex(6)}/"
    with httpx.Client(
        verify=not options.insecure,
        timeout=options.timeout,
        follow_redirects=False,
        http2=options.http2,
    ) as client:
        for path in options.paths:
            label = f"OPTIONS {path}"
            exchange = _request(client, options, "OPTIONS", path, options.origin, label)
            if exchange.error:
                results += _failed(exchange, ("preflight", "duplicate-acao", "credentials"))
            else:
                results += [
                    check_preflight(exchange, options.origin),
                    check_duplicate_acao(exchange),
                    check_credentials(exchange),
                ]
        for check, path, expected, expected_text in (
            ("normal-response", NORMAL_PATH, range(200, 300), "2xx"),
            ("error-response", not_found, range(404, 405), "404"),
        ):
            exchange = _request(client, options, "GET", path, options.origin, f"GET {path}")
            if exchange.error:
                results += _failed(
                    exchange, (check, "duplicate-acao", "credentials", "vary-origin")
                )
            else:
                results += [
                    check_allowed_response(
                        exchange, options.origin, check, expected, expected_text
                    ),
                    check_duplicate_acao(exchange),
                    check_credentials(exchange),
                    check_vary(exchange),
                ]
        foreign_requests = [("OPTIONS", path) for path in options.paths]
        foreign_requests += [("GET", NORMAL_PATH), ("GET", not_found)]
        for method, path in foreign_requests:
            label = f"{method} {path} (foreign)"
            exchange = _request(client, options, method, path, options.foreign_origin, label)
            checks = ["foreign-origin", "duplicate-acao"] + (
                ["vary-origin"] if method == "GET" else []
            )
            if exchange.error:
                results += _failed(exchange, checks)
                continue
            results += [check_foreign(exchange), check_duplicate_acao(exchange)]
            if method == "GET":
                results.append(check_vary(exchange))
    return results


# --- the WebSocket checks ------------------------------------------------------------------


def _ws_url(api: str, path: str) -> str:
    scheme, rest = api.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"


def _ws_ssl(options: Options, url: str) -> ssl.SSLContext | None:
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context()
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def handshake(options: Options, origin: str) -> tuple[int | None, str]:
    """The handshake's HTTP status (101 once upgraded), or None and why it failed."""
    assert options.ws_path is not None
    url = _ws_url(options.api, options.ws_path)
    try:
        with websockets.sync.client.connect(
            url,
            origin=Origin(origin),
            ssl=_ws_ssl(options, url),
            open_timeout=options.timeout,
            close_timeout=options.timeout,
            user_agent_header=USER_AGENT,
            compression=None,
        ) as connection:
            status = connection.response.status_code if connection.response else 101
        return status, "upgraded"
    except websockets.exceptions.InvalidStatus as error:
        return error.response.status_code, f"refused with {error.response.status_code}"
    except (websockets.exceptions.WebSocketException, OSError, TimeoutError) as error:
        return None, f"handshake failed: {_describe_error(error)}"


def websocket_checks(options: Options) -> list[Result]:
    assert options.ws_path is not None
    path = options.ws_path
    results = []
    status, how = handshake(options, options.origin)
    results.append(
        Result("websocket-allowed", f"WS {path}", status == 101, how if status != 101 else "101")
    )
    status, how = handshake(options, options.foreign_origin)
    if status == 403:
        results.append(Result("websocket-foreign", f"WS {path} (foreign)", True, "403"))
    else:
        reason = "upgraded (101): any page can open it" if status == 101 else how
        if status not in (None, 101):
            reason = f"{how}, not 403"
        results.append(Result("websocket-foreign", f"WS {path} (foreign)", False, reason))
    return results


# --- output --------------------------------------------------------------------------------


def run_checks(options: Options) -> list[Result]:
    results = http_checks(options)
    if options.ws_path is not None:
        results += websocket_checks(options)
    return results


def render(results: Sequence[Result], options: Options) -> str:
    header = ("CHECK", "REQUEST", "RESULT", "REASON")
    rows = [header] + [(r.check, r.request, r.status, r.reason) for r in results]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [
        f"CORS check of {options.api} for origin {options.origin} "
        f"(foreign: {options.foreign_origin})",
        "",
    ]
    for row in rows:
        cells = [row[column].ljust(widths[column]) for column in range(3)]
        lines.append("  ".join([*cells, row[3]]).rstrip())
    failed = sum(1 for result in results if not result.passed)
    lines += ["", f"{len(results)} checks, {failed} failed"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Run every check; 0 when all pass, 1 when one fails, 2 on a usage error."""
    out = stdout or sys.stdout
    if _MISSING is not None:
        print(
            f"{PROG}: needs httpx and websockets ({_MISSING}); "
            "pip install 'httpx[http2]' websockets",
            file=sys.stderr,
        )
        return 2
    try:
        options = parse_options(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(_parser().format_usage().rstrip(), file=sys.stderr)
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    results = run_checks(options)
    print(render(results, options), file=out)
    return 0 if all(result.passed for result in results) else 1


def console_main() -> int:
    """The ``[project.scripts]`` entry point."""
    return main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
