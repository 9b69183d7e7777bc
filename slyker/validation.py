"""Request field pieces shared by blueprints: values the databases can store.

``Annotated[str, Field(max_length=200), NO_NUL]``: text without NUL characters;
``Annotated[int, Field(ge=0, le=MAX_INT)]``: a whole number an INTEGER column holds.
"""

from __future__ import annotations

from pydantic import AfterValidator

# PostgreSQL's INTEGER; a bigger number is a 400, never a database error.
MAX_INT = 2**31 - 1


def _no_nul(value: str) -> str:
    # PostgreSQL refuses NUL in text; SQLite would store it. Refuse it on both alike.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


NO_NUL = AfterValidator(_no_nul)
