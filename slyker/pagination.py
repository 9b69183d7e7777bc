"""``{count, next, previous, results}`` pages, as the storefront's list calls expect."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel, BeforeValidator, Field, ValidationInfo
from quart import request
from tortoise.queryset import QuerySet

from slyker.errors import APIError
from slyker.validation import MAX_INT

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
M = TypeVar("M")
_DIGITS = re.compile("[0-9]+", re.ASCII)


def first_value(value: Any) -> Any:
    """A repeated query parameter (``?page=1&page=2``) counts with its first value, as
    ``request.args.get`` reads it (quart-schema hands the model a list)."""
    return value[0] if isinstance(value, list) and value else value


def _whole_number(raw: Any, name: str, ceiling: int) -> int | None:
    """``?name=``: ASCII digits, at least 1, as an int of at most ``ceiling``; None when
    absent or empty.

    Never ``int()`` of the raw text: it takes Unicode digits and raises on ``"²"`` or on
    more than 4300 digits. Any number of digits is fine: a page past MAX_INT is past the
    end (404, and no OFFSET a database cannot take), a bigger page size is the largest.
    """
    raw = first_value(raw)
    if raw is None or raw == "":
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):  # a model built in code
        raw = str(raw)
    digits = raw.lstrip("0") if isinstance(raw, str) and _DIGITS.fullmatch(raw) else ""
    if not digits:
        message = "must be a positive whole number."
        # The answer lists have always given (code bad_request), not a pydantic message.
        raise APIError(400, f"{name}: {message}", errors={name: [message]})
    if len(digits) > len(str(ceiling)):
        return ceiling
    return min(int(digits), ceiling)


def _page_number(raw: Any, info: ValidationInfo) -> int | None:
    return _whole_number(raw, info.field_name or "page", MAX_INT)


class PageQuery(BaseModel):
    """``?page=`` and ``?page_size=`` of a list (``validate_querystring``): ASCII digits of
    any length; a page past the end is a 404, a page size above 100 is 100."""

    page: Annotated[int | None, BeforeValidator(_page_number)] = Field(
        default=None, ge=1, le=MAX_INT, description="a page past the last one is a 404"
    )
    page_size: Annotated[int | None, BeforeValidator(_page_number)] = Field(
        default=None, ge=1, le=MAX_INT, description=f"at most {MAX_PAGE_SIZE} are returned"
    )


def _page_url(page: int) -> str:
    args = request.args.to_dict()
    args["page"] = str(page)
    return f"{request.base_url}?{urlencode(args)}"


def _page_and_size(query: PageQuery | None) -> tuple[int, int]:
    if query is None:  # a list without a declared query string: read it here
        query = PageQuery.model_validate(
            {name: request.args.get(name) for name in ("page", "page_size")}
        )
    return query.page or 1, min(query.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def page_of(items: Sequence[M], query: PageQuery | None) -> dict[str, Any]:
    """The page of an in-memory list (a cached catalog), as :func:`paginate` answers."""
    page, size = _page_and_size(query)
    offset = (page - 1) * size
    count = len(items)
    if page > 1 and offset >= count:
        raise APIError(404, "Invalid page.", code="not_found")
    return _page(page, size, count, list(items[offset : offset + size]))


def _page(page: int, size: int, count: int, results: list[Any]) -> dict[str, Any]:
    return {
        "count": count,
        "next": _page_url(page + 1) if page * size < count else None,
        "previous": _page_url(page - 1) if page > 1 else None,
        "results": results,
    }


async def paginate_rows(
    queryset: QuerySet[Any],
    serialise_rows: Callable[[list[Any]], Awaitable[list[Any]]],
    query: PageQuery | None = None,
) -> dict[str, Any]:
    """One page of ``queryset``; ``serialise_rows`` gets the page's rows at once, so that
    what they refer to is fetched in one query per kind (never one per row)."""
    page, size = _page_and_size(query)
    count = await queryset.count()
    offset = (page - 1) * size
    if page > 1 and offset >= count:
        raise APIError(404, "Invalid page.", code="not_found")
    rows: list[Any] = list(await queryset.offset(offset).limit(size))
    return _page(page, size, count, await serialise_rows(rows))


async def paginate(
    queryset: QuerySet[Any],
    serialise: Callable[[Any], Awaitable[Any] | Any],
    query: PageQuery | None = None,
) -> dict[str, Any]:
    """One page of ``queryset``, each row through ``serialise`` (which must not query:
    ``select_related`` what it reads, or use :func:`paginate_rows`)."""

    async def each(rows: list[Any]) -> list[Any]:
        results = []
        for row in rows:
            item = serialise(row)
            results.append(await item if isinstance(item, Awaitable) else item)
        return results

    return await paginate_rows(queryset, each, query)
