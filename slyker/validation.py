"""Request field pieces shared by blueprints: values the databases can store.

``Annotated[str, Field(max_length=200), NO_NUL]``: text without NUL characters;
``Annotated[int, Field(ge=0, le=MAX_INT)]``: a whole number an INTEGER column holds.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field
from werkzeug.routing import IntegerConverter

# PostgreSQL's INTEGER; a bigger number is a 400, never a database error.
MAX_INT = 2**31 - 1


def _no_nul(value: str) -> str:
    # PostgreSQL refuses NUL in text; SQLite would store it. Refuse it on both alike.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


NO_NUL = AfterValidator(_no_nul)

# A row id in a request body: a bigger number cannot name a row (and would be a database
# error on PostgreSQL).
Id = Annotated[int, Field(ge=1, le=MAX_INT)]


class RowIdConverter(IntegerConverter):
    """``<int:...>`` in routes: at most MAX_INT, so a longer number is a 404 like any
    unknown id instead of a PostgreSQL error."""

    def __init__(self, map: object, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("max", MAX_INT)
        super().__init__(map, *args, **kwargs)  # type: ignore[arg-type]
