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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from quart import Quart

from slyker.areas import accounts, billing, chat

AREAS: dict[str, Callable[[Quart], None]] = {
    "accounts": accounts.init_app,
    "billing": billing.init_app,
    "chat": chat.init_app,
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
        AREAS[name](app)
