"""``{count, next, previous, results}`` pages, as the storefront's list calls expect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel, Field
from quart import request
from tortoise.queryset import QuerySet

from slyker.errors import APIError
from slyker.validation import MAX_INT, whole_number

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
M = TypeVar("M")


class PageQuery(BaseModel):
    """``?page=`` and ``?page_size=`` of a list, for its OpenAPI description
    (``document_querystring``); :func:`paginate` reads them."""

    page: int | None = Field(default=None, ge=1, le=MAX_INT)
    page_size: int | None = Field(
        default=None, ge=1, le=MAX_INT, description=f"at most {MAX_PAGE_SIZE} are returned"
    )


def _positive_int(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    number = whole_number(raw)  # ASCII digits up to MAX_INT: an OFFSET both databases take
    if number is None or number < 1:
        message = f"must be a whole number from 1 to {MAX_INT}."
        raise APIError(400, f"{name}: {message}", errors={name: [message]})
    return number


def _page_url(page: int) -> str:
    args = request.args.to_dict()
    args["page"] = str(page)
    return f"{request.base_url}?{urlencode(args)}"


async def paginate(
    queryset: QuerySet[Any], serialise: Callable[[Any], Awaitable[dict[str, Any]] | dict[str, Any]]
) -> dict[str, Any]:
    page = _positive_int("page", 1)
    size = min(_positive_int("page_size", DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE)
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
