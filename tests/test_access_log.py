"""slyker.access_log: the lazy atoms give the very line Hypercorn's own atoms give."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypercorn.logging import AccessLogAtoms

from slyker.access_log import AccessLogger, LazyAccessLogAtoms
from slyker.serve import parse_config

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
