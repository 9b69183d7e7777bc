"""Settings: read from the environment once, validated once, at startup.

Every problem raises :class:`SettingsError` whose message names the setting, and the app
refuses to start. Nothing else in slyker reads ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from quart import current_app

from slyker.origins import NULL_ORIGIN, WILDCARD, InvalidOrigin, OriginPolicy, canonicalise_entry

DEV_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000")
DEV_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# An invoice is due at most ten years after it is issued (dates stay within the calendar).
MAX_INVOICE_DUE_DAYS = 3650
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
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_METHOD_RE = re.compile(r"[A-Z]+")


class SettingsError(SystemExit):
    """A setting that prevents start-up.

    A ``SystemExit`` so that ``hypercorn 'slyker:create_app()'`` stops with this one line
    instead of a traceback; tests catch it like any exception.
    """

    def __init__(self, name: str, problem: str) -> None:
        self.setting = name
        super().__init__(f"slyker: invalid setting {name}: {problem}")


def split_list(raw: str) -> list[str]:
    """Comma-separated list: items trimmed, surrounding quotes stripped, empty items dropped.

    Quotes are stripped because ``CORS_ALLOWED_ORIGINS="https://a.example"`` pasted into an
    env file once reached production with the quotes inside the value.
    """
    items = []
    for item in raw.strip().strip("'\"").split(","):
        item = item.strip().strip("'\"").strip()
        if item:
            items.append(item)
    return items


def split_regex_list(raw: str) -> list[str]:
    """Like :func:`split_list`, but a comma inside ``{}``, ``[]`` or ``()`` (``{1,5}``) or
    escaped belongs to the regex."""
    items, current, depth, escaped = [], "", 0, False
    for char in raw:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "{[(":
            depth += 1
        elif char in "}])":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        current += char
    items.append(current)
    return [item for item in (i.strip().strip("'\"").strip() for i in items) if item]


@dataclass(frozen=True)
class PaynowSettings:
    """Paynow (Zimbabwe). Optional as a whole: without them ``paynow`` payments are refused
    with a 400 naming the first missing setting (:attr:`missing`)."""

    integration_id: str | None
    integration_key: str | None  # lower-cased: Paynow's keys are GUIDs, hashed in lower case
    return_url: str | None  # the storefront page the customer comes back to
    result_url: str | None  # the public URL of our result endpoint (Paynow POSTs to it)
    api_url: str  # https://www.paynow.co.zw; tests point it at their simulator
    timeout: float  # seconds for each call to Paynow
    auth_email: str | None  # sent as authemail instead of the customer's (test mode needs it)

    @property
    def missing(self) -> str | None:
        """The first setting a Paynow payment needs and does not have."""
        required = (
            ("PAYNOW_INTEGRATION_ID", self.integration_id),
            ("PAYNOW_INTEGRATION_KEY", self.integration_key),
            ("PAYNOW_RETURN_URL", self.return_url),
            ("PAYNOW_RESULT_URL", self.result_url),
        )
        return next((name for name, value in required if not value), None)


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
    jwt_access_token_lifetime: timedelta
    jwt_refresh_token_lifetime: timedelta
    jwt_refresh_reuse_grace: timedelta
    smtp_host: str | None  # None: e-mails are written to the log instead of being sent
    smtp_port: int
    smtp_username: str
    smtp_password: str
    smtp_starttls: bool
    smtp_timeout: int
    mail_from: str
    password_reset_url: str
    password_reset_token_lifetime: timedelta
    cart_cookie_name: str
    cart_cookie_samesite: str
    cart_cookie_secure: bool | None  # None: Secure unless the API is served on a loopback host
    cart_cookie_max_age: int
    cart_max_lines: int
    cart_creations_per_minute: int  # new anonymous carts per client address
    cart_writes_per_minute: int  # cart changes per user, or per address when anonymous
    coupon_checks_per_minute: int  # validate_code and apply_coupon per client address
    tax_rate: Decimal
    invoice_due_days: int
    bank_payment_instructions: str
    crypto_payment_instructions: str
    paynow: PaynowSettings
    chat_departments: tuple[str, ...]
    chat_staff_departments: tuple[str, ...]
    chat_auto_replies: dict[str, str]
    chat_ping_interval: float
    chat_typing_interval: float  # at most one typing event per conversation per this
    chat_messages_per_second: int
    chat_message_burst: int
    chat_max_message_bytes: int
    chat_send_queue_size: int
    chat_agent_messages_per_second: int
    chat_max_sockets_per_client: int
    chat_new_conversations_per_minute: int
    chat_auth_recheck_seconds: float
    chat_auth_frame_timeout: float
    ws_allow_missing_origin: bool
    trusted_proxy_hops: int
    api_docs: bool  # /openapi.json, /docs, /redocs, /scalar
    # Domain availability: per-suffix overrides of the built-in tables ("" removes a suffix).
    whois_rdap_servers: dict[str, str]
    whois_servers: dict[str, str]
    whois_timeout: float
    whois_max_parallel: int
    whois_max_domains: int
    whois_cache_seconds: int
    whois_rate_limit: int

    @property
    def origin_policy(self) -> OriginPolicy:
        return OriginPolicy(
            allowed_origins=frozenset(self.cors_allowed_origins),
            allowed_regexes=self.cors_allowed_origin_regexes,
            allow_all=self.cors_allow_all_origins,
            allow_null=self.cors_allow_null_origin,
        )


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        return None if value is None else str(value).strip().strip("'\"").strip()

    def bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None or value == "":
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise SettingsError(name, f"expected true or false, got {value!r}")

    def int(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(name, f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise SettingsError(name, f"must be at least {minimum}, got {number}")
        if maximum is not None and number > maximum:
            raise SettingsError(name, f"must be at most {maximum}, got {number}")
        return number

    def float(self, name: str, default: float, minimum: float, maximum: float) -> float:
        value = self.raw(name)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(name, f"expected a number, got {value!r}") from None
        if not minimum <= number <= maximum:  # also refuses nan
            raise SettingsError(name, f"must be from {minimum:g} to {maximum:g}, got {value}")
        return number

    def list(self, name: str, default: tuple[str, ...]) -> list[str]:
        value = self.environ.get(name)
        return list(default) if value is None else split_list(str(value))


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build :class:`Settings` from the environment plus ``overrides`` (same names)."""
    merged: dict[str, str] = dict(os.environ if environ is None else environ)
    for name, value in (overrides or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list | tuple):
            value = ",".join(str(item) for item in value)
        merged[name] = str(value)
    read = _Reader(merged)

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
        jwt_access_token_lifetime=timedelta(
            minutes=read.int("JWT_ACCESS_TOKEN_LIFETIME", 120, minimum=1)
        ),
        jwt_refresh_token_lifetime=timedelta(
            minutes=read.int("JWT_REFRESH_TOKEN_LIFETIME", 10080, minimum=1)
        ),
        jwt_refresh_reuse_grace=timedelta(
            seconds=_bounded(read, "JWT_REFRESH_REUSE_GRACE_SECONDS", 30, maximum=300)
        ),
        **_mail_settings(read, origins),
        cart_cookie_name=read.raw("CART_COOKIE_NAME") or "slyker_cart",
        **_cart_cookie_policy(read),
        cart_max_lines=read.int("CART_MAX_LINES", 50, minimum=1, maximum=1000),
        cart_creations_per_minute=read.int("CART_CREATIONS_PER_MINUTE", 20, minimum=1),
        cart_writes_per_minute=read.int("CART_WRITES_PER_MINUTE", 120, minimum=1),
        coupon_checks_per_minute=read.int("COUPON_CHECKS_PER_MINUTE", 10, minimum=1),
        tax_rate=_decimal(read, "TAX_RATE", "0"),
        invoice_due_days=read.int("INVOICE_DUE_DAYS", 14, maximum=MAX_INVOICE_DUE_DAYS),
        bank_payment_instructions=read.raw("BANK_PAYMENT_INSTRUCTIONS")
        or DEFAULT_BANK_INSTRUCTIONS,
        crypto_payment_instructions=read.raw("CRYPTO_PAYMENT_INSTRUCTIONS")
        or DEFAULT_CRYPTO_INSTRUCTIONS,
        paynow=_paynow_settings(read),
        **_chat_settings(read),
        ws_allow_missing_origin=read.bool("WS_ALLOW_MISSING_ORIGIN", False),
        trusted_proxy_hops=read.int("TRUSTED_PROXY_HOPS", 0),
        **_whois_settings(read),
    )


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE = _SUFFIX_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_LOOPBACK_NAMES = {"localhost"}


def _database_settings(read: _Reader) -> dict[str, Any]:
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


def _whois_settings(read: _Reader) -> dict[str, Any]:
    return {
        "whois_rdap_servers": {
            suffix: _service_url("WHOIS_RDAP_SERVERS", url, query=False) if url else ""
            for suffix, url in _suffix_pairs(read, "WHOIS_RDAP_SERVERS").items()
        },
        "whois_servers": {
            suffix: _whois_server(server) if server else ""
            for suffix, server in _suffix_pairs(read, "WHOIS_SERVERS").items()
        },
        # The storefront gives up after 30 s: a whole request must finish well before that.
        "whois_timeout": read.float("WHOIS_TIMEOUT", 5.0, minimum=0.05, maximum=30.0),
        "whois_max_parallel": read.int("WHOIS_MAX_PARALLEL", 5, minimum=1, maximum=50),
        "whois_max_domains": read.int("WHOIS_MAX_DOMAINS", 20, minimum=1, maximum=100),
        "whois_cache_seconds": read.int("WHOIS_CACHE_SECONDS", 300, maximum=86400),
        "whois_rate_limit": read.int("WHOIS_RATE_LIMIT", 30, minimum=1),
    }


def _suffix_pairs(read: _Reader, name: str) -> dict[str, str]:
    """``com=value,co.zw=value``: a domain suffix (a leading dot is dropped) and its value."""
    pairs: dict[str, str] = {}
    for item in read.list(name, ()):
        suffix, equals, value = item.partition("=")
        suffix = suffix.strip().lower().removeprefix(".")
        if not equals or not _SUFFIX_RE.fullmatch(suffix):
            raise SettingsError(name, f"{item!r} is not suffix=value (e.g. com=...)")
        if suffix in pairs:
            raise SettingsError(name, f"{suffix!r} is given twice")
        pairs[suffix] = value.strip()
    return pairs


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _service_url(name: str, url: str, *, query: bool) -> str:
    """An https URL (http only on loopback, for tests and local mirrors); RDAP bases get
    their trailing slash so that ``domain/<name>`` can be appended."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SettingsError(name, f"{url!r} is not a URL") from None
    host = (parts.hostname or "").lower()
    if (
        parts.scheme not in ("https", "http")
        or not host
        or parts.username is not None
        or parts.fragment
        or (parts.query and not query)
        or port == 0
    ):
        raise SettingsError(name, f"{url!r} is not an http(s) URL without user info or fragment")
    if parts.scheme == "http" and not _is_loopback(host):
        raise SettingsError(name, f"{url!r} must use https (http only on loopback)")
    if not query and not url.endswith("/"):
        url += "/"
    return url


def _whois_server(server: str) -> str:
    """``host[:port]`` (port 43 by default), or an http(s) URL the name is appended to."""
    if "://" in server:
        return _service_url("WHOIS_SERVERS", server, query=True)
    problem = SettingsError("WHOIS_SERVERS", f"{server!r} is not host[:port] or an https URL")
    try:
        parts = urlsplit(f"//{server}")
        port = 43 if parts.port is None else parts.port
    except ValueError:
        raise problem from None
    host = (parts.hostname or "").lower()
    if parts.path or parts.query or parts.username is not None or not 1 <= port <= 65535:
        raise problem
    if not _HOST_RE.fullmatch(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise problem from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bounded(read: _Reader, name: str, default: int, maximum: int) -> int:
    value = read.int(name, default)
    if value > maximum:
        raise SettingsError(name, f"must be at most {maximum}, got {value}")
    return value


DEFAULT_MAIL_FROM = "Slyker Tech <no-reply@slykertech.co.zw>"
RESET_PAGE = "/reset-password?uid={uid}&token={token}"
_HEADER_UNSAFE_RE = re.compile(r"[\x00-\x1f\x7f]")


def _mail_settings(read: _Reader, origins: list[str]) -> dict[str, Any]:
    """SMTP and the password-reset mail. Without SMTP_HOST mail goes to the log."""
    username = read.raw("SMTP_USERNAME") or ""
    password = read.raw("SMTP_PASSWORD") or ""
    if bool(username) != bool(password):
        raise SettingsError(
            "SMTP_PASSWORD" if username else "SMTP_USERNAME",
            "SMTP_USERNAME and SMTP_PASSWORD are set together or not at all",
        )
    mail_from = read.raw("MAIL_FROM") or DEFAULT_MAIL_FROM
    _, address = parseaddr(mail_from)
    if "@" not in address or _HEADER_UNSAFE_RE.search(mail_from):
        raise SettingsError("MAIL_FROM", f"expected an e-mail address, got {mail_from!r}")
    # The storefront's reset page, on the first allowed front-end origin unless set.
    default_url = (origins[0] if origins else DEV_ORIGINS[0]) + RESET_PAGE
    reset_url = read.raw("PASSWORD_RESET_URL") or default_url
    parsed = urlsplit(reset_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or " " in reset_url:
        raise SettingsError("PASSWORD_RESET_URL", f"expected an http(s) URL, got {reset_url!r}")
    placeholders = ("{uid}" in reset_url, "{token}" in reset_url)
    if any(placeholders) and not all(placeholders):
        raise SettingsError("PASSWORD_RESET_URL", "needs both {uid} and {token}, or neither")
    return {
        "smtp_host": read.raw("SMTP_HOST") or None,
        "smtp_port": _port(read, "SMTP_PORT", 587),
        "smtp_username": username,
        "smtp_password": password,
        "smtp_starttls": read.bool("SMTP_STARTTLS", True),
        "smtp_timeout": read.int("SMTP_TIMEOUT", 10, minimum=1),
        "mail_from": mail_from,
        "password_reset_url": reset_url,
        "password_reset_token_lifetime": timedelta(
            minutes=read.int("PASSWORD_RESET_TOKEN_LIFETIME", 60, minimum=1)
        ),
    }


def _port(read: _Reader, name: str, default: int) -> int:
    port = read.int(name, default, minimum=1)
    if port > 65535:
        raise SettingsError(name, f"must be a port from 1 to 65535, got {port}")
    return port


DEFAULT_CHAT_AUTO_REPLY = (
    "Thanks for your message. No {department} agent is online right now: we have your "
    "message and will reply here or by e-mail as soon as possible."
)
_DEPARTMENT_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def _chat_settings(read: _Reader) -> dict[str, Any]:
    departments = tuple(
        d.lower()
        for d in read.list("CHAT_DEPARTMENTS", ("sales", "support", "billing", "management"))
    )
    for department in departments:
        if not _DEPARTMENT_RE.fullmatch(department) or department == "agents":
            raise SettingsError("CHAT_DEPARTMENTS", f"{department!r} is not a department name")
    staff_only = tuple(d.lower() for d in read.list("CHAT_STAFF_DEPARTMENTS", ("management",)))
    for department in staff_only:
        if department not in departments:
            raise SettingsError(
                "CHAT_STAFF_DEPARTMENTS", f"{department!r} is not in CHAT_DEPARTMENTS"
            )
    return {
        "chat_departments": departments,
        "chat_staff_departments": staff_only,
        "chat_auto_replies": {
            department: read.raw(f"CHAT_AUTO_REPLY_{department.upper().replace('-', '_')}")
            or (read.raw("CHAT_AUTO_REPLY") or DEFAULT_CHAT_AUTO_REPLY).format(
                department=department
            )
            for department in departments
        },
        # Seconds, fractions allowed (the tests run on sub-second intervals).
        "chat_ping_interval": read.float("CHAT_PING_INTERVAL", 25.0, minimum=0.1, maximum=3600.0),
        "chat_typing_interval": read.float("CHAT_TYPING_INTERVAL", 1.0, minimum=0.05, maximum=60.0),
        "chat_messages_per_second": read.int("CHAT_MESSAGES_PER_SECOND", 5, minimum=1),
        "chat_message_burst": read.int("CHAT_MESSAGE_BURST", 10, minimum=1),
        "chat_max_message_bytes": read.int("CHAT_MAX_MESSAGE_BYTES", 4096, minimum=64),
        "chat_send_queue_size": read.int("CHAT_SEND_QUEUE_SIZE", 100, minimum=1),
        "chat_agent_messages_per_second": read.int(
            "CHAT_AGENT_MESSAGES_PER_SECOND", 500, minimum=1
        ),
        "chat_max_sockets_per_client": read.int("CHAT_MAX_SOCKETS_PER_CLIENT", 20, minimum=1),
        "chat_new_conversations_per_minute": read.int(
            "CHAT_NEW_CONVERSATIONS_PER_MINUTE", 30, minimum=1
        ),
        "chat_auth_recheck_seconds": read.float(
            "CHAT_AUTH_RECHECK_SECONDS", 30.0, minimum=0.1, maximum=86400.0
        ),
        # A socket that needs a user and got no token at the handshake waits this long for
        # its {"type": "auth", "token": ...} frame.
        "chat_auth_frame_timeout": read.float(
            "CHAT_AUTH_FRAME_TIMEOUT", 5.0, minimum=0.1, maximum=60.0
        ),
    }


DEFAULT_BANK_INSTRUCTIONS = (
    "Pay by bank transfer to Slyker Tech (account details on your invoice e-mail) "
    "quoting the invoice number as the reference."
)


DEFAULT_CRYPTO_INSTRUCTIONS = (
    "Pay in cryptocurrency: reply to your invoice e-mail or contact billing@slykertech.co.zw "
    "for the wallet address and amount, quoting the invoice number; we confirm the payment "
    "by hand."
)
PAYNOW_API_URL = "https://www.paynow.co.zw"
_PAYNOW_ID_RE = re.compile(r"[0-9]{1,12}")
_PAYNOW_KEY_RE = re.compile(r"[A-Za-z0-9-]{8,128}")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _absolute_url(name: str, value: str | None, *, allow_query: bool = True) -> str | None:
    """An absolute http(s) URL without user info or fragment, or None when unset."""
    if not value:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError:
        raise SettingsError(name, f"{value!r} is not a URL") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.fragment
        or (parts.query and not allow_query)
        or any(char.isspace() or ord(char) < 32 for char in value)
    ):
        raise SettingsError(
            name, f"{value!r} is not an absolute http(s) URL (no user info or fragment)"
        )
    return value


def _paynow_settings(read: _Reader) -> PaynowSettings:
    integration_id = read.raw("PAYNOW_INTEGRATION_ID") or None
    if integration_id is not None and not _PAYNOW_ID_RE.fullmatch(integration_id):
        raise SettingsError("PAYNOW_INTEGRATION_ID", "expected the numeric integration id")
    key = read.raw("PAYNOW_INTEGRATION_KEY") or None
    if key is not None and not _PAYNOW_KEY_RE.fullmatch(key):
        # Never echo the key: it is the secret that signs every Paynow message.
        raise SettingsError("PAYNOW_INTEGRATION_KEY", "expected the integration key (a GUID)")
    api_url = _absolute_url(
        "PAYNOW_API_URL", read.raw("PAYNOW_API_URL") or PAYNOW_API_URL, allow_query=False
    )
    assert api_url is not None
    auth_email = read.raw("PAYNOW_AUTH_EMAIL") or None
    if auth_email is not None and not _EMAIL_RE.fullmatch(auth_email):
        raise SettingsError("PAYNOW_AUTH_EMAIL", f"{auth_email!r} is not an e-mail address")
    return PaynowSettings(
        integration_id=integration_id,
        integration_key=key.lower() if key else None,
        return_url=_absolute_url("PAYNOW_RETURN_URL", read.raw("PAYNOW_RETURN_URL")),
        result_url=_absolute_url("PAYNOW_RESULT_URL", read.raw("PAYNOW_RESULT_URL")),
        api_url=api_url.rstrip("/"),
        timeout=float(read.int("PAYNOW_TIMEOUT", 20, minimum=1)),
        auth_email=auth_email,
    )


def _cart_cookie_policy(read: _Reader) -> dict[str, Any]:
    samesite = (read.raw("CART_COOKIE_SAMESITE") or "Lax").capitalize()
    if samesite not in {"Lax", "Strict", "None"}:
        raise SettingsError(
            "CART_COOKIE_SAMESITE", f"expected Lax, Strict or None, got {samesite!r}"
        )
    raw_secure = (read.raw("CART_COOKIE_SECURE") or "auto").lower()
    secure = None if raw_secure == "auto" else read.bool("CART_COOKIE_SECURE", True)
    if samesite == "None" and secure is False:
        raise SettingsError("CART_COOKIE_SECURE", "SameSite=None cookies must be Secure")
    return {
        "cart_cookie_samesite": samesite,
        "cart_cookie_secure": True if samesite == "None" else secure,
        "cart_cookie_max_age": read.int("CART_COOKIE_MAX_AGE", 60 * 60 * 24 * 30, minimum=60),
    }


def _decimal(read: _Reader, name: str, default: str) -> Decimal:
    raw = read.raw(name) or default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SettingsError(name, f"expected a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0 or value >= 100:
        raise SettingsError(name, f"must be a percentage from 0 to 99.99, got {raw!r}")
    return value


def database_url_from_environment(environ: Mapping[str, str]) -> str:
    """DATABASE_URL, else a SQLite file in DATA_DIR (default ``./data``): zero set-up."""
    read = _Reader(environ)
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
