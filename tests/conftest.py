from __future__ import annotations

import asyncio
import atexit
import gc
import hashlib
import inspect
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from argon2 import PasswordHasher
from quart import Quart
from tortoise.models import MetaInfo
from tortoise.utils import get_schema_sql
from werkzeug.routing import Rule

from slyker import auth, create_app
from slyker.database import EXTENSION_KEY as DATABASE_KEY
from slyker.database import make_current
from slyker.settings import EXTENSION_KEY as SETTINGS_KEY

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
    "ACCESS_LOG_FLUSH_SECONDS",
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
    "CHAT_TYPING_INTERVAL",
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


# Markers are set here, centrally, so that ``-m`` selects by what a test needs:
#   live      starts real servers (Hypercorn, nginx, redis-server, PostgreSQL clusters,
#             Next.js): a module in LIVE_MODULES, or one whose name ends in ``_live``;
#   browser   drives Debian's Chromium; contract  the CORS contract matrix;
#   fuzz      schemathesis over /openapi.json;
#   redis     talks to a Redis server (the test, a fixture or its parameter names Redis);
#   postgres  talks to PostgreSQL: on a PostgreSQL run (SLYKER_TEST_DATABASE=postgres) every
#             test with a database, on any run the tests that start PostgreSQL themselves.
# ``pytest --fast`` (./dev test --fast) leaves out live, browser, contract and fuzz (whole
# modules are not even imported) and the production-cost hashing tests.
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
# in-process cases).
CONTRACT_MODULES = {"test_cors_contract"}
FUZZ_MODULES = {"test_openapi_fuzz"}
# Fixtures of other modules that start real server processes: their tests are live too.
LIVE_FIXTURES = {"h2c_servers", "redis_server"}
# The fast loop leaves these out; they run in ./dev test. production_password_hashing: the
# two tests of Argon2's real cost (about 10 s of CPU).
FAST_LOOP_LEAVES_OUT = {"live", "browser", "contract", "fuzz", "production_password_hashing"}
# Names that show a test uses a database (the fixtures, or conftest's database helpers).
DATABASE_FIXTURES = {"app", "app_factory", "settings_env"}
# A test's own code that reaches the real servers: conftest's URLs used as values (not a
# ``REDIS_URL=`` keyword pointing elsewhere), or a Redis client of its own.
REAL_REDIS = re.compile(
    r"(?<![\w\"'])REDIS_URL(?![\w\"'=])|Redis\.from_url|Redis\(|redis=True|\.redis\b"
)
REAL_POSTGRES = re.compile(r"(?<![\w\"'])POSTGRES_URL(?![\w\"'=])|postgres_admin\(")
DATABASE_HELPERS = ("database_settings", "prepare_database", "TEST_DATABASE", "POSTGRES_URL")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="the fast loop: leave out live, browser, contract, fuzz and hashing-cost tests",
    )


def module_markers(module: str) -> set[str]:
    """The markers every test of a test module (by its name) gets."""
    markers = set()
    if module in LIVE_MODULES or module.endswith("_live"):
        markers.add("live")
    if module in BROWSER_MODULES:
        markers.add("browser")
    if module in CONTRACT_MODULES:
        markers.add("contract")
    if module in FUZZ_MODULES:
        markers.add("fuzz")
    return markers


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    fast = config.getoption("fast") and collection_path.suffix == ".py"
    if fast and module_markers(collection_path.stem) & FAST_LOOP_LEAVES_OUT:
        return True
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    """The fast loop does not even generate the cases of a test function that carries a
    marker it leaves out (the per-area CORS matrix of test_areas.py: ~4,000 cases, 0.7 s of
    collection); marks set later (pytest_collection_modifyitems) still deselect single tests."""
    if collector.config.getoption("fast") and name.startswith("test") and callable(obj):
        marks = getattr(obj, "pytestmark", ())
        if {mark.name for mark in marks} & FAST_LOOP_LEAVES_OUT:
            return []
    return None


_SOURCES: dict[Any, str] = {}


def _source(thing: Any) -> str:
    # Cached per function: the parametrised cases of a test share it, and inspect.getsource
    # tokenizes the function each time (two calls per item were ~5 s of every collection).
    key = getattr(thing, "__code__", thing)
    source = _SOURCES.get(key)
    if source is None:
        try:
            source = inspect.getsource(thing)
        except (OSError, TypeError):
            source = ""
        _SOURCES[key] = source
    return source


def uses_redis(item: pytest.Item) -> bool:
    # A test parametrised over brokers or stores ("redis" among the values) uses Redis
    # only in its "redis" case.
    callspec = getattr(item, "callspec", None)
    for mark in item.iter_markers("parametrize"):
        names = mark.args[0]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        if len(names) == 1 and "redis" in mark.args[1] and callspec is not None:
            return bool(callspec.params.get(names[0]) == "redis")
    if any("redis" in name for name in getattr(item, "fixturenames", ())):
        return True
    return bool(REAL_REDIS.search(_source(getattr(item, "function", None))))


def uses_postgres(item: pytest.Item) -> bool:
    fixtures = set(getattr(item, "fixturenames", ()))
    source = _source(getattr(item, "function", None))
    if "postgres" in fixtures or REAL_POSTGRES.search(source):  # PostgreSQL on any run
        return True
    if TEST_DATABASE != "postgres":
        return False
    return bool(DATABASE_FIXTURES & fixtures) or any(name in source for name in DATABASE_HELPERS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    fast = config.getoption("fast")
    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        for name in module_markers(module):
            item.add_marker(name)
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.live)
        # The fast loop leaves out single tests of other modules carrying one of these
        # markers themselves (e.g. the contract matrix of test_areas.py); they need no more.
        if fast and {m.name for m in item.iter_markers()} & FAST_LOOP_LEAVES_OUT:
            left_out.append(item)
            continue
        if uses_redis(item):
            item.add_marker(pytest.mark.redis)
        if uses_postgres(item):
            item.add_marker(pytest.mark.postgres)
        kept.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def pytest_collection_finish(session: pytest.Session) -> None:
    """What lives for the whole run (modules, test items and their parameters) is set apart
    from the garbage collector, whose older generations otherwise went through it again and
    again: its time in the database tests went from 3.9 to 1.8 s.

    A test module may start slow work outside pytest (subprocesses) as soon as the run is
    known to include its tests, so that it overlaps the tests before them: its
    ``start_early(items)`` gets the module's selected tests (tests/test_settings.py)."""
    gc.collect()
    gc.freeze()
    selected: dict[Any, list[pytest.Item]] = {}
    for item in session.items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "start_early"):
            selected.setdefault(module, []).append(item)
    for module, items in selected.items():
        module.start_early(items)


def _build_urls_on_first_use() -> None:
    """Werkzeug compiles two URL-building functions (ast, then compile) for every route as
    it is added: ~25 ms of each create_app, about a third of the fast loop's CPU, for
    ``url_for``, which few tests reach. In the tests they are compiled on first use instead;
    matching and building are unchanged. (A Werkzeug without the hook: nothing is changed.)"""
    compile_builder = getattr(Rule, "_compile_builder", None)
    if compile_builder is None:
        return

    def compile_on_first_use(rule: Rule, append_unknown: bool = True) -> Callable[..., Any]:
        name = "_build_unknown" if append_unknown else "_build"

        def build(rule: Rule, **values: Any) -> Any:
            compiled = compile_builder(rule, append_unknown).__get__(rule, None)
            setattr(rule, name, compiled)
            return compiled(**values)

        return build

    Rule._compile_builder = compile_on_first_use  # type: ignore[method-assign]


_build_urls_on_first_use()


def _parse_rules_once() -> None:
    """Werkzeug parses every route's rule (regular expressions, one converter per variable)
    as it is added: the same ~70 rules for every app, a third of create_app. In the tests a
    rule is parsed once per (rule, host part, slash merging, converter classes) and later
    apps take the result: the same parts, trace and converters (which keep no state of their
    own map); the matcher and URL building are as before. (A Werkzeug whose Rule.compile is
    not this one: nothing is changed.)"""
    compile_rule = Rule.compile
    if not hasattr(Rule, "_parse_rule"):
        return
    parsed: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def compile_once(rule: Rule) -> None:
        map_ = rule.map
        assert map_ is not None, "rule not bound"
        domain_rule = (rule.host if map_.host_matching else rule.subdomain) or ""
        key = (
            rule.rule,
            domain_rule,
            rule.merge_slashes,
            tuple(map_.converters.items()),
        )
        known = parsed.get(key)
        if known is None:
            arguments = set(rule.arguments)
            compile_rule(rule)
            parsed[key] = (
                tuple(rule._parts),
                tuple(rule._trace),
                dict(rule._converters),
                frozenset(rule.arguments - arguments),
            )
            return
        parts, trace, converters, arguments = known
        rule._parts = list(parts)
        rule._trace = list(trace)
        rule._converters = dict(converters)
        rule.arguments.update(arguments)
        rule._build = rule._compile_builder(False).__get__(rule, None)
        rule._build_unknown = rule._compile_builder(True).__get__(rule, None)

    Rule.compile = compile_once  # type: ignore[method-assign]


_parse_rules_once()


def _generate_model_filters_once() -> None:
    """Tortoise finalises every model again on each start of an app (its models are shared
    classes): working out the query filters of the ~20 models was ~40 % of an app's start,
    and every test starts one. They depend only on the model and the database's executor
    class, so in the tests each (model, executor) pair works them out once and later starts
    put the same filters back. (A Tortoise without this method: nothing is changed.)"""
    generate_filters = getattr(MetaInfo, "_generate_filters", None)
    if generate_filters is None:
        return
    generated: dict[tuple[int, type], dict[str, Any]] = {}

    def generate_once(meta: MetaInfo) -> None:
        key = (id(meta), meta.db.executor_class)
        filters = generated.get(key)
        if filters is None:
            generate_filters(meta)
            generated[key] = dict(meta.filters)
        else:
            meta.filters.update(filters)

    MetaInfo._generate_filters = generate_once  # type: ignore[method-assign]


_generate_model_filters_once()


# Each test's SQLite database lives in memory-backed storage (/dev/shm) where the machine has
# it: on disk every commit waits for fsync, which doubled the time of the database tests for
# data thrown away after each test. One directory per run, removed when the run ends.
MEMORY_DISK = Path("/dev/shm")
_memory_data_root: Path | None = None


def _data_root() -> Path | None:
    global _memory_data_root
    if _memory_data_root is None and MEMORY_DISK.is_dir() and os.access(MEMORY_DISK, os.W_OK):
        _memory_data_root = Path(tempfile.mkdtemp(prefix="slyker-tests-", dir=MEMORY_DISK))
        atexit.register(shutil.rmtree, _memory_data_root, ignore_errors=True)
    return _memory_data_root


def database_settings(tmp_path: Path) -> dict[str, str]:
    """DATA_DIR (the SQLite database's directory) for a test with this ``tmp_path``, and on
    PostgreSQL this run's database."""
    root = _data_root()
    # The same tmp_path always gives the same directory (a test may start two apps on it).
    data_dir = root / hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16] if root else tmp_path
    settings = {"DATA_DIR": str(data_dir / "data")}
    if TEST_DATABASE == "postgres":
        settings["DATABASE_URL"] = POSTGRES_RUN_URL
    return settings


# The schema's SQL, generated once per dialect: Tortoise builds it in Python (~15 ms a time),
# and every test makes a fresh database. Executing it is what each test still does.
_SCHEMA_SQL: dict[str, str] = {}


async def prepare_database(app: Quart) -> None:
    """Create the schema (and on PostgreSQL empty every table) for a started app."""
    context = app.extensions[DATABASE_KEY]
    make_current(context)  # not ``with context``: see tests/api.py db()
    connection = context.db()
    dialect = connection.capabilities.dialect
    if dialect not in _SCHEMA_SQL:
        _SCHEMA_SQL[dialect] = get_schema_sql(connection, safe=True)
    await connection.execute_script(_SCHEMA_SQL[dialect])
    # The app's own database decides: a test may build a SQLite app on a PostgreSQL run.
    if dialect == "postgres":
        tables = await connection.execute_query_dict(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        names = ", ".join(f'"{row["tablename"]}"' for row in tables)
        await connection.execute_script(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


# Argon2 with tiny costs for every test (login still hashes and verifies for real): the
# production parameters cost ~0.1 s of CPU per hash, and most tests make and log in users.
# Tests about hashing itself (its cost, the pool that keeps it off the event loop) are
# marked ``production_password_hashing`` and keep the real parameters.
CHEAP_PASSWORD_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def cheap_password_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("production_password_hashing") is None:
        monkeypatch.setattr(auth, "_password_hasher", CHEAP_PASSWORD_HASHER)


@pytest.fixture
def settings_env(tmp_path: Path) -> dict[str, Any]:
    """Minimal valid production-like settings for one test."""
    # The test client's Host is "localhost" (tests pick their client addresses, not loopback).
    return {
        "SECRET_KEY": TEST_SECRET_KEY,
        "ALLOWED_HOSTS": "localhost",
        # Short waits for what the chat tests wait for: a socket without a token is closed
        # after CHAT_AUTH_FRAME_TIMEOUT, typing events follow each other CHAT_TYPING_INTERVAL
        # apart. (A test that needs other values, or the ping and re-check intervals, passes
        # its own.)
        "CHAT_AUTH_FRAME_TIMEOUT": "0.2",
        "CHAT_TYPING_INTERVAL": "0.1",
        **database_settings(tmp_path),
    }


@pytest.fixture
def app_factory(
    settings_env: dict[str, Any],
) -> Callable[..., Quart]:
    def build(**overrides: Any) -> Quart:
        return create_app({**settings_env, **overrides})

    return build


# On SQLite the ``app`` fixture's database starts as a copy of one made at the first use
# (started, schema created, stopped): copying a file costs a tenth of executing the schema
# (~3 ms of every test). Other apps (a test's own, through app_factory) still run
# prepare_database.
_sqlite_template: Path | None = None


async def _sqlite_template_file() -> Path:
    global _sqlite_template
    if _sqlite_template is None:
        directory = Path(tempfile.mkdtemp(prefix="slyker-template-", dir=_data_root()))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        template = create_app({"SECRET_KEY": TEST_SECRET_KEY, "DATA_DIR": str(directory)})
        async with template.test_app():
            await prepare_database(template)
        path = sqlite_file(template)
        assert path is not None and path.exists(), path
        assert not path.with_name(path.name + "-wal").exists(), "not checkpointed on close"
        _sqlite_template = path
    return _sqlite_template


def sqlite_file(app: Quart) -> Path | None:
    """The SQLite database file of ``app`` (None on PostgreSQL)."""
    url = app.extensions[SETTINGS_KEY].database_url
    return Path(url[len("sqlite://") :]) if url.startswith("sqlite://") else None


@pytest.fixture
async def app(app_factory: Callable[..., Quart]) -> AsyncIterator[Quart]:
    application = app_factory()
    database = sqlite_file(application)
    copied = False
    if database is not None and not database.exists():
        copied = True
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(await _sqlite_template_file(), database)
    async with application.test_app():
        if not copied:
            await prepare_database(application)
        yield application
