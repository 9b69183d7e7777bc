"""slyker.access_log: the lazy atoms give the very line Hypercorn's own atoms give."""

from __future__ import annotations

import asyncio
import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypercorn.config import Config
from hypercorn.logging import AccessLogAtoms, Logger

from slyker.access_log import (
    BUFFER_LIMIT,
    AccessLogger,
    BufferedAccessHandler,
    LazyAccessLogAtoms,
    compile_access_format,
    flush_access_log,
)
from slyker.serve import EXIT_FATAL, parse_config
from slyker.serve import main as serve_main
from slyker.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_FORMAT = tomllib.loads((ROOT / "hypercorn.toml").read_text())["access_log_format"]


def http_scope(**extra: Any) -> dict[str, Any]:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/api/carts/current/",
        "query_string": b"page=2",
        "headers": [
            (b"Host", b"api.example"),
            (b"User-Agent", b"curl/8 \xe9"),
            (b"referer", b"https://shop.example/"),
            (b"x-twice", b"first"),
            (b"X-Twice", b"second"),
        ],
        "client": ("203.0.113.9", 50123),
    }
    scope.update(extra)
    return scope


RESPONSE = {
    "status": 201,
    "headers": [
        (b"content-length", b"17"),
        (b"X-Request-ID", b"abc123"),
        (b"content-type", b"application/json"),
    ],
}
FORMATS = [
    PRODUCTION_FORMAT,
    "%(h)s %(l)s %(r)s %(R)s %(s)s %(st)s %(S)s %(m)s %(U)s %(Uq)s %(q)s %(H)s %(b)s %(B)s",
    "%(f)s %(a)s %(T)s %(D)s %(L)s %(p)s %({X-TWICE}i)s %({missing}i)s %({Content-Type}o)s",
    "%({home}e)s %({nope}e)s %(nonsense)s",
]
CASES = [
    pytest.param(http_scope(), RESPONSE, id="http"),
    pytest.param(http_scope(), None, id="no-response"),
    pytest.param(http_scope(client=None), RESPONSE, id="no-client"),
    pytest.param(http_scope(client=("unix-socket",)), RESPONSE, id="one-part-client"),
    pytest.param(
        {**http_scope(type="websocket"), "http_version": "2"}, {"status": 101}, id="websocket"
    ),
    pytest.param(
        {k: v for k, v in http_scope(type="websocket").items() if k != "http_version"},
        None,
        id="websocket-without-version",
    ),
]


@pytest.mark.parametrize("log_format", FORMATS)
@pytest.mark.parametrize(("scope", "response"), CASES)
def test_lazy_atoms_format_like_hypercorns(
    log_format: str, scope: dict[str, Any], response: dict[str, Any] | None
) -> None:
    if "%(t)s" in log_format:  # the clock: compared in the other cases
        pytest.skip("time atom")
    expected = log_format % AccessLogAtoms(scope, response, 0.0123456)  # type: ignore[arg-type]
    assert log_format % LazyAccessLogAtoms(scope, response, 0.0123456) == expected


COMPILED_FORMATS = [
    PRODUCTION_FORMAT,
    "%(h)s %(r)s %(s)s %(b)s %(B)s %(D)s %(a)s 100%% %({X-TWICE}i)s %({missing}i)s",
    "%({Content-Type}o)s %({X-Request-Id}o)s %({missing}o)s %%(h)s plain",
    "",
]


@pytest.mark.parametrize("log_format", COMPILED_FORMATS)
@pytest.mark.parametrize(("scope", "response"), CASES)
def test_the_compiled_format_gives_hypercorns_line(
    log_format: str, scope: dict[str, Any], response: dict[str, Any] | None
) -> None:
    render = compile_access_format(log_format)
    assert render is not None
    expected = log_format % AccessLogAtoms(scope, response, 0.0123456)  # type: ignore[arg-type]
    assert render(scope, response, 0.0123456) == expected


@pytest.mark.parametrize(
    "log_format",
    [*FORMATS[1:], "%(h)d", "%(s)r", "%(h)-10s", "100%", "%({home}e)s", "%({x}i"],
)
def test_formats_with_other_atoms_or_conversions_are_not_compiled(log_format: str) -> None:
    assert compile_access_format(log_format) is None


def test_the_logger_compiles_its_format_unless_a_subclass_makes_the_atoms() -> None:
    config = Config()
    config.access_log_format = PRODUCTION_FORMAT
    assert AccessLogger(config).render is not None
    config.access_log_format = "%(t)s"
    assert AccessLogger(config).render is None

    class OwnAtoms(AccessLogger):
        def atoms(self, request: Any, response: Any, request_time: float) -> Any:
            return {"h": "mine"}

    config.access_log_format = PRODUCTION_FORMAT
    assert OwnAtoms(config).render is None


def test_the_log_record_gets_the_atoms_as_its_mapping() -> None:
    record = logging.LogRecord(
        "hypercorn.access",
        logging.INFO,
        __file__,
        1,
        PRODUCTION_FORMAT,
        (LazyAccessLogAtoms(http_scope(), RESPONSE, 0.002),),
        None,
    )
    line = record.getMessage()
    assert '"POST /api/carts/current/ 1.1" 201 17 2000us rid=abc123' in line


def test_serve_installs_the_lazy_logger() -> None:
    config = parse_config(["--config", str(ROOT / "hypercorn.toml")])
    assert config.logger_class is AccessLogger


async def test_the_access_line_goes_through_the_access_loggers_handlers(tmp_path: Path) -> None:
    config = parse_config(["--config", str(ROOT / "hypercorn.toml")])
    config.accesslog = str(tmp_path / "access.log")
    logger = config.log
    assert isinstance(logger, AccessLogger)
    await logger.access(http_scope(), RESPONSE, 0.002)
    assert logger.access_logger is not None
    for handler in logger.access_logger.handlers:
        handler.flush()
    line = (tmp_path / "access.log").read_text()
    assert '"POST /api/carts/current/ 1.1" 201 17 2000us rid=abc123 "curl/8 \xe9"' in line
    assert "[INFO]" in line
    level = logger.access_logger.level
    logger.access_logger.setLevel(logging.WARNING)  # a level above INFO: no line
    try:
        await logger.access(http_scope(), RESPONSE, 0.002)
    finally:
        logger.access_logger.setLevel(level)
    assert (tmp_path / "access.log").read_text() == line


# --- the buffered access log (ACCESS_LOG_FLUSH_SECONDS) -----------------------------------------


def serve_config(tmp_path: Path, flush_seconds: str, name: str = "access.log") -> Any:
    config = parse_config(
        ["--config", str(ROOT / "hypercorn.toml")], {"ACCESS_LOG_FLUSH_SECONDS": flush_seconds}
    )
    config.accesslog = str(tmp_path / name)
    return config


def test_the_flush_delay_is_read_and_validated() -> None:
    toml = ["--config", str(ROOT / "hypercorn.toml")]
    assert parse_config(toml, {}).access_log_flush_seconds == 1.0
    assert parse_config(toml, {"ACCESS_LOG_FLUSH_SECONDS": "0"}).access_log_flush_seconds == 0.0
    for bad in ("-1", "61", "soon", "nan"):
        with pytest.raises(SettingsError, match="ACCESS_LOG_FLUSH_SECONDS"):
            parse_config(toml, {"ACCESS_LOG_FLUSH_SECONDS": bad})


def test_the_direct_line_is_the_line_hypercorns_handler_writes(tmp_path: Path) -> None:
    """Same format, same clock: the line without a LogRecord is the one Hypercorn's own
    logger and formatter write for the same request."""
    config = serve_config(tmp_path, "0", "slyker.log")
    logger = config.log
    assert isinstance(logger, AccessLogger) and logger.buffered is not None
    assert logger.buffered.formats_like_hypercorn
    hypercorns = Logger(serve_config(tmp_path, "0", "hypercorn.log"))
    assert hypercorns.access_logger is not None
    formatter = hypercorns.access_logger.handlers[0].formatter
    assert formatter is not None
    created = 1_764_500_000.25
    record = logging.LogRecord(
        "hypercorn.access",
        logging.INFO,
        "",
        0,
        PRODUCTION_FORMAT,
        (AccessLogAtoms(http_scope(), RESPONSE, 0.002),),  # type: ignore[arg-type]
        None,
    )
    record.created = created
    message = PRODUCTION_FORMAT % LazyAccessLogAtoms(http_scope(), RESPONSE, 0.002)
    assert logger.buffered.line(message, created) == formatter.format(record)


async def test_lines_wait_for_the_timer_then_are_written(tmp_path: Path) -> None:
    config = serve_config(tmp_path, "0.2")
    logger = config.log
    path = tmp_path / "access.log"
    for _ in range(3):
        await logger.access(http_scope(), RESPONSE, 0.002)
    assert path.read_text() == ""  # buffered: nothing written yet
    for _ in range(200):  # the timer writes them without more requests
        if path.read_text().count("rid=abc123") == 3:
            break
        await asyncio.sleep(0.05)
    lines = path.read_text().splitlines()
    assert len(lines) == 3, lines
    assert all('"POST /api/carts/current/ 1.1" 201 17 2000us rid=abc123' in x for x in lines)
    assert all("[INFO]" in line for line in lines)


async def test_zero_writes_each_line_at_once(tmp_path: Path) -> None:
    config = serve_config(tmp_path, "0")
    await config.log.access(http_scope(), RESPONSE, 0.002)
    assert "rid=abc123" in (tmp_path / "access.log").read_text()


async def test_a_full_buffer_and_a_flush_write_at_once(tmp_path: Path) -> None:
    config = serve_config(tmp_path, "60")
    logger = config.log
    path = tmp_path / "access.log"
    await logger.access(http_scope(), RESPONSE, 0.002)
    assert path.read_text() == ""
    flush_access_log()
    assert path.read_text().count("rid=abc123") == 1
    line_size = len(path.read_text())
    for _ in range(BUFFER_LIMIT // line_size + 1):
        await logger.access(http_scope(), RESPONSE, 0.002)
    assert path.read_text().count("rid=abc123") > 1  # the limit was reached: written
    logging.getLogger("hypercorn.access").handlers[0].close()  # what logging.shutdown does
    assert path.read_text().count("rid=abc123") == BUFFER_LIMIT // line_size + 2


async def test_another_formatter_or_a_filter_goes_through_records(tmp_path: Path) -> None:
    config = serve_config(tmp_path, "0")
    logger = config.log
    assert logger.buffered is not None and logger.access_logger is not None
    logger.buffered.inner.setFormatter(logging.Formatter("custom %(message)s"))
    other = BufferedAccessHandler(logger.buffered.inner, 0)
    assert not other.formats_like_hypercorn
    logger.access_logger.handlers = [other]
    await logger.access(http_scope(), RESPONSE, 0.002)
    assert (tmp_path / "access.log").read_text().startswith("custom ")
    logger.access_logger.addFilter(lambda record: False)
    try:
        await logger.access(http_scope(), RESPONSE, 0.002)
    finally:
        logger.access_logger.filters.clear()
    assert (tmp_path / "access.log").read_text().count("custom ") == 1


def test_serve_refuses_a_bad_flush_delay_before_any_worker_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACCESS_LOG_FLUSH_SECONDS", "-2")
    assert serve_main(["--config", str(ROOT / "hypercorn.toml")]) == EXIT_FATAL
    assert "ACCESS_LOG_FLUSH_SECONDS" in capsys.readouterr().err


def test_the_app_refuses_a_bad_flush_delay_too() -> None:
    with pytest.raises(SettingsError, match="ACCESS_LOG_FLUSH_SECONDS"):
        load_settings({"SECRET_KEY": "k" * 40, "ACCESS_LOG_FLUSH_SECONDS": "90"})
    assert load_settings({"SECRET_KEY": "k" * 40}).access_log_flush_seconds == 1.0
