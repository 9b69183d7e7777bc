"""slyker's SQLite client as the served app gets it, for the tests of ``slyker/sqlite.py``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from tortoise import connections
from tortoise.context import TortoiseContext

from slyker import sqlite
from slyker.database import serving_config


@contextlib.asynccontextmanager
async def sqlite_client(path: Path) -> AsyncIterator[sqlite.SqliteClient]:
    """The client the served app gets for a ``sqlite://`` DATABASE_URL, not yet connected.
    (``with context`` is safe here: no request shares this context.)"""
    context = TortoiseContext()
    with context:
        await context.init(config=serving_config(f"sqlite://{path}"))
        client = connections.get("default")
        assert isinstance(client, sqlite.SqliteClient), type(client)
        try:
            yield client
        finally:
            await context.close_connections()
