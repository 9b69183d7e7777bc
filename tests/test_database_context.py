"""Each app's requests use that app's own database: slyker.database makes the app's Tortoise
context current per ASGI call (Tortoise's public ``__enter__`` in the call's own task, never
``__exit__``). Two apps on two databases serve overlapping requests, while the test's own task
has one of them current: every reply comes from its own app's database, and the test's task
keeps its own. Fails if requests run without the context (500), with another app's (the other
user), or reset the one the test holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from quart import Quart
from tortoise.context import get_current_context

from slyker.database import EXTENSION_KEY as DATABASE_KEY
from slyker.models.accounts import User
from tests.api import API, db, make_user
from tests.conftest import POSTGRES_RUN_URL, TEST_DATABASE, postgres_admin, prepare_database

ROUNDS = 20  # requests per app, all in flight at once


@asynccontextmanager
async def other_database(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Settings of a second database of the same kind: a SQLite file of its own, or on a
    PostgreSQL run a PostgreSQL database of its own (mixing the two in one process is not
    this test's subject: Tortoise caches queries per connection name, "default" in both)."""
    if TEST_DATABASE != "postgres":
        yield {"DATA_DIR": str(tmp_path / "other")}
        return
    url = f"{POSTGRES_RUN_URL}_other"
    name = url.rsplit("/", 1)[1]
    await postgres_admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    try:
        yield {"DATABASE_URL": url}
    finally:
        await postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_overlapping_requests_of_two_apps_each_use_their_own_database(
    app: Quart, app_factory: Callable[..., Quart], tmp_path: Path
) -> None:
    async with other_database(tmp_path) as settings:
        other = app_factory(**settings)
        async with other.test_app():
            await prepare_database(other)
            # Both users get id 1, so one token names "user 1" to both apps: which user a reply
            # shows says which database answered.
            first = await make_user(app, "first@example.com")
            second = await make_user(other, "second@example.com")
            assert first.id == second.id
            api, other_api = API(app), API(other)
            token = await api.login("first@example.com")
            assert await other_api.login("second@example.com")

            with db(app) as held:
                replies = await asyncio.gather(
                    *(
                        client.get("/api/accounts/users/me/", token=token)
                        for _ in range(ROUNDS)
                        for client in (api, other_api)
                    )
                )
                # The requests' contexts did not replace or reset the test's own.
                assert get_current_context() is held
                assert await User.filter(email="first@example.com").exists()
            assert get_current_context() is held  # db() leaves it current in this task

            emails = [(reply.status, reply.body.get("email")) for reply in replies]
            assert emails == [(200, "first@example.com"), (200, "second@example.com")] * ROUNDS

            # A task the test starts copies the test's context; the other app's is made current
            # there without touching this task's.
            async def in_other() -> bool:
                with db(other):
                    return await User.filter(email="second@example.com").exists()

            assert await asyncio.create_task(in_other())
            assert get_current_context() is app.extensions[DATABASE_KEY]
