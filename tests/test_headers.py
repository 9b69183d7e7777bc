"""Headers of every response (nosniff), of token responses (no-store), and the docs pages
(served only with API_DOCS: they load unpinned scripts from a CDN)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from quart import Quart

from tests.api import API, PASSWORD, make_user
from tests.conftest import prepare_database

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")
DOCS = ("/openapi.json", "/docs", "/redocs", "/scalar")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/health/"), ("GET", "/nope/"), ("GET", "/health"), ("POST", "/api/token/")],
)
async def test_every_response_says_nosniff(app: Quart, method: str, path: str) -> None:
    response = await app.test_client().open(path, method=method, json={})
    assert response.headers.getlist("X-Content-Type-Options") == ["nosniff"]


async def test_token_responses_are_not_cached(app: Quart) -> None:
    await make_user(app, "user@example.com")
    api = API(app)
    login = await api.post("/api/token/", {"email": "user@example.com", "password": PASSWORD})
    assert login.status == 200
    assert login.headers["Cache-Control"] == "no-store"
    refreshed = await api.post("/api/token/refresh/", {"refresh": login.body["refresh"]})
    assert refreshed.status == 200 and refreshed.headers["Cache-Control"] == "no-store"
    registered = await api.post(
        "/api/accounts/register/", {"email": "new@example.com", "password": "Unusual-pass-42"}
    )
    assert registered.status == 201 and registered.headers["Cache-Control"] == "no-store"
    me = await api.get("/api/accounts/users/me/", token=login.body["access"])
    assert me.status == 200 and me.headers["Cache-Control"] == "no-store"
    failed = await api.post("/api/token/", {"email": "user@example.com", "password": "wrong"})
    assert failed.status == 401 and failed.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", DOCS)
async def test_the_docs_are_off_by_default_in_production(app: Quart, path: str) -> None:
    response = await app.test_client().get(path)
    assert response.status_code == 404
    assert (await response.get_json())["code"] == "not_found"


@pytest.mark.parametrize(
    ("overrides", "served"),
    [
        ({"API_DOCS": True}, True),
        ({"DEBUG": True}, True),
        ({"DEBUG": True, "API_DOCS": False}, False),
    ],
)
async def test_the_docs_are_served_when_enabled(
    app_factory: Callable[..., Quart], overrides: dict[str, bool], served: bool
) -> None:
    app = app_factory(**overrides)
    async with app.test_app():
        await prepare_database(app)
        for path in DOCS:
            response = await app.test_client().get(path)
            assert (response.status_code == 200) is served, path
        if served:
            spec = await (await app.test_client().get("/openapi.json")).get_json()
            assert "/api/token/" in spec["paths"]
