"""``{count, next, previous, results}`` pages, as the storefront's list calls expect."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel, Field
from quart import request
from tortoise.queryset import QuerySet

from slyker.errors import APIError
from slyker.validation import MAX_INT

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
M = TypeVar("M")
_DIGITS = re.compile("[0-9]+", re.ASCII)


class PageQuery(BaseModel):
    """``?page=`` and ``?page_size=`` of a list, for its OpenAPI description
    (``document_querystring``); :func:`paginate` reads them."""

    page: int | None = Field(
        default=None, ge=1, le=MAX_INT, description="a page past the last one is a 404"
    )
    page_size: int | None = Field(
        default=None, ge=1, le=MAX_INT, description=f"at most {MAX_PAGE_SIZE} are returned"
    )


def _positive_int(name: str, default: int, ceiling: int) -> int:
    """``?name=``: ASCII digits, at least 1, as an int of at most ``ceiling``.

    Never ``int()`` of the raw text: it takes Unicode digits and raises on ``"²"`` or on
    more than 4300 digits. Any number of digits is fine: a page past MAX_INT is past the
    end (404, and no OFFSET a database cannot take), a bigger page size is the largest.
    """
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    digits = raw.lstrip("0") if _DIGITS.fullmatch(raw) else ""
    if not digits:
        message = "must be a positive whole number."
        raise APIError(400, f"{name}: {message}", errors={name: [message]})
    if len(digits) > len(str(ceiling)):
        return ceiling
    return min(int(digits), ceiling)


def _page_url(page: int) -> str:
    args = request.args.to_dict()
    args["page"] = str(page)
    return f"{request.base_url}?{urlencode(args)}"


async def paginate(
    queryset: QuerySet[Any], serialise: Callable[[Any], Awaitable[dict[str, Any]] | dict[str, Any]]
) -> dict[str, Any]:
    page = _positive_int("page", 1, MAX_INT)
    size = _positive_int("page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    count = await queryset.count()
    offset = (page - 1) * size
    if page > 1 and offset >= count:
        raise APIError(404, "Invalid page.", code="not_found")
    rows: Sequence[Any] = await queryset.offset(offset).limit(size)
    results = []
    for row in rows:
        item = serialise(row)
        results.append(await item if isinstance(item, Awaitable) else item)
    return {
        "count": count,
        "next": _page_url(page + 1) if page * size < count else None,
        "previous": _page_url(page - 1) if page > 1 else None,
        "results": results,
    }
