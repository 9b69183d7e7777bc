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
- quart-schema converts every view result by trying each model kind in turn (pydantic
  dataclass, TypedDict, BaseModel, msgspec, attrs, ...) for the body and again for the
  headers, reading three settings through ``current_app`` each time: ~8 µs for
  ``/health/``'s dataclass. :func:`convert_plain_dataclass_results` answers a result whose
  body is a plain dataclass (every slyker response model) with the same dump directly.
- Quart asks ``inspect.iscoroutinefunction`` of every hook, view and handler each time it
  calls one (``ensure_async``: ten times for ``GET /health/``, ~4 % of it).
  :func:`cache_ensure_async` remembers the answer per function.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import quart.app
import quart_schema.conversion
import quart_schema.extension
from pydantic import TypeAdapter
from quart import Quart, current_app
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


_quart_schema_convert = quart_schema.conversion.convert_response_return_value
# type -> whether quart-schema's model_dump would dump it with its plain-dataclass branch.
_plain_dataclass_types: dict[type, bool] = {}


def _is_plain_dataclass(kind: type) -> bool:
    plain = _plain_dataclass_types.get(kind)
    if plain is None:
        conversion = quart_schema.conversion
        # The branches model_dump tries before its dataclass one, in its order.
        plain = (
            dataclasses.is_dataclass(kind)
            and conversion.PYDANTIC_INSTALLED
            and not conversion.is_pydantic_dataclass(kind)
            and not conversion.is_typeddict(kind)
            and not issubclass(kind, (conversion.BaseModel, conversion.Struct))
            and not conversion.is_attrs(kind)
        )
        if len(_plain_dataclass_types) >= _ADAPTER_CACHE_SIZE:
            _plain_dataclass_types.clear()
        _plain_dataclass_types[kind] = plain
    return plain


def convert_response_result(result: Any) -> Any:
    """quart-schema's ``convert_response_return_value`` with its answer for the usual case
    given directly: a plain dataclass body, alone or with a status (and no headers), and
    no camelCase or msgspec preference. Anything else goes to quart-schema's own;
    tests/test_fixed_cost.py compares the two."""
    is_tuple = type(result) is tuple
    value = result[0] if is_tuple and result else result
    if not _is_plain_dataclass(type(value)):
        return _quart_schema_convert(result)
    if is_tuple and not (
        (len(result) == 2 and isinstance(result[1], int))
        or (len(result) == 3 and result[2] is None)
    ):
        return _quart_schema_convert(result)
    config = current_app.config
    if config["QUART_SCHEMA_CONVERT_CASING"] or (
        config["QUART_SCHEMA_CONVERSION_PREFERENCE"] == "msgspec"
    ):
        return _quart_schema_convert(result)
    dumped = shared_type_adapter(type(value)).dump_python(
        value, **(config["QUART_SCHEMA_PYDANTIC_DUMP_OPTIONS"] or {})
    )
    return (dumped, *result[1:]) if is_tuple else dumped


def convert_plain_dataclass_results() -> None:
    """quart-schema's make_response wrapper looks the converter up in its extension module
    at each call (quart-schema 0.25); tests/test_fixed_cost.py fails if that stops."""
    quart_schema.extension.convert_response_return_value = convert_response_result  # type: ignore[attr-defined]


class NoSessions(SessionInterface):
    """No Quart session: ``open_session`` answers None, so Quart uses the null session and
    neither reads nor writes a cookie."""

    async def open_session(self, app: Quart, request: Any) -> None:
        return None

    async def save_session(self, app: Quart, session: Any, response: Any) -> None:
        return None


# Hooks, views and handlers are few; bounded anyway (a callable made per request, e.g. an
# ``after_this_request`` closure, must not grow it for ever).
_ENSURE_ASYNC_CACHE_SIZE = 4096


def cache_ensure_async(app: Quart) -> None:
    """``app.ensure_async`` that answers a known coroutine function from a dict: same
    result (the function itself); anything else still goes through Quart's own."""
    quart_ensure_async = app.ensure_async
    coroutine_functions: set[Callable[..., Any]] = set()

    def ensure_async(func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            if func in coroutine_functions:
                return func
        except TypeError:  # unhashable: not cached
            return quart_ensure_async(func)
        if quart.app.iscoroutinefunction(func):  # Quart's own test, per Python version
            if len(coroutine_functions) >= _ENSURE_ASYNC_CACHE_SIZE:
                coroutine_functions.clear()
            coroutine_functions.add(func)
            return func
        return quart_ensure_async(func)

    app.ensure_async = ensure_async  # type: ignore[method-assign,assignment]


def remove_fixed_costs(app: Quart) -> None:
    cache_type_adapters()
    convert_plain_dataclass_results()
    app.session_interface = NoSessions()
    cache_ensure_async(app)
