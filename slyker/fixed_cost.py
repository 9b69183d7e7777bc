"""Per-request work that the libraries under slyker redo on every request although its
result never changes; done once instead (issue 12, measured with ``python -m
bench.profile_health``):

- quart-schema builds a new pydantic ``TypeAdapter`` (a full core-schema generation, with
  ``compile`` calls) for every response it converts and every body it validates: about a
  third of ``GET /health/``. :func:`cache_type_adapters` keeps one adapter per type.
- Quart opens and saves a signed-cookie session on every request (an itsdangerous
  serializer built each time) although slyker keeps no server session (tokens and the cart
  token are its own). :class:`NoSessions` makes every session the null session, which also
  turns an accidental ``session[...] = ...`` into an error instead of a silent cookie.
"""

from __future__ import annotations

import functools
from typing import Any

import quart_schema.conversion
from pydantic import TypeAdapter
from quart import Quart
from quart.sessions import SessionInterface

# Distinct types are few (one per declared request/response model and list/dict): bounded
# anyway, so a type made at run time could not grow it for ever.
_ADAPTER_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=_ADAPTER_CACHE_SIZE)
def _cached_adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def shared_type_adapter(model: Any, *args: Any, **kwargs: Any) -> TypeAdapter[Any]:
    """``TypeAdapter(model)``, built once per type; anything unusual gets a fresh one."""
    if args or kwargs:
        return TypeAdapter(model, *args, **kwargs)
    try:
        return _cached_adapter(model)
    except TypeError:  # an unhashable annotation
        return TypeAdapter(model)


def cache_type_adapters() -> None:
    """quart-schema looks ``TypeAdapter`` up in its conversion module at each call
    (quart-schema 0.25); replace that name. tests/test_fixed_cost.py fails if a new
    quart-schema stops using it, so the saving cannot silently disappear."""
    quart_schema.conversion.TypeAdapter = shared_type_adapter  # type: ignore[misc,assignment]


class NoSessions(SessionInterface):
    """No Quart session: ``open_session`` answers None, so Quart uses the null session and
    neither reads nor writes a cookie."""

    async def open_session(self, app: Quart, request: Any) -> None:
        return None

    async def save_session(self, app: Quart, session: Any, response: Any) -> None:
        return None


def remove_fixed_costs(app: Quart) -> None:
    cache_type_adapters()
    app.session_interface = NoSessions()
