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


@dataclass
class Nested:
    sample: Sample
    values: list[int]


async def test_plain_dataclass_results_are_converted_as_quart_schema_does(app: Quart) -> None:
    """The fast path gives quart-schema's own answer, and leaves every other shape to it."""
    from slyker.fixed_cost import _quart_schema_convert, convert_response_result

    results: list[object] = [
        Sample("x"),
        (Sample("x"), 201),
        (Nested(Sample("y"), [1, 2]), 200, None),
        (Sample("x"), {"X-Extra": "1"}),
        (Sample("x"), 200, {"X-Extra": "1"}),
        {"plain": "dict"},
        ([Sample("x")], 200),
        "text",
    ]
    async with app.app_context():
        for result in results:
            assert convert_response_result(result) == _quart_schema_convert(result), result
        app.config["QUART_SCHEMA_CONVERT_CASING"] = True
        try:
            camel = convert_response_result(Nested(Sample("y"), [1]))
            assert camel == _quart_schema_convert(Nested(Sample("y"), [1]))
        finally:
            app.config["QUART_SCHEMA_CONVERT_CASING"] = False


def test_quart_schema_still_converts_through_the_replaced_name(app: Quart) -> None:
    """quart-schema 0.25's make_response wrapper looks the converter up in its extension
    module at each call; if a release stops doing so, fail instead of silently losing it."""
    import quart_schema.extension

    from slyker.fixed_cost import convert_response_result

    assert quart_schema.extension.convert_response_return_value is convert_response_result
    wrapped = quart_schema.extension.wrap_make_response(app.make_response)
    assert "convert_response_return_value" in wrapped.__code__.co_names


async def test_request_blueprints_are_quarts_own(app: Quart) -> None:
    """APIRequest keeps Quart's blueprints answer per matched rule: the same value."""
    from quart import Request, request

    for path in ("/health/", "/no/such/route/", "/openapi.json"):
        async with app.test_request_context(path):
            own = Request.blueprints.fget(request._get_current_object())  # type: ignore[attr-defined]
            assert request.blueprints == own
            assert request.blueprints == own  # asked again: the kept answer
