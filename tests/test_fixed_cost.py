"""slyker/fixed_cost.py: per-request work of Quart and quart-schema done once (issue 12)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import quart_schema.conversion
from quart import Quart
from quart.sessions import NullSession

from slyker.fixed_cost import cache_type_adapters, shared_type_adapter


@dataclass
class Sample:
    name: str


def test_quart_schema_still_builds_its_adapters_through_the_replaced_name() -> None:
    """quart-schema 0.25 looks ``TypeAdapter`` up in its conversion module at each call; if a
    release stops doing so, the cache would silently stop working: fail instead."""
    cache_type_adapters()
    assert quart_schema.conversion.TypeAdapter is shared_type_adapter
    before = shared_type_adapter(Sample)
    assert quart_schema.conversion.model_dump(Sample(name="x")) == {"name": "x"}
    assert shared_type_adapter(Sample) is before  # one adapter per type
    assert quart_schema.conversion.model_load({"name": "y"}, Sample, ValueError) == Sample("y")


async def test_the_app_has_no_cookie_session(app: Quart) -> None:
    async with app.test_request_context("/health/"):
        from quart import session

        assert isinstance(session._get_current_object(), NullSession)  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError):
            session["user"] = 1
    client = app.test_client()
    response = await client.get("/health/", headers={"Host": "localhost"})
    assert "Set-Cookie" not in response.headers
