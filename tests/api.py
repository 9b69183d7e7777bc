"""Helpers for blueprint tests: call the API the way the storefront does, make users, seed
the demo catalog. Every test gets a fresh database from the ``app`` fixture (conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from quart import Quart
from tortoise.context import TortoiseContext

from slyker.database import EXTENSION_KEY as DATABASE_KEY
from slyker.database import make_current
from slyker.models.accounts import Role, User
from slyker.services.accounts import create_user
from slyker.services.demo_catalog import load_demo_catalog

FRONTEND_ORIGIN = "http://localhost:3000"  # a development default of CORS_ALLOWED_ORIGINS
PASSWORD = "correct horse battery"


@contextmanager
def db(app: Quart) -> Iterator[TortoiseContext]:
    """Make the app's database current, for direct model access in a test.

    It stays current in the test's task after the block (until another ``db``): the app
    makes it current per request the same way (:func:`slyker.database.make_current`), and
    leaving it with Tortoise's ``__exit__`` would reset a token a concurrent request left on
    the shared context object."""
    context = app.extensions[DATABASE_KEY]
    make_current(context)
    yield context


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any

    @property
    def error(self) -> str:
        return str(self.body["error"])


class API:
    """Credentialed, JSON, from the storefront's origin: like the real front-end's fetch."""

    def __init__(
        self, app: Quart, origin: str | None = FRONTEND_ORIGIN, cookies: bool = True
    ) -> None:
        self.app = app
        # Keeps cookies between calls like a browser; cookies=False: third-party cookies blocked.
        self.client = app.test_client(use_cookies=cookies)
        self.origin = origin

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        request_headers = dict(headers or {})
        if self.origin:
            request_headers.setdefault("Origin", self.origin)
        if token:
            request_headers["Authorization"] = f"Bearer {token}"
        response = await self.client.open(path, method=method, json=json, headers=request_headers)
        data = await response.get_data()
        body = await response.get_json() if data else None
        return Reply(response.status_code, body, response.headers)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> Reply:
        return await self.call("POST", path, json, **kwargs)

    async def login(self, email: str, password: str = PASSWORD) -> str:
        reply = await self.post("/api/token/", {"email": email, "password": password})
        assert reply.status == 200, reply.body
        return str(reply.body["access"])


def assert_error(reply: Reply, status: int, code: str, starts: str = "") -> None:
    """The one error shape: ``error`` (a non-empty string, starting with ``starts``) ==
    ``detail``, ``status`` and ``code``."""
    assert reply.status == status, reply.body
    assert isinstance(reply.body, dict), reply.body
    assert isinstance(reply.body["error"], str) and reply.body["error"], reply.body
    assert reply.body["detail"] == reply.body["error"], reply.body
    assert reply.body["status"] == status, reply.body
    assert reply.body["code"] == code, reply.body
    assert reply.body["error"].startswith(starts), reply.body


async def token_for(app: Quart, api: API, email: str, role: Role = Role.CLIENT) -> str:
    """A new user's access token."""
    await make_user(app, email, role)
    return await api.login(email)


async def make_user(
    app: Quart, email: str, role: Role = Role.CLIENT, password: str = PASSWORD
) -> User:
    with db(app):
        return await create_user(email, password, role, first_name="Test", last_name=role.value)


async def seed_catalog(app: Quart) -> None:
    """The demo catalog of the CLI: 6 hosting products (id 1 "Starter Shared": monthly 2.99,
    annual 29.99; id 3 "VPS 2 GB": monthly 12.00 + setup 10.00, no biennial), 4 TLDs (id 1
    ".com": 1yr 12.99, 2yr 25.49, privacy 4.99/yr, transfer 12.99), 1 service (SSL 39.00)
    and the WELCOME10 coupon (10 %, minimum order 10.00)."""
    with db(app):
        assert await load_demo_catalog()
