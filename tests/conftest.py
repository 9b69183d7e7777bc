from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from argon2 import PasswordHasher
from quart import Quart

from slyker import auth, create_app
from slyker.database import EXTENSION_KEY as DATABASE_KEY

# Settings come from the environment: keep a developer's shell or .env out of the tests.
SETTING_NAMES = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CORS_ALLOWED_ORIGINS",
    "CORS_ALLOWED_ORIGIN_REGEXES",
    "CORS_ALLOW_CREDENTIALS",
    "CORS_ALLOW_NULL_ORIGIN",
    "CORS_ALLOW_METHODS",
    "CORS_ALLOW_HEADERS",
    "CORS_EXPOSE_HEADERS",
    "CORS_PREFLIGHT_MAX_AGE",
    "CSRF_TRUSTED_ORIGINS",
    "DATABASE_URL",
    "DATABASE_CONNECT_TIMEOUT",
    "DATABASE_QUERY_TIMEOUT",
    "DATABASE_POOL_TIMEOUT",
    "DATABASE_POOL_MIN",
    "DATABASE_POOL_MAX",
    "REDIS_URL",
    "PASSWORD_HASH_THREADS",
    "PASSWORD_HASH_MAX_WAITING",
    "DATA_DIR",
    "MAX_CONTENT_LENGTH",
    "LOG_LEVEL",
    "JWT_ACCESS_TOKEN_LIFETIME",
    "JWT_REFRESH_TOKEN_LIFETIME",
    "JWT_REFRESH_REUSE_GRACE_SECONDS",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMTP_STARTTLS",
    "SMTP_TIMEOUT",
    "MAIL_FROM",
    "PASSWORD_RESET_URL",
    "PASSWORD_RESET_TOKEN_LIFETIME",
    "CART_COOKIE_NAME",
    "CART_COOKIE_SAMESITE",
    "CART_COOKIE_SECURE",
    "CART_COOKIE_MAX_AGE",
    "CART_MAX_LINES",
    "CART_CREATIONS_PER_MINUTE",
    "CART_WRITES_PER_MINUTE",
    "COUPON_CHECKS_PER_MINUTE",
    "TAX_RATE",
    "INVOICE_DUE_DAYS",
    "BANK_PAYMENT_INSTRUCTIONS",
    "CRYPTO_PAYMENT_INSTRUCTIONS",
    "PAYNOW_INTEGRATION_ID",
    "PAYNOW_INTEGRATION_KEY",
    "PAYNOW_RETURN_URL",
    "PAYNOW_RESULT_URL",
    "PAYNOW_API_URL",
    "PAYNOW_TIMEOUT",
    "PAYNOW_AUTH_EMAIL",
    "CHAT_DEPARTMENTS",
    "CHAT_STAFF_DEPARTMENTS",
    "CHAT_AUTO_REPLY",
    "CHAT_PING_INTERVAL",
    "CHAT_MESSAGES_PER_SECOND",
    "CHAT_MESSAGE_BURST",
    "CHAT_MAX_MESSAGE_BYTES",
    "CHAT_SEND_QUEUE_SIZE",
    "CHAT_AGENT_MESSAGES_PER_SECOND",
    "CHAT_MAX_SOCKETS_PER_CLIENT",
    "CHAT_NEW_CONVERSATIONS_PER_MINUTE",
    "CHAT_AUTH_RECHECK_SECONDS",
    "CHAT_AUTH_FRAME_TIMEOUT",
    "WS_ALLOW_MISSING_ORIGIN",
    "TRUSTED_PROXY_HOPS",
    "API_DOCS",
    "WHOIS_RDAP_SERVERS",
    "WHOIS_SERVERS",
    "WHOIS_TIMEOUT",
    "WHOIS_MAX_PARALLEL",
    "WHOIS_MAX_DOMAINS",
    "WHOIS_CACHE_SECONDS",
    "WHOIS_RATE_LIMIT",
    "SLYKER_MIGRATIONS_DIR",
)
for _name in SETTING_NAMES:
    os.environ.pop(_name, None)

TEST_SECRET_KEY = "test-secret-key-0123456789abcdef0123456789"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/15"
# The suite runs on SQLite; SLYKER_TEST_DATABASE=postgres runs the same tests on PostgreSQL.
TEST_DATABASE = os.environ.get("SLYKER_TEST_DATABASE", "sqlite")
if TEST_DATABASE not in ("sqlite", "postgres"):
    raise RuntimeError(f"SLYKER_TEST_DATABASE must be sqlite or postgres, not {TEST_DATABASE!r}")


# A PostgreSQL database of this run's own, so that concurrent runs never empty each
# other's tables; made at the start of the session, dropped at its end.
POSTGRES_RUN_URL = POSTGRES_URL.rsplit("/", 1)[0] + f"/slyker_test_{os.getpid()}"


async def postgres_admin(*statements: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session", autouse=True)
def postgres_run_database() -> Iterator[None]:
    if TEST_DATABASE != "postgres":
        yield
        return
    name = POSTGRES_RUN_URL.rsplit("/", 1)[1]
    asyncio.run(postgres_admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'))
    yield
    asyncio.run(postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# Modules that start real servers (Hypercorn, nginx, redis-server, PostgreSQL clusters,
# Next.js) or drive Chromium. `./dev test --fast` leaves them out (-m "not live"); `./dev test`
# and CI run everything. A new module of that kind ends in ``_live`` or belongs here.
LIVE_MODULES = {
    "test_browser",
    "test_chat_live",
    "test_compose",
    "test_corscheck",
    "test_disconnects_live",
    "test_http2",
    "test_hypercorn_live",
    "test_nginx",
    "test_serve_live",
    "test_storefront",
}
BROWSER_MODULES = {"test_browser", "test_storefront"}
# The CORS contract matrix: every route, method, origin class and mode (tens of thousands of
# in-process cases); the fast loop leaves it out too.
CONTRACT_MODULES = {"test_cors_contract"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in LIVE_MODULES or module.endswith("_live"):
            item.add_marker(pytest.mark.live)
        if module in BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
        if module in CONTRACT_MODULES:
            item.add_marker(pytest.mark.contract)


def database_settings(tmp_path: Path) -> dict[str, str]:
    settings = {"DATA_DIR": str(tmp_path / "data")}
    if TEST_DATABASE == "postgres":
        settings["DATABASE_URL"] = POSTGRES_RUN_URL
    return settings


async def prepare_database(app: Quart) -> None:
    """Create the schema (and on PostgreSQL empty every table) for a started app."""
    context = app.extensions[DATABASE_KEY]
    with context:
        await context.generate_schemas(safe=True)
        if TEST_DATABASE == "postgres":
            connection = context.db()
            tables = await connection.execute_query_dict(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
            names = ", ".join(f'"{row["tablename"]}"' for row in tables)
            await connection.execute_script(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


@pytest.fixture
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 with tiny costs, for modules that log many users in (login still hashes and
    verifies for real); test_accounts keeps the production parameters."""
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(auth, "_password_hasher", hasher)


@pytest.fixture
def settings_env(tmp_path: Path) -> dict[str, Any]:
    """Minimal valid production-like settings for one test."""
    # The test client's Host is "localhost" (tests pick their client addresses, not loopback).
    return {
        "SECRET_KEY": TEST_SECRET_KEY,
        "ALLOWED_HOSTS": "localhost",
        "CHAT_AUTH_FRAME_TIMEOUT": "1",  # a socket without a token is closed within the waits
        **database_settings(tmp_path),
    }


@pytest.fixture
def app_factory(
    settings_env: dict[str, Any],
) -> Callable[..., Quart]:
    def build(**overrides: Any) -> Quart:
        return create_app({**settings_env, **overrides})

    return build


@pytest.fixture
async def app(app_factory: Callable[..., Quart]) -> AsyncIterator[Quart]:
    application = app_factory()
    async with application.test_app():
        await prepare_database(application)
        yield application
