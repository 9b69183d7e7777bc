"""Tortoise ORM set-up: SQLite file by default, PostgreSQL in production (DATABASE_URL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from quart import Quart
from tortoise import connections
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.context import TortoiseContext

from slyker import postgres, sqlite
from slyker.settings import Settings, load_settings

MODEL_MODULES = [
    "slyker.models.accounts",
    "slyker.models.billing",
    "slyker.models.chat",
    "slyker.models.paynow",
    "slyker.models.services",
    "aerich.models",
]


CONNECTION = "default"  # the name of the one connection, every model's


def tortoise_config(database_url: str) -> dict[str, Any]:
    return {
        "connections": {CONNECTION: _normalise_url(database_url)},
        "apps": {"models": {"models": MODEL_MODULES, "default_connection": CONNECTION}},
        "use_tz": True,
        "timezone": "UTC",
    }


def serving_config(database_url: str, settings: Settings | None = None) -> dict[str, Any]:
    """:func:`tortoise_config` for the app that serves requests: SQLite through
    :mod:`slyker.sqlite`, whose shared connection and lock survive cancelled requests;
    PostgreSQL through :mod:`slyker.postgres`, with the timeouts and pool size of
    ``settings`` (the settings' defaults without them)."""
    config = tortoise_config(database_url)
    url = config["connections"][CONNECTION]
    if _sqlite_path(url) is not None or url == "sqlite://:memory:":
        connection = expand_db_url(url)
        connection["engine"] = sqlite.ENGINE
        config["connections"][CONNECTION] = connection
    elif url.startswith("postgres://"):
        if settings is None:
            settings = load_settings({"DEBUG": True, "DATABASE_URL": database_url})
        config["connections"][CONNECTION] = postgres.connection_config(
            expand_db_url(url)["credentials"],
            connect_timeout=settings.database_connect_timeout,
            query_timeout=settings.database_query_timeout,
            pool_timeout=settings.database_pool_timeout,
            pool_min=settings.database_pool_min,
            pool_max=settings.database_pool_max,
        )
    return config


def _normalise_url(url: str) -> str:
    # Heroku-style and SQLAlchemy-style PostgreSQL URLs are common in DATABASE_URL.
    for prefix in ("postgresql://", "postgresql+asyncpg://"):
        if url.startswith(prefix):
            return "postgres://" + url[len(prefix) :]
    return url


def _sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite://") and url != "sqlite://:memory:":
        return Path(url[len("sqlite://") :])
    return None


def ensure_data_dir(database_url: str) -> None:
    path = _sqlite_path(database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


EXTENSION_KEY = "slyker.tortoise"


def init_database(app: Quart, settings: Settings) -> None:
    """Open the app's own Tortoise context when serving starts, close it when serving stops.

    Tortoise 1.x keeps its state in a context variable; each app owns one context, which
    :class:`DatabaseContextMiddleware` makes current for every request and WebSocket.
    """

    @app.before_serving
    async def open_database() -> None:
        ensure_data_dir(settings.database_url)
        context = TortoiseContext()
        with context:  # its __exit__ is safe here: no request has this context yet
            await context.init(config=serving_config(settings.database_url, settings))
            client = connections.get(CONNECTION)
            if isinstance(client, sqlite.SqliteClient):
                # Opened here, before any request: a request whose client goes away can
                # then never be cancelled halfway through opening it. (PostgreSQL's pool
                # stays lazy, so a database that is down shows in /ready/, not as a
                # worker that cannot start.)
                await client.create_connection(with_db=True)
        app.extensions[EXTENSION_KEY] = context

    @app.after_serving
    async def close_database() -> None:
        context = app.extensions.pop(EXTENSION_KEY, None)
        if context is not None:
            await context.close_connections()


def make_current(context: TortoiseContext) -> None:
    """Make ``context`` the current Tortoise context of the running task, for the rest of it
    (and of the tasks it starts, which copy it).

    Through Tortoise's public ``__enter__`` only, never ``__exit__``: ``__exit__`` resets with
    a token that ``__enter__`` keeps on the context object, which all of an app's requests
    share, so overlapping requests would reset each other's (ValueError, or another request's
    context). Nothing needs resetting because every ASGI call runs in an asyncio task of its
    own, with its own copy of the context variables (Hypercorn's ``TaskGroup.spawn_app`` per
    request and WebSocket, a task for the lifespan; Quart's test client likewise): the setting
    ends with the task. (``set_global_context`` is one per process; tests run several apps.)"""
    context.__enter__()


class DatabaseContextMiddleware:
    """Makes the app's Tortoise context current for each request and WebSocket."""

    def __init__(self, asgi_app: ASGIFramework, app: Quart) -> None:
        self.asgi_app = asgi_app
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        context = self.app.extensions.get(EXTENSION_KEY)
        # None: the lifespan (serving has not started when it is called), or a request
        # before serving started.
        if context is not None:
            make_current(context)  # for this call's task only: see make_current
        await self.asgi_app(scope, receive, send)


async def database_is_ready() -> bool:
    await connections.get(CONNECTION).execute_query("SELECT 1")
    return True
