"""Areas: what :func:`slyker.create_app` installs on top of its core.

The core (settings, database, errors, request class, identity, CSRF, the CORS layers, request
ids, rate limits, OpenAPI, ``/health/`` and ``/ready/``, draining) is always installed and is
enough for any one area to work alone. Each area owns its blueprints, its lifecycle and its CLI
commands in one ``init_app(app)``:

- ``accounts``: sign-up, tokens, profiles, password resets; staff's client list; ``create-user``
- ``billing``: catalog, domain search, carts, promotions, invoices, payments, Paynow,
  subscriptions and domain registrations; ``load-demo-catalog``
- ``chat``: the chat WebSockets and staff REST API, and the broker they share

``create_app(areas=("billing",))`` builds an app with the core and billing only (a test of one
blueprint needs nothing else); the default is every area. Models are shared: an area may use
another area's models, never its blueprints.

Each area's settings section is defined next to it (``<area>_settings.py``: the dataclass and
its reader) and reached as ``settings.<area>``; :mod:`slyker.settings` reads every section at
start-up. This package therefore imports its areas only when installing them: the section
modules must be importable by :mod:`slyker.settings` without pulling in any blueprint.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from quart import Quart

# The module with each area's ``init_app(app)``, imported when the area is installed.
AREAS: dict[str, str] = {
    "accounts": "slyker.areas.accounts",
    "billing": "slyker.areas.billing",
    "chat": "slyker.areas.chat",
}
ALL_AREAS: tuple[str, ...] = tuple(AREAS)


def chosen_areas(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` checked and put in installation order (that of :data:`ALL_AREAS`, so the URL
    map and the OpenAPI document do not depend on the order they were given in)."""
    if isinstance(names, str):  # ("billing") instead of ("billing",)
        raise ValueError(f"areas must be a sequence of area names, not the string {names!r}")
    wanted = set(names)
    unknown = sorted(wanted - set(AREAS))
    if unknown:
        raise ValueError(
            f"unknown area(s) {', '.join(map(repr, unknown))}: choose from {', '.join(AREAS)}"
        )
    return tuple(name for name in ALL_AREAS if name in wanted)


def install_areas(app: Quart, names: Iterable[str]) -> None:
    for name in chosen_areas(names):
        importlib.import_module(AREAS[name]).init_app(app)
