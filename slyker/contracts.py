"""Building blocks of the declared response contracts (``validate_response`` models).

Response models are built from rows (``Model.from_row(...)``) and serialise to exactly the
JSON the storefront reads: money as ``"12.50"`` strings, dates and moments as ISO 8601
strings (``isoformat()``), ``null`` where a value is absent. /openapi.json describes them,
and every 4xx/5xx answer as :class:`ErrorBody` (slyker.errors shapes them).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, Field, PlainSerializer, RootModel, WithJsonSchema

from slyker.money import as_string


def _iso(value: date | datetime) -> str:
    return value.isoformat()


# "12.50": the storefront reads prices and totals as strings (exact to the cent).
Money = Annotated[
    Decimal,
    PlainSerializer(as_string, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^-?\d+\.\d{2}$", "examples": ["12.50"]}),
]
# ``isoformat()``: "2026-05-01T10:00:00.123456+00:00" (what the storefront parses).
IsoDateTime = Annotated[
    datetime,
    PlainSerializer(_iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
IsoDate = Annotated[
    date,
    PlainSerializer(_iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date"}),
]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """``{count, next, previous, results}``: one page of a list (slyker.pagination)."""

    count: int
    next: str | None
    previous: str | None
    results: list[T]


class NoContent(RootModel[Literal[""]]):
    """204 No Content: no body. (``validate_response(NoContent, 204)``; the view returns
    ``"", 204``; /openapi.json shows the status without a body.)"""


NO_CONTENT = NoContent("")


class Detail(BaseModel):
    detail: str


class ErrorBody(BaseModel):
    """Every error slyker answers (slyker.errors.error_body): ``error`` and ``detail`` are
    the same message, ``code`` a stable name a client may branch on, and ``errors`` names
    the fields at fault (validation errors only)."""

    error: str
    detail: str
    status: int
    code: str
    errors: dict[str, list[str]] | None = Field(
        default=None, description="field: messages (only for validation errors)"
    )
