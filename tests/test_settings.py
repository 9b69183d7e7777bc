"""Start-up validation (slyker/settings.py): a bad setting stops the app with one line naming it."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from slyker import create_app
from slyker.settings import (
    DEFAULT_ALLOW_HEADERS,
    DEFAULT_ALLOW_METHODS,
    SettingsError,
    load_settings,
)
from slyker.settings_reader import split_list
from tests.conftest import SETTING_NAMES

SECRET_KEY = "settings-test-secret-key-0123456789abcdef"


def valid(**overrides: Any) -> dict[str, Any]:
    return {"SECRET_KEY": SECRET_KEY, **overrides}


GRACE = "JWT_REFRESH_REUSE_GRACE_SECONDS"


def _bad(name: str, overrides: dict[str, Any], case_id: str) -> Any:
    return pytest.param(name, overrides, id=case_id)


BAD_SETTINGS = [
    _bad("DEBUG", valid(DEBUG="maybe"), "debug-maybe"),
    _bad("DEBUG", valid(DEBUG="2"), "debug-2"),
    _bad("SECRET_KEY", {}, "secret-key-missing"),
    _bad("SECRET_KEY", {"SECRET_KEY": ""}, "secret-key-empty"),
    _bad("SECRET_KEY", {"SECRET_KEY": "   "}, "secret-key-blank"),
    _bad("SECRET_KEY", {"SECRET_KEY": "x" * 31}, "secret-key-short"),
    _bad("SECRET_KEY", {"SECRET_KEY": "x" * 31, "DEBUG": False}, "secret-key-short-debug-false"),
    _bad("CORS_ALLOWED_ORIGINS", valid(CORS_ALLOWED_ORIGINS="https://a.com/api"), "origin-path"),
    _bad("CORS_ALLOWED_ORIGINS", valid(CORS_ALLOWED_ORIGINS="https://a.com//"), "origin-slashes"),
    _bad("CORS_ALLOWED_ORIGINS", valid(CORS_ALLOWED_ORIGINS="https://a.com?x=1"), "origin-query"),
    _bad(
        "CORS_ALLOWED_ORIGINS", valid(CORS_ALLOWED_ORIGINS="https://a.com#top"), "origin-fragment"
    ),
    _bad(
        "CORS_ALLOWED_ORIGINS", valid(CORS_ALLOWED_ORIGINS="https://u:p@a.com"), "origin-userinfo"
    ),
    _bad(
        "CORS_ALLOWED_ORIGINS", valid(CORS_ALLOWED_ORIGINS="slykertech.co.zw"), "origin-no-scheme"
    ),
    _bad("CORS_ALLOWED_ORIGINS", valid(CORS_ALLOWED_ORIGINS="ftp://a.com"), "origin-ftp"),
    _bad("CORS_ALLOWED_ORIGINS", valid(CORS_ALLOWED_ORIGINS="https://a.com:0"), "origin-port-0"),
    _bad(
        "CORS_ALLOWED_ORIGINS",
        valid(CORS_ALLOWED_ORIGINS="https://ok.com,https://bad.com/x"),
        "origin-one-bad-among-good",
    ),
    _bad("CORS_ALLOWED_ORIGINS", valid(CORS_ALLOWED_ORIGINS="*"), "origin-wildcard-credentials"),
    _bad(
        "CORS_ALLOWED_ORIGINS",
        valid(CORS_ALLOWED_ORIGINS="https://a.com,*", CORS_ALLOW_CREDENTIALS=True),
        "origin-wildcard-explicit-credentials",
    ),
    _bad("CORS_ALLOWED_ORIGINS", valid(CORS_ALLOWED_ORIGINS="null"), "origin-null-no-opt-in"),
    _bad(
        "CORS_ALLOWED_ORIGINS",
        valid(CORS_ALLOWED_ORIGINS="https://a.com,NULL", CORS_ALLOW_NULL_ORIGIN=False),
        "origin-null-uppercase-opted-out",
    ),
    _bad(
        "CORS_ALLOWED_ORIGIN_REGEXES",
        valid(CORS_ALLOWED_ORIGIN_REGEXES=r"https://(pr-[0-9]+\.example\.com"),
        "regex-unbalanced",
    ),
    _bad("CORS_ALLOWED_ORIGIN_REGEXES", valid(CORS_ALLOWED_ORIGIN_REGEXES="[a-"), "regex-class"),
    _bad("CSRF_TRUSTED_ORIGINS", valid(CSRF_TRUSTED_ORIGINS="https://a.com/admin"), "csrf-path"),
    _bad("CSRF_TRUSTED_ORIGINS", valid(CSRF_TRUSTED_ORIGINS="admin.a.com"), "csrf-no-scheme"),
    _bad("CSRF_TRUSTED_ORIGINS", valid(CSRF_TRUSTED_ORIGINS="*"), "csrf-wildcard"),
    _bad(
        "CSRF_TRUSTED_ORIGINS",
        valid(CSRF_TRUSTED_ORIGINS="*", CORS_ALLOW_CREDENTIALS=False),
        "csrf-wildcard-without-credentials",
    ),
    _bad(
        "CSRF_TRUSTED_ORIGINS",
        valid(CSRF_TRUSTED_ORIGINS="null", CORS_ALLOW_NULL_ORIGIN=True),
        "csrf-null-even-with-opt-in",
    ),
    _bad("CORS_PREFLIGHT_MAX_AGE", valid(CORS_PREFLIGHT_MAX_AGE="a day"), "max-age-text"),
    _bad("CORS_PREFLIGHT_MAX_AGE", valid(CORS_PREFLIGHT_MAX_AGE="1.5"), "max-age-fraction"),
    _bad("CORS_PREFLIGHT_MAX_AGE", valid(CORS_PREFLIGHT_MAX_AGE="-1"), "max-age-negative"),
    _bad("CORS_ALLOW_CREDENTIALS", valid(CORS_ALLOW_CREDENTIALS="perhaps"), "credentials"),
    _bad("CORS_ALLOW_NULL_ORIGIN", valid(CORS_ALLOW_NULL_ORIGIN="sometimes"), "allow-null"),
    _bad("LOG_LEVEL", valid(LOG_LEVEL="LOUD"), "log-level"),
    _bad("CORS_ALLOW_HEADERS", valid(CORS_ALLOW_HEADERS="X Bad"), "headers-space"),
    _bad("CORS_ALLOW_HEADERS", valid(CORS_ALLOW_HEADERS="Content-Type,X-Bad:"), "headers-colon"),
    _bad("CORS_ALLOW_HEADERS", valid(CORS_ALLOW_HEADERS="*"), "headers-wildcard"),
    _bad("CORS_EXPOSE_HEADERS", valid(CORS_EXPOSE_HEADERS="X(Total)"), "expose-headers"),
    _bad("CORS_ALLOW_METHODS", valid(CORS_ALLOW_METHODS="GET,get"), "methods-lowercase"),
    _bad("MAX_CONTENT_LENGTH", valid(MAX_CONTENT_LENGTH="0"), "max-content-length-zero"),
    _bad("MAX_CONTENT_LENGTH", valid(MAX_CONTENT_LENGTH="1MB"), "max-content-length-text"),
    _bad(GRACE, valid(**{GRACE: -1}), "grace-negative"),
    _bad(GRACE, valid(**{GRACE: 301}), "grace-over-five-minutes"),
    _bad(GRACE, valid(**{GRACE: "300.5"}), "grace-just-over-five-minutes"),
    _bad(GRACE, valid(**{GRACE: "half"}), "grace-text"),
    _bad("SMTP_PORT", valid(SMTP_PORT=70000), "smtp-port-big"),
    _bad("SMTP_PORT", valid(SMTP_PORT="smtp"), "smtp-port-word"),
    _bad("SMTP_STARTTLS", valid(SMTP_STARTTLS="sometimes"), "smtp-starttls"),
    _bad("SMTP_PASSWORD", valid(SMTP_USERNAME="mailer"), "smtp-user-without-password"),
    _bad("SMTP_USERNAME", valid(SMTP_PASSWORD="pw"), "smtp-password-without-user"),
    _bad("SMTP_TIMEOUT", valid(SMTP_TIMEOUT=0), "smtp-timeout-zero"),
    _bad("SMTP_TIMEOUT", valid(SMTP_TIMEOUT="0.05"), "smtp-timeout-too-short"),
    _bad("SMTP_TIMEOUT", valid(SMTP_TIMEOUT="soon"), "smtp-timeout-text"),
    _bad("SMTP_TIMEOUT", valid(SMTP_TIMEOUT="nan"), "smtp-timeout-nan"),
    _bad("MAIL_FROM", valid(MAIL_FROM="nobody"), "mail-from-no-at"),
    _bad("MAIL_FROM", valid(MAIL_FROM="a@example.com\nBcc: x@example.com"), "mail-from-crlf"),
    _bad("PASSWORD_RESET_URL", valid(PASSWORD_RESET_URL="/reset-password"), "reset-url-path"),
    _bad("PASSWORD_RESET_URL", valid(PASSWORD_RESET_URL="javascript:x"), "reset-url-js"),
    _bad("PASSWORD_RESET_URL", valid(PASSWORD_RESET_URL="https://s.example/{uid}"), "reset-uid"),
    _bad("PASSWORD_RESET_TOKEN_LIFETIME", valid(PASSWORD_RESET_TOKEN_LIFETIME=0), "reset-life"),
    _bad("DATABASE_QUERY_TIMEOUT", valid(DATABASE_QUERY_TIMEOUT=0), "db-query-timeout-zero"),
    _bad("DATABASE_CONNECT_TIMEOUT", valid(DATABASE_CONNECT_TIMEOUT="nan"), "db-connect-nan"),
    _bad("DATABASE_POOL_TIMEOUT", valid(DATABASE_POOL_TIMEOUT="soon"), "db-pool-timeout-word"),
    _bad("DATABASE_POOL_MAX", valid(DATABASE_POOL_MAX=0), "db-pool-max-zero"),
    _bad("DATABASE_POOL_MIN", valid(DATABASE_POOL_MIN=5, DATABASE_POOL_MAX=2), "db-pool-min-max"),
    _bad("PASSWORD_HASH_THREADS", valid(PASSWORD_HASH_THREADS=0), "hash-threads-zero"),
    _bad("PASSWORD_HASH_MAX_WAITING", valid(PASSWORD_HASH_MAX_WAITING=-1), "hash-waiting-neg"),
    # issue date + due days must stay a date (an issue date of 2999 plus a million days was
    # an OverflowError on every invoice)
    _bad("INVOICE_DUE_DAYS", valid(INVOICE_DUE_DAYS=3651), "invoice-due-days"),
]


@pytest.mark.parametrize(("name", "overrides"), BAD_SETTINGS)
def test_bad_setting_refuses_to_start(name: str, overrides: dict[str, Any]) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, overrides=overrides)
    error = info.value
    assert isinstance(error, SystemExit)
    assert error.setting == name
    assert isinstance(error.code, str)
    assert name in error.code
    assert error.code.startswith(f"slyker: invalid setting {name}: ")
    assert "\n" not in error.code


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        pytest.param("SECRET_KEY", {"SECRET_KEY": "short"}, id="secret-key"),
        pytest.param("DEBUG", valid(DEBUG="maybe"), id="debug"),
        pytest.param(
            "CORS_ALLOWED_ORIGINS", valid(CORS_ALLOWED_ORIGINS="https://a.com/x"), id="origins"
        ),
        pytest.param("LOG_LEVEL", valid(LOG_LEVEL="LOUD"), id="log-level"),
    ],
)
def test_create_app_refuses_bad_settings(
    tmp_path: Path, name: str, overrides: dict[str, Any]
) -> None:
    with pytest.raises(SettingsError) as info:
        create_app({**overrides, "DATA_DIR": str(tmp_path / "data")})
    assert info.value.setting == name
    assert name in str(info.value.code)


def test_create_app_starts_with_valid_settings(tmp_path: Path) -> None:
    app = create_app(
        valid(CORS_ALLOWED_ORIGINS="https://slykertech.co.zw/", DATA_DIR=str(tmp_path / "data"))
    )
    settings = app.extensions["slyker.settings"]
    assert settings.cors_allowed_origins == ("https://slykertech.co.zw",)
    assert app.config["SECRET_KEY"] == SECRET_KEY


# --- the valid counterparts of the refusals above ----------------------------------------------


def test_secret_key_may_be_missing_when_debug() -> None:
    """Then a random key of this process: never one from the source, which anyone could
    sign an admin token with."""
    settings = load_settings(environ={}, overrides={"DEBUG": "true"})
    again = load_settings(environ={}, overrides={"DEBUG": "true"})
    assert settings.debug is True
    assert settings.secret_key_generated is True
    assert len(settings.secret_key) >= 64
    assert settings.secret_key != again.secret_key
    assert "insecure" not in settings.secret_key
    assert load_settings(environ={}, overrides=valid()).secret_key_generated is False


async def test_a_token_signed_with_the_old_development_key_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack: DEBUG=true, SECRET_KEY empty; an admin token signed with the key that was
    in the source worked."""
    from slyker.models.accounts import Role
    from tests.api import make_user
    from tests.conftest import database_settings, prepare_database

    with caplog.at_level(logging.WARNING, logger="slyker"):
        app = create_app({"DEBUG": True, **database_settings(tmp_path)})
    async with app.test_app():
        await prepare_database(app)
        admin = await make_user(app, "admin@example.com", Role.ADMIN)
        response = await app.test_client().get(
            "/api/accounts/users/me/", headers={"Authorization": f"Bearer {forged(admin.id)}"}
        )
    assert response.status_code == 401
    assert "SECRET_KEY is not set: signing with a random key" in caplog.text


def forged(user_id: int) -> str:
    import jwt

    now = datetime.now(UTC)
    return jwt.encode(
        {
            "sub": str(user_id),
            "iat": now,
            "exp": now + timedelta(minutes=5),
            "jti": "x",
            "type": "access",
            "role": "admin",
        },
        "insecure-development-key-DEBUG-only",
        algorithm="HS256",
    )


def test_short_secret_key_is_accepted_when_debug() -> None:
    settings = load_settings(environ={}, overrides={"DEBUG": True, "SECRET_KEY": "short"})
    assert settings.secret_key == "short"


def test_secret_key_of_32_characters_is_enough() -> None:
    assert load_settings(environ={}, overrides={"SECRET_KEY": "k" * 32}).secret_key == "k" * 32


def test_wildcard_origin_is_accepted_without_credentials() -> None:
    settings = load_settings(
        environ={}, overrides=valid(CORS_ALLOWED_ORIGINS="*", CORS_ALLOW_CREDENTIALS=False)
    )
    assert settings.cors_allow_all_origins is True
    assert settings.cors_allowed_origins == ()


def test_null_origin_is_accepted_with_opt_in() -> None:
    settings = load_settings(
        environ={},
        overrides=valid(CORS_ALLOWED_ORIGINS="https://a.com,null", CORS_ALLOW_NULL_ORIGIN=True),
    )
    assert settings.cors_allow_null_origin is True
    assert settings.cors_allowed_origins == ("https://a.com",)


def test_null_opt_in_without_null_entry_allows_no_null() -> None:
    settings = load_settings(
        environ={},
        overrides=valid(CORS_ALLOWED_ORIGINS="https://a.com", CORS_ALLOW_NULL_ORIGIN=True),
    )
    assert settings.cors_allow_null_origin is False
    assert settings.origin_policy.is_allowed("null") is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("On", True),
        ('"true"', True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("'false'", False),
    ],
)
def test_boolean_spellings(raw: str, expected: bool) -> None:
    settings = load_settings(environ={}, overrides=valid(DEBUG=raw))
    assert settings.debug is expected


@pytest.mark.parametrize("raw", ["", "  ", '""'], ids=["empty", "blank", "quoted-empty"])
def test_empty_boolean_means_default(raw: str) -> None:
    settings = load_settings(environ={}, overrides=valid(DEBUG=raw, CORS_ALLOW_CREDENTIALS=raw))
    assert settings.debug is False
    assert settings.cors_allow_credentials is True


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "ERROR", "critical"])
def test_log_levels(level: str) -> None:
    assert load_settings(environ={}, overrides=valid(LOG_LEVEL=level)).log_level == level.upper()


def test_preflight_max_age_zero_is_allowed() -> None:
    settings = load_settings(environ={}, overrides=valid(CORS_PREFLIGHT_MAX_AGE="0"))
    assert settings.cors_preflight_max_age == 0


# --- list parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://a.com,https://b.com", ["https://a.com", "https://b.com"]),
        ('"https://a.com,https://b.com"', ["https://a.com", "https://b.com"]),
        ("'https://a.com,https://b.com'", ["https://a.com", "https://b.com"]),
        ("'https://a.com' , \"https://b.com\"", ["https://a.com", "https://b.com"]),
        ("  https://a.com  ,\thttps://b.com \n", ["https://a.com", "https://b.com"]),
        ("https://a.com,,", ["https://a.com"]),
        (",https://a.com, ,'',https://b.com,", ["https://a.com", "https://b.com"]),
        ("", []),
        ('""', []),
        ("  ,  ", []),
    ],
    ids=[
        "plain",
        "whole-value-double-quoted",
        "whole-value-single-quoted",
        "per-item-quotes",
        "whitespace",
        "trailing-empty-items",
        "empty-items-everywhere",
        "empty",
        "quoted-empty",
        "only-separators",
    ],
)
def test_split_list(raw: str, expected: list[str]) -> None:
    assert split_list(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"https://a.com,https://b.com"', ("https://a.com", "https://b.com")),
        ("'https://a.com' , \"https://b.com\"", ("https://a.com", "https://b.com")),
        ("https://a.com,,", ("https://a.com",)),
        ("https://A.COM", ("https://a.com",)),
        ("HTTPS://a.com:443", ("https://a.com",)),
        ("http://a.com:80/", ("http://a.com",)),
        ("http://a.com:8080/", ("http://a.com:8080",)),
        ("https://a.com/", ("https://a.com",)),
        (
            "https://a.com,https://A.com:443/,HTTPS://a.com,https://b.com,https://a.com",
            ("https://a.com", "https://b.com"),
        ),
        ("https://b.com,https://a.com", ("https://b.com", "https://a.com")),
        ("http://a.com,https://a.com", ("http://a.com", "https://a.com")),
        (["https://a.com", "https://b.com/"], ("https://a.com", "https://b.com")),
        ("", ()),
    ],
    ids=[
        "whole-value-quoted",
        "per-item-quotes",
        "empty-items-dropped",
        "uppercase-host",
        "default-https-port",
        "default-http-port-and-slash",
        "other-port-kept",
        "trailing-slash",
        "duplicates-removed",
        "order-kept",
        "schemes-distinct",
        "list-override",
        "empty-allows-nothing",
    ],
)
def test_allowed_origins_are_parsed_and_canonicalised(
    raw: str | list[str], expected: tuple[str, ...]
) -> None:
    settings = load_settings(environ={}, overrides=valid(CORS_ALLOWED_ORIGINS=raw))
    assert settings.cors_allowed_origins == expected


def test_csrf_trusted_origins_are_canonicalised() -> None:
    settings = load_settings(
        environ={},
        overrides=valid(CSRF_TRUSTED_ORIGINS="'HTTPS://Admin.A.com:443/', https://admin.a.com,,"),
    )
    assert settings.csrf_trusted_origins == ("https://admin.a.com",)


def test_regex_list() -> None:
    settings = load_settings(
        environ={},
        overrides=valid(CORS_ALLOWED_ORIGIN_REGEXES=r"'https://a\.com' , https://[a-z]+\.b\.com,"),
    )
    patterns = [regex.pattern for regex in settings.cors_allowed_origin_regexes]
    assert patterns == [r"https://a\.com", r"https://[a-z]+\.b\.com"]


def test_header_and_host_lists() -> None:
    settings = load_settings(
        environ={},
        overrides=valid(
            ALLOWED_HOSTS="API.A.com, .B.com",
            CORS_ALLOW_HEADERS="Content-Type, X-Cart-Token,Content-Type",
            CORS_ALLOW_METHODS="GET,POST,GET",
            CORS_EXPOSE_HEADERS="X-Total-Count",
        ),
    )
    assert settings.allowed_hosts == ("api.a.com", ".b.com")
    assert settings.cors_allow_headers == ("Content-Type", "X-Cart-Token")
    assert settings.cors_allow_methods == ("GET", "POST")
    assert settings.cors_expose_headers == ("X-Total-Count", "X-Request-ID", "X-Cart-Token")


def test_always_exposed_headers_are_not_exposed_twice() -> None:
    settings = load_settings(environ={}, overrides=valid(CORS_EXPOSE_HEADERS="x-request-id"))
    assert settings.cors_expose_headers == ("x-request-id", "X-Cart-Token")


# --- defaults -----------------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides=valid(DATA_DIR=str(tmp_path / "data")))
    assert settings.debug is False
    assert settings.allowed_hosts == ()
    assert settings.cors_allowed_origins == ("http://localhost:3000", "http://127.0.0.1:3000")
    assert settings.cors_allowed_origin_regexes == ()
    assert settings.cors_allow_all_origins is False
    assert settings.cors_allow_null_origin is False
    assert settings.cors_allow_credentials is True
    assert settings.cors_allow_methods == DEFAULT_ALLOW_METHODS
    assert settings.cors_allow_headers == DEFAULT_ALLOW_HEADERS
    assert settings.cors_expose_headers == ("X-Request-ID", "X-Cart-Token")
    assert settings.cors_preflight_max_age == 86400
    assert settings.csrf_trusted_origins == ()
    assert settings.redis_url is None
    assert settings.max_content_length == 1024 * 1024
    assert settings.log_level == "INFO"
    assert settings.database_url == f"sqlite://{tmp_path / 'data' / 'slyker.sqlite3'}"
    assert settings.database_url.startswith("sqlite:///")  # absolute DATA_DIR → absolute path


def test_debug_defaults() -> None:
    settings = load_settings(environ={}, overrides={"DEBUG": True})
    assert settings.allowed_hosts == ("localhost", "127.0.0.1", "[::1]")
    assert settings.log_level == "DEBUG"
    assert settings.cors_allowed_origins == ("http://localhost:3000", "http://127.0.0.1:3000")


def test_database_url_defaults_to_data_dir_data() -> None:
    assert load_settings(environ={}, overrides=valid()).database_url == (
        "sqlite://data/slyker.sqlite3"
    )


def test_database_url_wins_over_data_dir(tmp_path: Path) -> None:
    url = "postgres://user:pw@db.internal:5432/slyker"
    settings = load_settings(environ={}, overrides=valid(DATABASE_URL=url, DATA_DIR=str(tmp_path)))
    assert settings.database_url == url


def test_overrides_win_over_environ() -> None:
    settings = load_settings(
        environ={"SECRET_KEY": SECRET_KEY, "LOG_LEVEL": "ERROR", "CORS_ALLOWED_ORIGINS": "x"},
        overrides={"CORS_ALLOWED_ORIGINS": "https://a.com"},
    )
    assert settings.log_level == "ERROR"
    assert settings.cors_allowed_origins == ("https://a.com",)


def test_empty_environ_keeps_the_process_environment_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG", "maybe")
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://leaked.example")
    settings = load_settings(environ={}, overrides=valid())
    assert settings.debug is False
    assert settings.cors_allowed_origins == ("http://localhost:3000", "http://127.0.0.1:3000")
    with pytest.raises(SettingsError) as info:
        load_settings(overrides=valid())  # environ=None reads os.environ
    assert info.value.setting == "DEBUG"


# --- python -m slyker check ---------------------------------------------------------------------


def start_check(directory: Path, **settings: str) -> subprocess.Popen[str]:
    env = {name: value for name, value in os.environ.items() if name not in SETTING_NAMES}
    env.update(settings)
    return subprocess.Popen(
        [sys.executable, "-m", "slyker", "check"],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# The settings of each run of ``python -m slyker check`` below, given its directory.
CHECKS: dict[str, Callable[[Path], dict[str, str]]] = {
    "no-secret-key": lambda directory: {"DATA_DIR": str(directory / "data")},
    "bad-origin": lambda directory: {
        "SECRET_KEY": SECRET_KEY,
        "CORS_ALLOWED_ORIGINS": "https://slykertech.co.zw/shop",
    },
    "valid": lambda directory: {
        "SECRET_KEY": SECRET_KEY,
        "DATA_DIR": str(directory / "data"),
        "CORS_ALLOWED_ORIGINS": "https://slykertech.co.zw,https://www.slykertech.co.zw",
        "CORS_ALLOWED_ORIGIN_REGEXES": r"https://pr-[0-9]+\.preview\.slykertech\.co\.zw",
    },
}


# The runs of CHECKS, started at once (each is about 1 s of start-up, mostly imports, which
# the two cores then share instead of taking in turn), and as soon as the run is known to
# include their tests (start_early, called by tests/conftest.py once collection is done): the
# tests before them run meanwhile, on the core pytest leaves free.
_check_runs: dict[str, subprocess.Popen[str]] = {}


def start_checks() -> dict[str, subprocess.Popen[str]]:
    if not _check_runs:
        root = Path(tempfile.mkdtemp(prefix="slyker-checks-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        for name, settings in CHECKS.items():
            directory = root / name
            directory.mkdir()
            _check_runs[name] = start_check(directory, **settings(directory))
        atexit.register(_reap_checks)  # a run that ends before the fixture (-x, Ctrl-C)
    return _check_runs


def _reap_checks() -> None:
    for process in _check_runs.values():
        process.communicate(timeout=60)


def start_early(items: list[pytest.Item]) -> None:
    if any("checks" in getattr(item, "fixturenames", ()) for item in items):
        start_checks()


@pytest.fixture(scope="module")
def checks() -> dict[str, subprocess.CompletedProcess[str]]:
    """The runs of CHECKS, once they have ended."""
    results = {}
    for name, process in start_checks().items():
        stdout, stderr = process.communicate(timeout=60)
        results[name] = subprocess.CompletedProcess(
            process.args, process.returncode, stdout, stderr
        )
    return results


def test_check_fails_naming_secret_key(checks: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = checks["no-secret-key"]
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == "slyker: invalid setting SECRET_KEY: required when DEBUG is false"


def test_check_fails_naming_a_bad_origin(
    checks: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = checks["bad-origin"]
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("slyker: invalid setting CORS_ALLOWED_ORIGINS: ")


def test_check_passes_with_valid_settings(
    checks: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = checks["valid"]
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == (
        "slyker: settings OK (DEBUG=False, 2 allowed origins, 1 origin regexes)\n"
    )


def test_regex_list_keeps_commas_that_belong_to_a_regex() -> None:
    settings = load_settings(
        environ={},
        overrides={
            "SECRET_KEY": "k" * 40,
            "CORS_ALLOWED_ORIGIN_REGEXES": r'"https://pr-[0-9]{1,5}\.preview\.example\.com", '
            r"https://(a|b)\.example\.com,,https://x\,y\.example\.com",
        },
    )
    assert [regex.pattern for regex in settings.cors_allowed_origin_regexes] == [
        r"https://pr-[0-9]{1,5}\.preview\.example\.com",
        r"https://(a|b)\.example\.com",
        r"https://x\,y\.example\.com",
    ]
    assert settings.origin_policy.is_allowed("https://pr-12345.preview.example.com")
    assert not settings.origin_policy.is_allowed("https://pr-123456.preview.example.com")


# --- Paynow ---------------------------------------------------------------------------------

PAYNOW_KEY = "3E9FED89-60E1-4CE5-AB6E-6B1EB2D4F977"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("PAYNOW_INTEGRATION_ID", "12a", id="id-not-numeric"),
        pytest.param("PAYNOW_INTEGRATION_KEY", "has spaces in it", id="key-spaces"),
        pytest.param("PAYNOW_INTEGRATION_KEY", "short", id="key-short"),
        pytest.param("PAYNOW_RETURN_URL", "slykertech.co.zw/paid", id="return-no-scheme"),
        pytest.param("PAYNOW_RETURN_URL", "javascript:alert(1)", id="return-javascript"),
        pytest.param("PAYNOW_RESULT_URL", "https://u:p@api.example.com/r/", id="result-userinfo"),
        pytest.param("PAYNOW_RESULT_URL", "https://api.example.com/r/#x", id="result-fragment"),
        pytest.param("PAYNOW_RESULT_URL", "https://api.example.com:99999/", id="result-port"),
        pytest.param("PAYNOW_API_URL", "https://www.paynow.co.zw/?x=1", id="api-query"),
        pytest.param("PAYNOW_API_URL", "ftp://www.paynow.co.zw", id="api-ftp"),
        pytest.param("PAYNOW_TIMEOUT", "0", id="timeout-zero"),
        pytest.param("PAYNOW_TIMEOUT", "soon", id="timeout-text"),
        pytest.param("PAYNOW_AUTH_EMAIL", "merchant", id="auth-email"),
    ],
)
def test_bad_paynow_setting_refuses_to_start(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, overrides=valid(**{name: value}))
    assert info.value.setting == name
    assert PAYNOW_KEY.lower() not in str(info.value.code).lower()


def test_paynow_key_is_never_echoed_in_its_error() -> None:
    secret = "not a key but a secret"
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, overrides=valid(PAYNOW_INTEGRATION_KEY=secret))
    assert secret not in str(info.value.code)


def test_paynow_settings() -> None:
    settings = load_settings(environ={}, overrides=valid())
    assert settings.billing.paynow.api_url == "https://www.paynow.co.zw"
    assert (
        settings.billing.paynow.timeout == 20.0
        and settings.billing.paynow.missing == "PAYNOW_INTEGRATION_ID"
    )
    assert settings.billing.crypto_payment_instructions.startswith("Pay in cryptocurrency")
    configured = load_settings(
        environ={},
        overrides=valid(
            PAYNOW_INTEGRATION_ID="20581",
            PAYNOW_INTEGRATION_KEY=PAYNOW_KEY,
            PAYNOW_RETURN_URL="https://slykertech.co.zw/dashboard/invoices?paid=1",
            PAYNOW_RESULT_URL="https://api.slykertech.co.zw/api/billing/paynow/result/",
            PAYNOW_API_URL="http://127.0.0.1:8123/",
            PAYNOW_TIMEOUT="5",
            PAYNOW_AUTH_EMAIL="merchant@slykertech.co.zw",
            CRYPTO_PAYMENT_INSTRUCTIONS="Send USDT.",
        ),
    )
    paynow = configured.billing.paynow
    assert paynow.missing is None
    assert paynow.integration_key == PAYNOW_KEY.lower()  # hashed in lower case, as Paynow does
    assert paynow.api_url == "http://127.0.0.1:8123" and paynow.timeout == 5.0
    assert paynow.return_url == "https://slykertech.co.zw/dashboard/invoices?paid=1"
    assert paynow.auth_email == "merchant@slykertech.co.zw"
    assert configured.billing.crypto_payment_instructions == "Send USDT."
    partial = load_settings(
        environ={}, overrides=valid(PAYNOW_INTEGRATION_ID="1", PAYNOW_INTEGRATION_KEY=PAYNOW_KEY)
    )
    assert partial.billing.paynow.missing == "PAYNOW_RETURN_URL"


def test_account_and_mail_defaults() -> None:
    settings = load_settings({}, valid())
    assert settings.accounts.jwt_refresh_reuse_grace.total_seconds() == 30
    assert settings.accounts.smtp_host is None  # mail goes to the log
    assert (
        settings.accounts.smtp_port,
        settings.accounts.smtp_starttls,
        settings.accounts.smtp_timeout,
    ) == (587, True, 10)
    assert settings.accounts.mail_from == "Slyker Tech <no-reply@slykertech.co.zw>"
    assert settings.accounts.password_reset_token_lifetime.total_seconds() == 3600
    # The reset page of the first front-end origin.
    assert settings.accounts.password_reset_url == (
        "http://localhost:3000/reset-password?uid={uid}&token={token}"
    )
    production = load_settings({}, valid(CORS_ALLOWED_ORIGINS="https://slykertech.co.zw"))
    assert production.accounts.password_reset_url.startswith(
        "https://slykertech.co.zw/reset-password?"
    )
    assert not load_settings({}, valid(**{GRACE: 0})).accounts.jwt_refresh_reuse_grace  # disabled


def test_the_grace_window_and_smtp_timeout_take_fractions_of_a_second() -> None:
    """Seconds with fractions (the tests wait on sub-second windows, not on whole seconds)."""
    settings = load_settings({}, valid(**{GRACE: "0.3", "SMTP_TIMEOUT": "0.25"}))
    assert settings.accounts.jwt_refresh_reuse_grace == timedelta(seconds=0.3)
    assert settings.accounts.smtp_timeout == 0.25


def test_database_timeouts_reach_the_postgres_client() -> None:
    """DATABASE_* settings become asyncpg's connect/command timeouts, the server's
    statement_timeout, the pool's size and its wait (options in the URL win)."""
    from slyker.database import serving_config

    settings = load_settings(
        environ={},
        overrides=valid(
            DATABASE_URL="postgresql://u@db:5432/shop?maxsize=3",
            DATABASE_CONNECT_TIMEOUT="1.5",
            DATABASE_QUERY_TIMEOUT="4",
            DATABASE_POOL_TIMEOUT="2",
            DATABASE_POOL_MIN="0",
        ),
    )
    connection = serving_config(settings.database_url, settings)["connections"]["default"]
    assert connection["engine"] == "slyker.postgres"
    credentials = connection["credentials"]
    assert credentials["timeout"] == 1.5 and credentials["command_timeout"] == 4.0
    assert credentials["server_settings"] == {"statement_timeout": "4000"}
    assert (credentials["minsize"], credentials["maxsize"]) == (0, "3")
    assert credentials["pool_timeout"] == 2.0


def test_the_chat_intervals_take_fractions_of_seconds() -> None:
    defaults = load_settings(environ={}, overrides=valid())
    assert (
        defaults.chat.ping_interval,
        defaults.chat.typing_interval,
        defaults.chat.auth_recheck_seconds,
    ) == (25.0, 1.0, 30.0)
    short = load_settings(
        environ={},
        overrides={
            **valid(),
            "CHAT_PING_INTERVAL": "0.5",
            "CHAT_TYPING_INTERVAL": "0.25",
            "CHAT_AUTH_RECHECK_SECONDS": "1.5",
        },
    )
    assert (
        short.chat.ping_interval,
        short.chat.typing_interval,
        short.chat.auth_recheck_seconds,
    ) == (0.5, 0.25, 1.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHAT_PING_INTERVAL", "0"),
        ("CHAT_PING_INTERVAL", "0.05"),
        ("CHAT_PING_INTERVAL", "nan"),
        ("CHAT_TYPING_INTERVAL", "0.01"),
        ("CHAT_TYPING_INTERVAL", "61"),
        ("CHAT_AUTH_RECHECK_SECONDS", "-1"),
        ("CHAT_AUTH_RECHECK_SECONDS", "soon"),
    ],
)
def test_a_bad_chat_interval_is_refused_naming_it(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, overrides={**valid(), name: value})
    assert info.value.setting == name
