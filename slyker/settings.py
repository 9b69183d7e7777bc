"""Settings: read from the environment once, validated once, at startup.

:class:`Settings` holds the core's settings (debug, keys, hosts, CORS, CSRF, database, Redis,
password hashing, logging, proxy hops, API docs) and one section per area, defined with its
area: ``settings.accounts`` (:mod:`slyker.areas.accounts_settings`), ``settings.billing``
(:mod:`slyker.areas.billing_settings`), ``settings.chat`` (:mod:`slyker.areas.chat_settings`).
Every section is read and validated at start-up, whichever areas the app installs: one
environment is valid or not whatever app is built from it, and the core (identity reads the
token lifetimes) can rely on every section being there.

Every problem raises :class:`SettingsError` whose message names the setting, and the app
refuses to start. Nothing else in slyker reads ``os.environ``; every section reads it through
the one :class:`~slyker.settings_reader.Reader`.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quart import current_app

from slyker.areas.accounts_settings import AccountsSettings, read_accounts_settings
from slyker.areas.billing_settings import BillingSettings, read_billing_settings
from slyker.areas.chat_settings import ChatSettings, read_chat_settings
from slyker.origins import NULL_ORIGIN, WILDCARD, InvalidOrigin, OriginPolicy, canonicalise_entry
from slyker.settings_reader import Reader, SettingsError, merged_environ, split_regex_list

DEV_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000")
DEV_HOSTS = ("localhost", "127.0.0.1", "[::1]")
DEFAULT_ALLOW_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Headers the front-end (or a proxy / tool in between) may send on a cross-origin call.
DEFAULT_ALLOW_HEADERS = (
    "Accept",
    "Accept-Language",
    "Authorization",
    "Content-Language",
    "Content-Type",
    "X-CSRFToken",
    "X-Requested-With",
    "X-Request-ID",
    "X-Cart-Token",
)
ALWAYS_EXPOSED_HEADERS = ("X-Request-ID", "X-Cart-Token")  # the storefront reads both
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_METHOD_RE = re.compile(r"[A-Z]+")


@dataclass(frozen=True)
class Settings:
    debug: bool
    secret_key: str
    secret_key_generated: bool  # DEBUG without SECRET_KEY: random, for this process only
    allowed_hosts: tuple[str, ...]
    cors_allowed_origins: tuple[str, ...]
    cors_allowed_origin_regexes: tuple[re.Pattern[str], ...]
    cors_allow_all_origins: bool
    cors_allow_null_origin: bool
    cors_allow_credentials: bool
    cors_allow_methods: tuple[str, ...]
    cors_allow_headers: tuple[str, ...]
    cors_expose_headers: tuple[str, ...]
    cors_preflight_max_age: int
    csrf_trusted_origins: tuple[str, ...]
    database_url: str
    # PostgreSQL: seconds to open a connection, to run one statement and to wait for a free
    # pooled connection; the pool's size per worker. A hung database then answers 503 in
    # bounded time instead of holding every request.
    database_connect_timeout: float
    database_query_timeout: float
    database_pool_timeout: float
    database_pool_min: int
    database_pool_max: int
    redis_url: str | None
    # Argon2 runs in a thread pool of this many threads; at most this many hashes may wait.
    password_hash_threads: int
    password_hash_max_waiting: int
    max_content_length: int
    log_level: str
    # `python -m slyker serve` buffers access-log lines and writes them at most this many
    # seconds later (0: each line at once); error logs are never buffered.
    access_log_flush_seconds: float
    trusted_proxy_hops: int
    api_docs: bool  # /openapi.json, /docs, /redocs, /scalar
    # The areas' sections, each defined (and read) with its area.
    accounts: AccountsSettings
    billing: BillingSettings
    chat: ChatSettings

    @property
    def origin_policy(self) -> OriginPolicy:
        return OriginPolicy(
            allowed_origins=frozenset(self.cors_allowed_origins),
            allowed_regexes=self.cors_allowed_origin_regexes,
            allow_all=self.cors_allow_all_origins,
            allow_null=self.cors_allow_null_origin,
        )


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build :class:`Settings` from the environment plus ``overrides`` (same names)."""
    merged = merged_environ(os.environ if environ is None else environ, overrides)
    read = Reader(merged)

    debug = read.bool("DEBUG", False)
    secret_key = read.raw("SECRET_KEY") or ""
    secret_key_generated = False
    if not secret_key:
        if not debug:
            raise SettingsError("SECRET_KEY", "required when DEBUG is false")
        # Never a key from the source (anyone could sign an admin token with it): a random
        # one for this process, announced at start-up. Tokens die with the process, and
        # workers would each have their own: `python -m slyker serve` makes one for all.
        secret_key = secrets.token_urlsafe(48)
        secret_key_generated = True
    elif not debug and len(secret_key) < 32:
        raise SettingsError("SECRET_KEY", "must be at least 32 characters when DEBUG is false")

    credentials = read.bool("CORS_ALLOW_CREDENTIALS", True)
    allow_null = read.bool("CORS_ALLOW_NULL_ORIGIN", False)
    origin_entries = read.list("CORS_ALLOWED_ORIGINS", DEV_ORIGINS)
    origins, allow_all = _origins("CORS_ALLOWED_ORIGINS", origin_entries, allow_null)
    # The opt-in only lets a "null" entry through; without the entry null stays refused.
    allow_null = allow_null and any(entry.lower() == NULL_ORIGIN for entry in origin_entries)
    if allow_all and credentials:
        raise SettingsError(
            "CORS_ALLOWED_ORIGINS", "'*' cannot be combined with CORS_ALLOW_CREDENTIALS=true"
        )
    csrf_trusted, csrf_all = _origins(
        "CSRF_TRUSTED_ORIGINS", read.list("CSRF_TRUSTED_ORIGINS", ()), allow_null=False
    )
    if csrf_all:
        raise SettingsError("CSRF_TRUSTED_ORIGINS", "'*' would trust every site")

    return Settings(
        debug=debug,
        secret_key=secret_key,
        secret_key_generated=secret_key_generated,
        # The docs pages load unpinned scripts from a CDN: served only when asked for.
        api_docs=read.bool("API_DOCS", debug),
        allowed_hosts=tuple(
            host.lower() for host in read.list("ALLOWED_HOSTS", DEV_HOSTS if debug else ())
        ),
        cors_allowed_origins=tuple(origins),
        cors_allowed_origin_regexes=_regexes(
            split_regex_list(merged.get("CORS_ALLOWED_ORIGIN_REGEXES", ""))
        ),
        cors_allow_all_origins=allow_all,
        cors_allow_null_origin=allow_null,
        cors_allow_credentials=credentials,
        cors_allow_methods=_methods(read.list("CORS_ALLOW_METHODS", DEFAULT_ALLOW_METHODS)),
        cors_allow_headers=_header_names(
            "CORS_ALLOW_HEADERS", read.list("CORS_ALLOW_HEADERS", DEFAULT_ALLOW_HEADERS)
        ),
        cors_expose_headers=_expose_headers(read.list("CORS_EXPOSE_HEADERS", ())),
        cors_preflight_max_age=read.int("CORS_PREFLIGHT_MAX_AGE", 86400),
        csrf_trusted_origins=tuple(csrf_trusted),
        database_url=database_url_from_environment(merged),
        **_database_settings(read),
        redis_url=read.raw("REDIS_URL") or None,
        password_hash_threads=read.int("PASSWORD_HASH_THREADS", 2, minimum=1, maximum=64),
        password_hash_max_waiting=read.int("PASSWORD_HASH_MAX_WAITING", 32, maximum=10000),
        max_content_length=read.int("MAX_CONTENT_LENGTH", 1024 * 1024, minimum=1),
        log_level=_log_level(read.raw("LOG_LEVEL") or ("DEBUG" if debug else "INFO")),
        access_log_flush_seconds=read_access_log_flush_seconds(read),
        trusted_proxy_hops=read.int("TRUSTED_PROXY_HOPS", 0),
        accounts=read_accounts_settings(read, front_end_origins=origins or DEV_ORIGINS),
        billing=read_billing_settings(read),
        chat=read_chat_settings(read),
    )


def read_access_log_flush_seconds(read: Reader) -> float:
    """ACCESS_LOG_FLUSH_SECONDS: read here for the app and by ``python -m slyker serve``
    (the access log is Hypercorn's, set up before any app is loaded)."""
    return read.float("ACCESS_LOG_FLUSH_SECONDS", 1.0, minimum=0.0, maximum=60.0)


def _database_settings(read: Reader) -> dict[str, Any]:
    pool_min = read.int("DATABASE_POOL_MIN", 1, maximum=100)
    pool_max = read.int("DATABASE_POOL_MAX", 10, minimum=1, maximum=100)
    if pool_min > pool_max:
        raise SettingsError(
            "DATABASE_POOL_MIN", f"must not exceed DATABASE_POOL_MAX ({pool_max}), got {pool_min}"
        )
    return {
        "database_connect_timeout": read.float(
            "DATABASE_CONNECT_TIMEOUT", 5.0, minimum=0.1, maximum=60.0
        ),
        "database_query_timeout": read.float(
            "DATABASE_QUERY_TIMEOUT", 10.0, minimum=0.1, maximum=300.0
        ),
        "database_pool_timeout": read.float(
            "DATABASE_POOL_TIMEOUT", 5.0, minimum=0.1, maximum=60.0
        ),
        "database_pool_min": pool_min,
        "database_pool_max": pool_max,
    }


def database_url_from_environment(environ: Mapping[str, str]) -> str:
    """DATABASE_URL, else a SQLite file in DATA_DIR (default ``./data``): zero set-up."""
    read = Reader(environ)
    data_dir = Path(read.raw("DATA_DIR") or "data")
    return read.raw("DATABASE_URL") or f"sqlite://{data_dir / 'slyker.sqlite3'}"


def _origins(name: str, entries: list[str], allow_null: bool) -> tuple[list[str], bool]:
    canonical: list[str] = []
    allow_all = False
    for entry in entries:
        if entry == WILDCARD:
            allow_all = True
        elif entry.lower() == NULL_ORIGIN:
            if not allow_null:
                raise SettingsError(
                    name, "'null' is refused unless CORS_ALLOW_NULL_ORIGIN=true (sandboxed pages)"
                )
        else:
            try:
                value = canonicalise_entry(entry)
            except InvalidOrigin:
                raise SettingsError(
                    name,
                    f"{entry!r} is not an origin: expected scheme://host[:port] with "
                    "http or https and no path, query, fragment or user info",
                ) from None
            if value not in canonical:
                canonical.append(value)
    return canonical, allow_all


def _regexes(patterns: list[str]) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise SettingsError(
                "CORS_ALLOWED_ORIGIN_REGEXES", f"{pattern!r} is not a valid regex: {error}"
            ) from None
    return tuple(compiled)


def _methods(methods: list[str]) -> tuple[str, ...]:
    for method in methods:
        if not _METHOD_RE.fullmatch(method):
            raise SettingsError("CORS_ALLOW_METHODS", f"{method!r} is not an HTTP method")
    return tuple(dict.fromkeys(methods))


def _header_names(name: str, headers: list[str]) -> tuple[str, ...]:
    for header in headers:
        if not _HEADER_NAME_RE.fullmatch(header) or header == WILDCARD:
            raise SettingsError(name, f"{header!r} is not a header name")
    return tuple(dict.fromkeys(headers))


def _expose_headers(headers: list[str]) -> tuple[str, ...]:
    names = _header_names("CORS_EXPOSE_HEADERS", headers)
    lowered = {header.lower() for header in names}
    extra = tuple(header for header in ALWAYS_EXPOSED_HEADERS if header.lower() not in lowered)
    return names + extra


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise SettingsError(
            "LOG_LEVEL", f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}"
        )
    return level


EXTENSION_KEY = "slyker.settings"


def current_settings() -> Settings:
    """The settings of the app handling the current request."""
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
