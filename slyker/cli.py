"""CLI plumbing shared by the areas' commands (``quart --app 'slyker:create_app()' ...``).

Each area registers its own commands in its ``init_app`` (:mod:`slyker.areas`): ``create-user``
(accounts), ``load-demo-catalog`` (billing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tortoise.context import TortoiseContext

from slyker.database import tortoise_config
from slyker.settings import Settings


def run_with_database(settings: Settings, work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work`` in a Tortoise context of its own: a command runs outside the served app,
    whose database opens only when serving starts."""

    async def main() -> None:
        async with TortoiseContext() as context:
            await context.init(config=tortoise_config(settings.database_url))
            await work()

    asyncio.run(main())
