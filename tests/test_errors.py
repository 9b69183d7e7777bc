"""Every error is the same JSON shape, with a string ``error`` and no leaked internals."""

from __future__ import annotations

from typing import Any

import pytest
from quart import Quart

from slyker.errors import APIError
from tests.contract_app import SECRET_MARKER, create_contract_app


@pytest.fixture
async def app(tmp_path: Any) -> Any:
    application = create_contract_app({"DATA_DIR": str(tmp_path)})

    @application.get("/_probe/api-error/")
    async def api_error() -> None:
        raise APIError(
            409,
            "This cart is already checked out.",
            code="cart_closed",
            errors={"cart": ["closed"]},
            headers={"Retry-After": "3"},
        )

    @application.get("/_probe/key-error/")
    async def key_error() -> None:
        raise KeyError(SECRET_MARKER)

    async with application.test_app():
        yield application


async def test_api_error_shape(app: Quart) -> None:
    response = await app.test_client().get("/_probe/api-error/")
    assert response.status_code == 409
    assert await response.get_json() == {
        "error": "This cart is already checked out.",
        "detail": "This cart is already checked out.",
        "status": 409,
        "code": "cart_closed",
        "errors": {"cart": ["closed"]},
    }
    assert response.headers["Retry-After"] == "3"


async def test_validation_error_names_the_field(app: Quart) -> None:
    response = await app.test_client().post(
        "/_probe/items/", json={"name": "vps", "quantity": "many"}
    )
    assert response.status_code == 400
    body = await response.get_json()
    assert body["error"].startswith("quantity: ")
    assert body["code"] == "invalid"
    assert list(body["errors"]) == ["quantity"]


async def test_bad_json_is_a_400_with_a_plain_message(app: Quart) -> None:
    response = await app.test_client().post(
        "/_probe/items/", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert await response.get_json() == {
        "error": "Request body is not valid JSON.",
        "detail": "Request body is not valid JSON.",
        "status": 400,
        "code": "invalid_json",
    }


@pytest.mark.parametrize("overrides", [{}, {"DEBUG": True}])
async def test_5xx_bodies_never_carry_exception_text(
    tmp_path: Any, overrides: dict[str, Any]
) -> None:
    application = create_contract_app({"DATA_DIR": str(tmp_path), **overrides})
    async with application.test_app():
        for path in ("/_probe/crash/", "/_probe/crash-in-after-request/"):
            response = await application.test_client().get(path)
            text = await response.get_data(as_text=True)
            assert response.status_code == 500
            assert SECRET_MARKER not in text and "Traceback" not in text and "/work" not in text
            assert (await response.get_json())["code"] == "server_error"


async def test_oversized_body_is_413_json(app: Quart) -> None:
    response = await app.test_client().post(
        "/_probe/items/", data=b"x" * 4096, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert (await response.get_json())["code"] == "payload_too_large"
