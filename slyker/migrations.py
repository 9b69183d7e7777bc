"""Database migrations (aerich), one folder per SQL dialect.

aerich writes dialect-specific SQL, so SQLite (the embedded default) and PostgreSQL
(production) each have their own history under ``migrations/<dialect>/``, generated from the
same models: ``python -m slyker makemigrations NAME`` writes both, ``python -m slyker
migrate`` applies the right one to ``DATABASE_URL``.
"""

from __future__ import annotations

import os
from pathlib import Path

from aerich import Command
from tortoise import Tortoise

from slyker.database import ensure_data_dir, tortoise_config

# The repository's migrations/ folder; an installed package (the Docker image) is told where
# they are with SLYKER_MIGRATIONS_DIR.
MIGRATIONS = Path(
    os.environ.get("SLYKER_MIGRATIONS_DIR") or Path(__file__).resolve().parent.parent / "migrations"
)
APP = "models"
# Only used to pick the dialect when generating migrations offline (no connection is made).
DIALECT_SAMPLE_URLS = {
    "sqlite": "sqlite://:memory:",
    "postgres": "postgres://slyker@127.0.0.1:5432/slyker",
}


def dialect(database_url: str) -> str:
    scheme = database_url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme in {"postgres", "postgresql", "asyncpg", "psycopg"} or scheme.startswith(
        "postgresql+"
    ):
        return "postgres"
    raise ValueError(f"DATABASE_URL: unsupported database {scheme!r} (sqlite or postgres)")


def location(name: str) -> str:
    return str(MIGRATIONS / name)


async def upgrade(database_url: str) -> list[str]:
    """Apply the migrations of ``database_url``'s dialect that it has not had yet."""
    ensure_data_dir(database_url)
    config = tortoise_config(database_url)
    command = Command(config, app=APP, location=location(dialect(database_url)))
    await Tortoise.init(config=config)
    try:
        await command.init()
        return await command.upgrade(run_in_transaction=True)
    finally:
        await Tortoise.close_connections()


async def make_migration(name: str, dialect_name: str) -> str | None:
    """Write a migration for one dialect from the current models (offline). aerich keeps
    its state in class attributes, so run each dialect in a process of its own."""
    folder = location(dialect_name)
    url = DIALECT_SAMPLE_URLS[dialect_name]
    command = Command(tortoise_config(url), app=APP, location=folder)
    try:
        if not (Path(folder) / APP).exists():
            await command.init_migrations(safe=True)
            return "initial"
        # Offline: load the models for the dialect without connecting anywhere.
        await Tortoise.init(config=tortoise_config(url), init_connections=False)
        await command.init(offline=True)
        return await command.migrate(name, no_input=True, offline=True)
    finally:
        await command.aclose()
