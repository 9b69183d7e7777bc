"""``python -m slyker check | migrate | makemigrations NAME | serve [...]``.

``check`` validates the settings in the environment and exits 0 or 1: run it before Hypercorn
(README, Docker), because with ``workers >= 1`` Hypercorn prints a start-up error but exits 0.
``migrate`` applies the migrations of DATABASE_URL's dialect; ``makemigrations NAME`` writes a
migration for every dialect after a model change. ``check-cors`` checks a deployed stack's
CORS and WebSocket origin behaviour the way a browser would (:mod:`slyker.tools.corscheck`).
``serve`` runs Hypercorn workers (``hypercorn.toml``) under a supervisor that replaces a worker
that dies and exits non-zero when they cannot start (:mod:`slyker.serve`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from slyker import migrations, serve
from slyker.settings import SettingsError, database_url_from_environment, load_settings
from slyker.tools import corscheck

USAGE = (
    "usage: python -m slyker check | migrate | makemigrations NAME\n"
    "       python -m slyker serve [--config hypercorn.toml] [--bind ADDR] [--workers N] [APP]\n"
    "       python -m slyker check-cors --api URL --origin ORIGIN [options]  (see --help)"
)


def check() -> int:
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error.code, file=sys.stderr)
        return 1
    print(
        f"slyker: settings OK (DEBUG={settings.debug}, "
        f"{len(settings.cors_allowed_origins)} allowed origins, "
        f"{len(settings.cors_allowed_origin_regexes)} origin regexes)"
    )
    return 0


def migrate() -> int:
    url = database_url_from_environment(os.environ)
    applied = asyncio.run(migrations.upgrade(url))
    print(f"slyker: {migrations.dialect(url)} migrations applied: {', '.join(applied) or 'none'}")
    return 0


def make_migrations(name: str, dialect: str | None = None) -> int:
    if dialect is None:  # one process per dialect: aerich keeps state in class attributes
        for each in migrations.DIALECT_SAMPLE_URLS:
            command = [sys.executable, "-m", "slyker", "makemigrations", name, each]
            subprocess.run(command, check=True)
        return 0
    written = asyncio.run(migrations.make_migration(name, dialect))
    print(f"slyker: {dialect}: {written or 'no changes'}")
    return 0


def main(argv: list[str]) -> int:
    match argv:
        case ["check"]:
            return check()
        case ["migrate"]:
            return migrate()
        case ["check-cors", *rest]:
            return corscheck.main(rest)
        case ["serve", *rest]:
            return serve.main(rest)
        case ["makemigrations", name]:
            return make_migrations(name)
        case ["makemigrations", name, dialect] if dialect in migrations.DIALECT_SAMPLE_URLS:
            return make_migrations(name, dialect)
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
