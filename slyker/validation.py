"""What a request may carry: values the databases can store, checked once for every endpoint.

- JSON bodies are parsed here (:func:`parse_json_body`, called by the request class): strict
  UTF-8, bounded nesting, no ``NaN``/``Infinity``, and no string (key or value) with NUL or a
  lone surrogate, which PostgreSQL cannot store (SQLite would, and then the other database's
  tests disagree). A bad body is a 400 naming the field, before any view runs.
- Query strings and path segments get the same text check (:func:`refuse_unstorable_query`,
  a ``before_request`` hook).
- Whole numbers: ``Annotated[int, Field(ge=0, le=MAX_INT)]`` (:data:`Id`) in request
  models; ``<int:...>`` routes stop at MAX_INT (:class:`RowIdConverter`), and
  /openapi.json says so (:class:`BoundedOpenAPIProvider`). tests/blueprints/test_inputs.py
  checks that every integer a request takes in /openapi.json is bounded so.
- Client text is never ``int()``-ed directly (:func:`whole_number`).
- Dates: :data:`Day`, :data:`Moment` (1900-01-01 to 2999-12-31). Money: :data:`MAX_MONEY`,
  what a ``numeric(12, 2)`` column holds.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from itertools import repeat
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field
from quart import current_app, request
from quart_schema import OpenAPIProvider
from werkzeug.routing import BaseConverter, IntegerConverter, Rule

from slyker.contracts import ErrorBody, NoContent
from slyker.errors import invalid

# PostgreSQL's INTEGER; a bigger number is a 400, never a database error.
MAX_INT = 2**31 - 1
# numeric(12, 2): the biggest amount a money column (prices, lines, invoice totals) holds.
MAX_MONEY = Decimal("9999999999.99")
# Request bodies are shallow (the deepest, a cart line's service_metadata, is 3 levels);
# a deeper one is refused before parsing, so the parser never recurses far.
MAX_JSON_DEPTH = 32
# Python's int() refuses more than 4300 digits (ValueError); nothing slyker takes is close.
MAX_DIGITS = 18
F = TypeVar("F")

# NUL: PostgreSQL refuses it in text and jsonb. Lone surrogates (U+D800..U+DFFF, from a JSON
# "\ud800" escape): not encodable as UTF-8, so no driver can send them.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_ASCII_DIGITS = re.compile(r"[0-9]+", re.ASCII)


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL characters"
    return "must not contain unpaired surrogate characters"


def _no_unstorable(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# For strings that reach a model another way than a JSON body (a form, a stored value).
NO_NUL = AfterValidator(_no_unstorable)

# Dates a client sets (invoice dates, a promotion's start and end): a date near year 1 or
# 9999 overflows once a day is added or an offset removed (OverflowError, or PostgreSQL's
# "date out of range"); nothing slyker bills is outside these.
EARLIEST_DAY = date(1900, 1, 1)
LATEST_DAY = date(2999, 12, 31)


def _storable_day(value: date) -> date:
    if not EARLIEST_DAY <= value <= LATEST_DAY:
        raise ValueError(f"must be between {EARLIEST_DAY} and {LATEST_DAY}")
    return value


def _storable_moment(value: datetime) -> datetime:
    _storable_day(value.date())  # as given: its UTC offset moves it by less than a day
    return value


Day = Annotated[date, AfterValidator(_storable_day)]
Moment = Annotated[AwareDatetime, AfterValidator(_storable_moment)]

# A row id in a request body: a bigger number cannot name a row (and would be a database
# error on PostgreSQL).
Id = Annotated[int, Field(ge=1, le=MAX_INT)]


def whole_number(raw: object, *, maximum: int = MAX_INT) -> int | None:
    """``raw`` (an int, or a string of ASCII digits) as an int in 0..maximum, else None.

    Never ``int()`` on a client's string directly: it accepts Unicode digits (``"٣"``), and
    ``"²".isdigit()`` is true but ``int("²")`` raises, as does a number of 4300+ digits.
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 0 <= raw <= maximum else None
    if not isinstance(raw, str):
        return None
    if not _ASCII_DIGITS.fullmatch(raw) or len(raw) > MAX_DIGITS:
        return None
    number = int(raw)
    return number if number <= maximum else None


# --- JSON bodies ---------------------------------------------------------------------------


class BadJSON(Exception):
    """The body cannot be parsed as JSON slyker accepts; the message says why."""


def _too_deep(text: str) -> bool:
    depth = 0
    for bracket in _BRACKETS.finditer(_JSON_STRING.sub("", text)):
        if bracket.group() in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        else:
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise BadJSON(f"Request body has {name}, which is not a JSON number.")


def parse_json_body(data: bytes, *, check_text: bool = True) -> Any:
    """Parse a request body: :class:`BadJSON` for anything but UTF-8 JSON of bounded depth,
    and (``check_text``) a 400 naming a string the database cannot store."""
    not_utf8 = BadJSON("Request body is not UTF-8 encoded JSON.")
    # A raw NUL byte is never in JSON text (in a string it is escaped, \u0000); in UTF-16 or
    # UTF-32 every ASCII character has one, and such a body is valid UTF-8 all the same.
    if b"\x00" in data:
        raise not_utf8
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise not_utf8 from None
    if _too_deep(text):
        raise BadJSON(f"Request body is nested more than {MAX_JSON_DEPTH} levels deep.")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except BadJSON:
        raise
    except RecursionError:  # unreachable after the depth check; never a 500 all the same
        raise BadJSON(f"Request body is nested more than {MAX_JSON_DEPTH} levels deep.") from None
    except ValueError as error:  # JSONDecodeError, or an integer of more than 4300 digits
        if isinstance(error, json.JSONDecodeError):
            raise BadJSON("Request body is not valid JSON.") from None
        raise BadJSON("Request body has a number too long to read.") from None
    if check_text:
        refuse_unstorable_json(value, text)
    return value


def _first_unstorable(value: Any) -> tuple[str, str] | None:
    """The dotted path (``items.0.description``) and the problem of the first string, key
    or value, in document order, that the database cannot store; None if there is none."""
    # Paths are linked pairs, joined only for the string that is reported.
    stack: list[tuple[Any, Any]] = [(value, None)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return _joined(where), problem
        elif isinstance(item, dict):
            for key in item:
                problem = text_problem(key)
                if problem is not None:
                    return _joined((where, key)), problem
            keys = zip(repeat(where), reversed(item), strict=False)  # repeat() never ends
            stack.extend(zip(reversed(item.values()), keys, strict=False))
        elif isinstance(item, list):
            indexes = zip(repeat(where), range(len(item) - 1, -1, -1), strict=False)
            stack.extend(zip(reversed(item), indexes, strict=False))
    return None


def _joined(where: Any) -> str:
    parts: list[str] = []
    while where is not None:
        where, key = where
        parts.append(str(key))
    return ".".join(reversed(parts))


_CHECKS_OWN_TEXT = "_slyker_checks_own_text"


def checks_own_text(func: F) -> F:
    """For an endpoint that stores none of its body's text and checks every string itself,
    with better answers (the domain search names each bad name, all at once): its body's
    strings are not refused here. Put it right under the route decorator."""
    setattr(func, _CHECKS_OWN_TEXT, True)
    return func


def view_checks_own_text() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, _CHECKS_OWN_TEXT, False))


def refuse_unstorable_json(value: Any, text: str | None = None) -> None:
    """A 400 naming the first field whose text (or key) the database cannot store.

    With the body's ``text``, the walk happens only when the text has an escape that can
    make such a string (``\\u0000``, ``\\udXXX``): raw NUL bytes and raw surrogates are
    refused before parsing, so nothing else can.
    """
    if text is not None and not _RISKY_ESCAPE.search(text):
        return
    found = _first_unstorable(value)
    if found is not None:
        field, problem = found
        raise invalid(_printable(field) or "non_field_errors", problem)


def _printable(field: str) -> str:
    # The field name is echoed in the error: without the characters that made it bad.
    return _UNSTORABLE.sub("\ufffd", field)


# --- query strings and paths --------------------------------------------------------------


async def refuse_unstorable_query() -> None:
    """``before_request``: query parameters (names and values) and path segments must be
    text the database can store, like every JSON string; otherwise a 400 naming them."""
    if request.query_string:  # no query: no MultiDict built (issue 12)
        for name, value in request.args.items(multi=True):
            problem = text_problem(name) or text_problem(value)
            if problem is not None:
                raise invalid(_printable(name), problem)
    problem = text_problem(request.path)
    if problem is not None:
        raise invalid("path", problem)


def _query_choice(choices: type[StrEnum]) -> Any:
    allowed = ", ".join(choice.value for choice in choices)

    def check(raw: Any) -> Any:
        value = raw[0] if isinstance(raw, list) and raw else raw  # a repeated one: the first
        if value is None or value == "":
            return None  # ``?status=``: no filter
        if value not in {choice.value for choice in choices}:
            raise ValueError(f"must be one of {allowed}.")
        return value

    return check


def query_choice(choices: type[StrEnum]) -> BeforeValidator:
    """``?status=`` and the like in a query-string model: one of ``choices`` (a 400
    "status: must be one of ...", listing them), empty or absent for no filter."""
    return BeforeValidator(_query_choice(choices))


class RowIdConverter(IntegerConverter):
    """``<int:...>`` in routes: at most MAX_INT, so a longer number is a 404 like any
    unknown id instead of a PostgreSQL error."""

    def __init__(self, map: object, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("max", MAX_INT)
        super().__init__(map, *args, **kwargs)  # type: ignore[arg-type]


class BoundedOpenAPIProvider(OpenAPIProvider):
    """/openapi.json says what ``<int:...>`` takes (1..MAX_INT for a row id), so clients and
    the fuzz test know the bounds a path id has, like a body's. It also declares, for every
    operation, the one error body (:class:`slyker.contracts.ErrorBody`) for 4xx and 5xx
    answers, and shows a 204 (:class:`slyker.contracts.NoContent`) without a body."""

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        if isinstance(converter, IntegerConverter):
            if converter.min is not None:
                parameter["schema"]["minimum"] = converter.min
            elif not converter.signed:
                parameter["schema"]["minimum"] = 0
            if converter.max is not None:
                parameter["schema"]["maximum"] = converter.max
        return parameter

    def build_response_object(
        self, model: Any, headers_model: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if model is NoContent:
            return {"description": "No Content"}, {}
        return super().build_response_object(model, headers_model)  # type: ignore[no-any-return]

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        error, definitions = super().build_response_object(ErrorBody, None)
        components.update(definitions)
        components[ErrorBody.__name__] = error["content"]["application/json"]["schema"]
        error["content"]["application/json"]["schema"] = {
            "$ref": f"#/components/schemas/{ErrorBody.__name__}"
        }
        error["description"] = "slyker's JSON error body"
        for operations in paths.values():
            for operation in operations.values():
                for statuses in ("4XX", "5XX"):  # an explicit one (503 of /ready/) wins
                    operation["responses"].setdefault(statuses, error)
        return paths, components
