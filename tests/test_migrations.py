"""The committed migrations build the schema the models describe, on the test database's
dialect (SQLite, or PostgreSQL with SLYKER_TEST_DATABASE=postgres). A model change without
``python -m slyker makemigrations NAME`` fails here."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from tortoise.context import TortoiseContext

from slyker import migrations
from slyker.database import tortoise_config
from tests.conftest import POSTGRES_URL, TEST_DATABASE, postgres_admin

Columns = dict[str, set[tuple[str, bool]]]  # table -> {(column, nullable)}


def sqlite_columns(path: Path) -> Columns:
    connection = sqlite3.connect(path)
    try:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            table: {
                (row[1], not row[3]) for row in connection.execute(f'PRAGMA table_info("{table}")')
            }
            for table in tables
        }
    finally:
        connection.close()


async def postgres_columns(url: str) -> Columns:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT table_name, column_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        )
    finally:
        await connection.close()
    columns: Columns = {}
    for row in rows:
        columns.setdefault(row["table_name"], set()).add(
            (row["column_name"], row["is_nullable"] == "YES")
        )
    return columns


async def fresh_postgres_database(name: str) -> str:
    await postgres_admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"


async def generate_from_models(url: str) -> None:
    async with TortoiseContext() as context:
        await context.init(config=tortoise_config(url))
        await context.generate_schemas(safe=False)


async def test_migrations_match_the_models(tmp_path: Path) -> None:
    if TEST_DATABASE == "postgres":
        migrated_url = await fresh_postgres_database(f"slyker_test_migrated_{os.getpid()}")
        generated_url = await fresh_postgres_database(f"slyker_test_generated_{os.getpid()}")
    else:
        migrated_url = f"sqlite://{tmp_path / 'migrated.sqlite3'}"
        generated_url = f"sqlite://{tmp_path / 'generated.sqlite3'}"

    applied = await migrations.upgrade(migrated_url)
    assert applied, "no migration was applied to an empty database"
    assert await migrations.upgrade(migrated_url) == []  # idempotent
    await generate_from_models(generated_url)

    if TEST_DATABASE == "postgres":
        migrated = await postgres_columns(migrated_url)
        generated = await postgres_columns(generated_url)
        for url in (migrated_url, generated_url):
            await postgres_admin(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    else:
        migrated = sqlite_columns(tmp_path / "migrated.sqlite3")
        generated = sqlite_columns(tmp_path / "generated.sqlite3")
    migrated.pop("aerich")
    generated.pop("aerich", None)
    assert migrated == generated


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        ("sqlite://data/x.sqlite3", "sqlite"),
        ("postgres://u:p@db:5432/slyker", "postgres"),
        ("postgresql://u@db/slyker", "postgres"),
    ],
)
def test_dialect(url: str, dialect: str) -> None:
    assert migrations.dialect(url) == dialect


def test_unknown_database_is_refused() -> None:
    with pytest.raises(ValueError, match="DATABASE_URL"):
        migrations.dialect("mysql://u@db/slyker")
