"""Accounts: registration, JWT login / refresh rotation / logout, the current user, rate
limits, password storage and the create-user CLI. Runs on SQLite, and on PostgreSQL with
SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher
from quart import Quart

from slyker.blueprints.accounts import (
    RESET_REQUESTED,
    ProfileFields,
    ProfileUpdate,
    Registration,
)
from slyker.models.accounts import ClientProfile, PasswordResetToken, RefreshToken, Role, User
from slyker.services.accounts import NAME_FIELDS, PROFILE_FIELDS
from tests.api import API, FRONTEND_ORIGIN, PASSWORD, Reply, assert_error, db, make_user
from tests.conftest import REDIS_URL, TEST_SECRET_KEY, prepare_database
from tests.mail_server import SMTPServer, silent_server, smtp_server

REGISTER = "/api/accounts/register/"
TOKEN = "/api/token/"
REFRESH = "/api/token/refresh/"
LOGOUT = "/api/token/logout/"
ME = "/api/accounts/users/me/"
OTHER_KEY = "another-secret-key-0123456789abcdef0123456789"
CLIENT_EMAIL = "client@example.com"
NEW_USER = {
    "email": "New.User@Example.COM",
    "password": "s3cret-passw0rd",
    "first_name": "Tariro",
    "last_name": "Moyo",
    "company": "Moyo Designs",
    "phone": "+263 77 000 0000",
}


# --- helpers ------------------------------------------------------------------------------


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, TEST_SECRET_KEY, algorithms=["HS256"])  # type: ignore[no-any-return]


def sign(claims: dict[str, Any], key: str = TEST_SECRET_KEY) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def assert_token_refused(reply: Reply) -> None:
    assert_error(reply, 401, "token_not_valid")
    assert reply.headers.get("WWW-Authenticate") == "Bearer"


async def login_pair(api: API, email: str = CLIENT_EMAIL, password: str = PASSWORD) -> Any:
    reply = await api.post(TOKEN, {"email": email, "password": password})
    assert reply.status == 200, reply.body
    return reply.body


async def client_pair(app: Quart, api: API, email: str = CLIENT_EMAIL) -> Any:
    await make_user(app, email)
    return await login_pair(api, email)


async def post_from(api: API, path: str, json: Any, address: str) -> Reply:
    """A POST from another peer address (the ASGI scope's ``client``)."""
    response = await api.client.post(
        path,
        json=json,
        headers={"Origin": FRONTEND_ORIGIN},
        scope_base={"client": (address, 40000)},
    )
    return Reply(response.status_code, await response.get_json(), response.headers)


async def post_raw(api: API, path: str, data: str, content_type: str) -> Reply:
    response = await api.client.post(
        path, data=data, headers={"Origin": FRONTEND_ORIGIN, "Content-Type": content_type}
    )
    return Reply(response.status_code, await response.get_json(), response.headers)


async def family_rows(app: Quart, refresh: str) -> list[RefreshToken]:
    jti = claims_of(refresh)["jti"]
    with db(app):
        record = await RefreshToken.get(jti=jti)
        return await RefreshToken.filter(family=record.family)


def assert_cors(reply: Reply) -> None:
    assert reply.headers.getlist("Access-Control-Allow-Origin") == [FRONTEND_ORIGIN]
    assert reply.headers.get("Access-Control-Allow-Credentials") == "true"


# --- registration -------------------------------------------------------------------------


async def test_register_creates_a_client_with_profile_and_tokens(app: Quart) -> None:
    api = API(app)
    reply = await api.post(REGISTER, NEW_USER)

    assert reply.status == 201, reply.body
    assert set(reply.body) == {"user", "access", "refresh"}
    user = reply.body["user"]
    assert isinstance(user["id"], int)
    assert user["email"] == "new.user@example.com"
    assert user["first_name"] == "Tariro"
    assert user["last_name"] == "Moyo"
    assert user["user_type"] == "client"
    assert user["is_staff"] is False
    assert user["company"] == "Moyo Designs"
    assert user["phone"] == "+263 77 000 0000"
    assert_cors(reply)

    with db(app):
        stored = await User.get(id=user["id"])
        profile = await ClientProfile.get(user_id=user["id"])
    assert stored.email == "new.user@example.com"
    assert stored.user_type is Role.CLIENT
    assert stored.is_active is True
    assert (profile.company, profile.phone) == ("Moyo Designs", "+263 77 000 0000")

    # The tokens returned are live: the access token identifies the new user.
    assert claims_of(reply.body["access"])["sub"] == str(user["id"])
    me = await api.get(ME, token=reply.body["access"])
    assert me.status == 200, me.body
    assert me.body["id"] == user["id"]
    refreshed = await api.post(REFRESH, {"refresh": reply.body["refresh"]})
    assert refreshed.status == 200, refreshed.body


async def test_register_needs_only_email_and_password(app: Quart) -> None:
    reply = await API(app).post(REGISTER, {"email": "min@example.com", "password": "k9#mQ2vL"})
    assert reply.status == 201, reply.body
    user = reply.body["user"]
    assert (user["first_name"], user["last_name"], user["company"]) == ("", "", "")
    with db(app):
        assert await ClientProfile.filter(user_id=user["id"]).count() == 1


async def test_register_duplicate_email_in_any_case_is_409(app: Quart) -> None:
    api = API(app)
    assert (await api.post(REGISTER, NEW_USER)).status == 201
    for email in ("new.user@example.com", "NEW.USER@EXAMPLE.COM", NEW_USER["email"]):
        reply = await api.post(REGISTER, {**NEW_USER, "email": email})
        assert reply.status == 409, (email, reply.body)
        assert_error(reply, 409, "email_taken")
        assert reply.error.startswith("email: ")
        assert reply.body["errors"] == {"email": ["A user with this e-mail already exists."]}
        assert_cors(reply)
    with db(app):
        assert await User.all().count() == 1
        assert await ClientProfile.all().count() == 1


async def test_concurrent_duplicate_registrations_one_wins(app: Quart) -> None:
    api = API(app)
    body = {"email": "race@example.com", "password": "k9#mQ2vL"}
    replies = await asyncio.gather(api.post(REGISTER, body), api.post(REGISTER, body))
    assert sorted(r.status for r in replies) == [201, 409], [r.body for r in replies]
    with db(app):
        assert await User.filter(email="race@example.com").count() == 1
        assert await ClientProfile.all().count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": "k9#mQ2vL"}, "email"),
        ({"email": "", "password": "k9#mQ2vL"}, "email"),
        ({"password": "k9#mQ2vL"}, "email"),
        ({"email": "a@example.com", "password": "1234567"}, "password"),
        ({"email": "a@example.com"}, "password"),
        ({"email": "a@example.com", "password": "x" * 129}, "password"),
        ({"email": "a@example.com", "password": "k9#mQ2vL", "first_name": "x" * 151}, "first_name"),
    ],
)
async def test_register_invalid_input_is_400_naming_the_field(
    app: Quart, body: dict[str, Any], field: str
) -> None:
    reply = await API(app).post(REGISTER, body)
    assert_error(reply, 400, "invalid")
    assert list(reply.body["errors"]) == [field]
    assert all(isinstance(m, str) for m in reply.body["errors"][field])
    assert reply.error.startswith(f"{field}: ")
    assert reply.error == f"{field}: {reply.body['errors'][field][0]}"
    with db(app):
        assert await User.all().count() == 0


async def test_password_is_stored_hashed_with_argon2(app: Quart) -> None:
    reply = await API(app).post(REGISTER, NEW_USER)
    assert reply.status == 201, reply.body
    with db(app):
        stored = await User.get(id=reply.body["user"]["id"])
    assert stored.password_hash.startswith("$argon2")
    assert NEW_USER["password"] not in stored.password_hash
    assert PasswordHasher().verify(stored.password_hash, NEW_USER["password"])
    assert "password" not in reply.body["user"]
    assert "password_hash" not in reply.body["user"]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("email=a%40example.com&password=12345678", "application/x-www-form-urlencoded"),
        ('{"email": "a@example.com", "password": "k9#mQ2vL"}', "text/plain"),
    ],
)
async def test_non_json_body_is_415(app: Quart, data: str, content_type: str) -> None:
    api = API(app)
    for path in (REGISTER, TOKEN, REFRESH, LOGOUT):
        reply = await post_raw(api, path, data, content_type)
        assert_error(reply, 415, "unsupported_media_type")
        assert_cors(reply)
    with db(app):
        assert await User.all().count() == 0


@pytest.mark.parametrize("path", [REGISTER, TOKEN, REFRESH])
async def test_malformed_json_is_400(app: Quart, path: str) -> None:
    reply = await post_raw(API(app), path, '{"email": ', "application/json")
    assert_error(reply, 400, "invalid_json")


# --- login --------------------------------------------------------------------------------


async def test_login_returns_an_access_and_refresh_pair(app: Quart) -> None:
    user = await make_user(app, CLIENT_EMAIL)
    api = API(app)
    reply = await api.post(TOKEN, {"email": CLIENT_EMAIL, "password": PASSWORD})

    assert reply.status == 200, reply.body
    assert set(reply.body) == {"access", "refresh"}
    assert_cors(reply)
    access, refresh = claims_of(reply.body["access"]), claims_of(reply.body["refresh"])
    now = datetime.now(UTC).timestamp()
    assert access["type"] == "access"
    assert access["sub"] == str(user.id)
    assert access["role"] == "client"
    assert abs(access["iat"] - now) < 60
    assert access["exp"] - access["iat"] == 120 * 60
    assert refresh["type"] == "refresh"
    assert refresh["sub"] == str(user.id)
    assert refresh["exp"] - refresh["iat"] == 7 * 24 * 60 * 60
    assert access["jti"] != refresh["jti"]

    with db(app):
        record = await RefreshToken.get(jti=refresh["jti"])
        logged_in = await User.get(id=user.id)
    assert record.user_id == user.id  # type: ignore[attr-defined]
    assert record.used_at is None and record.revoked_at is None
    assert abs(record.expires_at.timestamp() - refresh["exp"]) < 2
    assert logged_in.last_login is not None


async def test_login_email_is_case_and_space_insensitive(app: Quart) -> None:
    await make_user(app, CLIENT_EMAIL)
    reply = await API(app).post(TOKEN, {"email": "  Client@EXAMPLE.com ", "password": PASSWORD})
    assert reply.status == 200, reply.body


async def test_access_token_lifetime_setting(app_factory: Callable[..., Quart]) -> None:
    application = app_factory(JWT_ACCESS_TOKEN_LIFETIME=5, JWT_REFRESH_TOKEN_LIFETIME=60)
    async with application.test_app():
        await prepare_database(application)
        await make_user(application, CLIENT_EMAIL)
        pair = await login_pair(API(application))
    access, refresh = claims_of(pair["access"]), claims_of(pair["refresh"])
    assert access["exp"] - access["iat"] == 5 * 60
    assert refresh["exp"] - refresh["iat"] == 60 * 60


async def test_wrong_password_and_unknown_email_get_the_same_401(app: Quart) -> None:
    await make_user(app, CLIENT_EMAIL)
    api = API(app)
    wrong = await api.post(TOKEN, {"email": CLIENT_EMAIL, "password": "wrong password"})
    unknown = await api.post(TOKEN, {"email": "nobody@example.com", "password": PASSWORD})

    assert_error(wrong, 401, "invalid_credentials")
    assert_error(unknown, 401, "invalid_credentials")
    assert wrong.body == unknown.body
    assert_cors(wrong)
    with db(app):
        assert await RefreshToken.all().count() == 0


async def test_inactive_user_cannot_log_in(app: Quart) -> None:
    user = await make_user(app, CLIENT_EMAIL)
    with db(app):
        await User.filter(id=user.id).update(is_active=False)
    reply = await API(app).post(TOKEN, {"email": CLIENT_EMAIL, "password": PASSWORD})
    assert_error(reply, 401, "invalid_credentials")
    assert reply.error == "No active account found with the given credentials."


@pytest.mark.parametrize(
    ("body", "field"),
    [({"password": PASSWORD}, "email"), ({"email": CLIENT_EMAIL}, "password")],
)
async def test_login_missing_field_is_400(app: Quart, body: dict[str, str], field: str) -> None:
    reply = await API(app).post(TOKEN, body)
    assert_error(reply, 400, "invalid")
    assert field in reply.body["errors"]
    assert reply.error.startswith(f"{field}: ")


# --- refresh rotation ---------------------------------------------------------------------


async def test_refresh_rotates_the_pair(app: Quart) -> None:
    api = API(app)
    first = await client_pair(app, api)
    second_reply = await api.post(REFRESH, {"refresh": first["refresh"]})

    assert second_reply.status == 200, second_reply.body
    assert_cors(second_reply)
    second = second_reply.body
    assert set(second) == {"access", "refresh"}
    assert second["refresh"] != first["refresh"]
    assert second["access"] != first["access"]
    assert claims_of(second["access"])["type"] == "access"
    assert claims_of(second["refresh"])["sub"] == claims_of(first["refresh"])["sub"]
    assert (await api.get(ME, token=second["access"])).status == 200

    # The new refresh token works in turn; each is recorded in the same family.
    third = await api.post(REFRESH, {"refresh": second["refresh"]})
    assert third.status == 200, third.body
    rows = {row.jti: row for row in await family_rows(app, first["refresh"])}
    used = {
        claims_of(token)["jti"]: rows[claims_of(token)["jti"]].used_at is not None
        for token in (first["refresh"], second["refresh"], third.body["refresh"])
    }
    assert len(rows) == 3
    assert list(used.values()) == [True, True, False]
    assert all(row.revoked_at is None for row in rows.values())


@pytest.fixture
async def strict_app(app_factory: Callable[..., Quart]) -> AsyncIterator[Quart]:
    """No reuse grace window: every second use of a refresh token is a reuse."""
    application = app_factory(JWT_REFRESH_REUSE_GRACE_SECONDS=0)
    async with application.test_app():
        await prepare_database(application)
        yield application


async def test_reusing_a_refresh_token_revokes_its_family(strict_app: Quart) -> None:
    app = strict_app
    api = API(app)
    first = await client_pair(app, api)
    other_session = await login_pair(api)  # another login: another family
    second = (await api.post(REFRESH, {"refresh": first["refresh"]})).body

    replay = await api.post(REFRESH, {"refresh": first["refresh"]})
    assert_token_refused(replay)
    assert_cors(replay)
    # The thief or the user: whoever holds the successor is logged out too.
    assert_token_refused(await api.post(REFRESH, {"refresh": second["refresh"]}))

    rows = await family_rows(app, first["refresh"])
    assert len(rows) == 2
    assert all(row.revoked_at is not None for row in rows)
    # Other families are untouched.
    assert (await api.post(REFRESH, {"refresh": other_session["refresh"]})).status == 200


async def test_without_grace_concurrent_refreshes_of_one_token_have_one_winner(
    strict_app: Quart,
) -> None:
    app = strict_app
    api = API(app)
    pair = await client_pair(app, api)
    replies = await asyncio.gather(
        *(api.post(REFRESH, {"refresh": pair["refresh"]}) for _ in range(10))
    )
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [200] + [401] * 9, [reply.body for reply in replies]
    for reply in replies:
        if reply.status == 401:
            assert_token_refused(reply)
    with db(app):
        assert await RefreshToken.filter(jti=claims_of(pair["refresh"])["jti"]).count() == 1
    rows = await family_rows(app, pair["refresh"])
    assert len(rows) == 2  # the token and the winner's successor, both revoked
    assert all(row.revoked_at is not None for row in rows)


# --- the reuse grace window (two tabs refreshing at once) -----------------------------------


async def refresh_concurrently(api: API, refresh: str, times: int = 10) -> list[Reply]:
    calls = (api.post(REFRESH, {"refresh": refresh}) for _ in range(times))
    return list(await asyncio.gather(*calls))


async def assert_pair_works(api: API, pair: dict[str, str]) -> dict[str, str]:
    """The access token identifies the user and the refresh token rotates: the next pair."""
    assert (await api.get(ME, token=pair["access"])).status == 200
    reply = await api.post(REFRESH, {"refresh": pair["refresh"]})
    assert reply.status == 200, reply.body
    return reply.body  # type: ignore[no-any-return]


async def age_rotation(app: Quart, refresh: str, seconds: float) -> None:
    """Pretend the token was rotated ``seconds`` ago."""
    with db(app):
        await RefreshToken.filter(jti=claims_of(refresh)["jti"]).update(
            used_at=datetime.now(UTC) - timedelta(seconds=seconds)
        )


async def test_ten_concurrent_refreshes_within_the_grace_window_all_get_working_pairs(
    app: Quart,
) -> None:
    """Two tabs (or the dashboard's two refresh paths) refreshing with one token at once."""
    api = API(app)
    pair = await client_pair(app, api)
    replies = await refresh_concurrently(api, pair["refresh"])

    assert [reply.status for reply in replies] == [200] * 10, [r.body for r in replies]
    pairs = [reply.body for reply in replies]
    assert len({p["refresh"] for p in pairs}) == 10  # each tab its own sibling
    for sibling in pairs:
        assert claims_of(sibling["refresh"])["sub"] == claims_of(pair["refresh"])["sub"]
        assert_cors(replies[0])
    # Every pair works, and keeps working: each sibling rotates on its own branch.
    nexts = [await assert_pair_works(api, sibling) for sibling in pairs]
    for following in nexts:
        assert (await api.post(REFRESH, {"refresh": following["refresh"]})).status == 200

    rows = await family_rows(app, pair["refresh"])
    assert len(rows) == 1 + 10 + 10 + 10
    assert all(row.revoked_at is None for row in rows)
    parent = claims_of(pair["refresh"])["jti"]
    assert sum(row.parent_jti == parent for row in rows) == 10  # type: ignore[attr-defined]


async def test_a_second_tab_refreshing_a_moment_later_gets_a_pair(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    first_tab = await api.post(REFRESH, {"refresh": pair["refresh"]})
    second_tab = await api.post(REFRESH, {"refresh": pair["refresh"]})
    assert (first_tab.status, second_tab.status) == (200, 200), second_tab.body
    assert first_tab.body["refresh"] != second_tab.body["refresh"]
    await assert_pair_works(api, first_tab.body)
    await assert_pair_works(api, second_tab.body)


async def test_ten_concurrent_reuses_after_the_grace_window_revoke_the_family(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    other_session = await login_pair(api)
    successor = (await api.post(REFRESH, {"refresh": pair["refresh"]})).body
    await age_rotation(app, pair["refresh"], 31)  # the default window is 30 seconds

    replies = await refresh_concurrently(api, pair["refresh"])
    for reply in replies:
        assert_token_refused(reply)
        assert_cors(reply)
    assert_token_refused(await api.post(REFRESH, {"refresh": successor["refresh"]}))
    rows = await family_rows(app, pair["refresh"])
    assert len(rows) == 2
    assert all(row.revoked_at is not None for row in rows)
    assert (await api.post(REFRESH, {"refresh": other_session["refresh"]})).status == 200


async def test_the_grace_window_ends_in_real_time(app_factory: Callable[..., Quart]) -> None:
    grace = 0.5  # seconds: the reuse just after the rotation is well within it
    application = app_factory(JWT_REFRESH_REUSE_GRACE_SECONDS=grace)
    async with application.test_app():
        await prepare_database(application)
        api = API(application)
        pair = await client_pair(application, api)
        successor = (await api.post(REFRESH, {"refresh": pair["refresh"]})).body
        assert (await api.post(REFRESH, {"refresh": pair["refresh"]})).status == 200
        await asyncio.sleep(grace + 0.1)  # the rotation was longer ago than that
        assert_token_refused(await api.post(REFRESH, {"refresh": pair["refresh"]}))
        assert_token_refused(await api.post(REFRESH, {"refresh": successor["refresh"]}))


async def test_reuse_after_a_successor_was_used_revokes_even_within_the_window(
    app: Quart,
) -> None:
    """Only the token that was just rotated may be reused (Auth0's rule): once its
    successor has been used, the client has moved on and a reuse is a replay."""
    api = API(app)
    pair = await client_pair(app, api)
    successor = (await api.post(REFRESH, {"refresh": pair["refresh"]})).body
    latest = (await api.post(REFRESH, {"refresh": successor["refresh"]})).body

    assert_token_refused(await api.post(REFRESH, {"refresh": pair["refresh"]}))
    assert_token_refused(await api.post(REFRESH, {"refresh": latest["refresh"]}))
    assert all(row.revoked_at is not None for row in await family_rows(app, pair["refresh"]))


async def test_a_reuse_grace_does_not_survive_revocation(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    successor = (await api.post(REFRESH, {"refresh": pair["refresh"]})).body
    assert (await api.post(LOGOUT, {"refresh": successor["refresh"]})).status == 200
    # Within the window, but the family was logged out: no new pair.
    assert_token_refused(await api.post(REFRESH, {"refresh": pair["refresh"]}))


async def test_logout_ends_every_tab_of_the_login(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    other_session = await login_pair(api)
    tabs = [reply.body for reply in await refresh_concurrently(api, pair["refresh"], 3)]
    assert (await api.post(LOGOUT, {"refresh": tabs[0]["refresh"]})).status == 200
    for tab in tabs:
        assert_token_refused(await api.post(REFRESH, {"refresh": tab["refresh"]}))
    assert all(row.revoked_at is not None for row in await family_rows(app, pair["refresh"]))
    assert (await api.post(REFRESH, {"refresh": other_session["refresh"]})).status == 200


async def test_access_token_is_not_a_refresh_token(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    assert_token_refused(await api.post(REFRESH, {"refresh": pair["access"]}))
    # Refused before it touched the family: the real refresh token still works.
    assert (await api.post(REFRESH, {"refresh": pair["refresh"]})).status == 200


@pytest.mark.parametrize("garbage", ["garbage", "", "a.b.c", "x" * 2048])
async def test_garbage_refresh_token_is_401(app: Quart, garbage: str) -> None:
    assert_token_refused(await API(app).post(REFRESH, {"refresh": garbage}))


async def test_refresh_token_too_long_is_400(app: Quart) -> None:
    reply = await API(app).post(REFRESH, {"refresh": "x" * 2049})
    assert_error(reply, 400, "invalid")
    assert reply.error.startswith("refresh: ")


async def test_expired_refresh_token_is_401(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    claims = claims_of(pair["refresh"])
    past = datetime.now(UTC) - timedelta(minutes=10)
    expired = sign({**claims, "iat": past - timedelta(days=7), "exp": past})
    assert_token_refused(await api.post(REFRESH, {"refresh": expired}))


async def test_refresh_token_signed_with_another_key_is_401(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    forged = sign(claims_of(pair["refresh"]), OTHER_KEY)
    assert_token_refused(await api.post(REFRESH, {"refresh": forged}))


async def test_unrecorded_refresh_token_is_401(app: Quart) -> None:
    """Validly signed but never issued (no RefreshToken row)."""
    user = await make_user(app, CLIENT_EMAIL)
    now = datetime.now(UTC)
    token = sign(
        {
            "sub": str(user.id),
            "iat": now,
            "exp": now + timedelta(days=1),
            "jti": uuid.uuid4().hex,
            "type": "refresh",
        }
    )
    assert_token_refused(await API(app).post(REFRESH, {"refresh": token}))


async def test_inactive_user_cannot_refresh(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    with db(app):
        await User.filter(email=CLIENT_EMAIL).update(is_active=False)
    assert_token_refused(await api.post(REFRESH, {"refresh": pair["refresh"]}))


async def test_deleted_user_cannot_refresh(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    with db(app):
        await User.filter(email=CLIENT_EMAIL).delete()
    assert_token_refused(await api.post(REFRESH, {"refresh": pair["refresh"]}))


@pytest.mark.parametrize("path", [REFRESH, TOKEN, LOGOUT, REGISTER])
async def test_token_endpoints_accept_a_stale_bearer_header(app: Quart, path: str) -> None:
    """The storefront sends ``Authorization: Bearer <access>`` on every call while logged in
    (frontend-api.md), and on a 401 it calls the refresh endpoint: with the access token that
    has just expired still in that header. The token endpoints authenticate by their body (and
    registration needs no identity), so a stale header must not refuse them (the old backend's
    token views ignored it); otherwise a session can never be refreshed once it has expired."""
    api = API(app)
    pair = await client_pair(app, api)
    claims = claims_of(pair["access"])
    past = datetime.now(UTC) - timedelta(minutes=1)
    stale = sign({**claims, "iat": past - timedelta(hours=2), "exp": past})
    bodies = {
        TOKEN: {"email": CLIENT_EMAIL, "password": PASSWORD},
        REGISTER: {"email": "second@example.com", "password": "k9#mQ2vL"},
    }
    reply = await api.post(path, bodies.get(path, {"refresh": pair["refresh"]}), token=stale)
    assert reply.status == (201 if path == REGISTER else 200), reply.body


# --- logout -------------------------------------------------------------------------------


async def test_logout_revokes_the_refresh_token(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    reply = await api.post(LOGOUT, {"refresh": pair["refresh"]})

    assert reply.status == 200, reply.body
    assert reply.body == {"detail": "Logged out."}
    assert_cors(reply)
    with db(app):
        record = await RefreshToken.get(jti=claims_of(pair["refresh"])["jti"])
    assert record.revoked_at is not None
    assert_token_refused(await api.post(REFRESH, {"refresh": pair["refresh"]}))


async def test_logout_after_rotation_revokes_the_successor(app: Quart) -> None:
    api = API(app)
    first = await client_pair(app, api)
    second = (await api.post(REFRESH, {"refresh": first["refresh"]})).body
    assert (await api.post(LOGOUT, {"refresh": second["refresh"]})).status == 200
    assert_token_refused(await api.post(REFRESH, {"refresh": second["refresh"]}))


async def test_logout_with_an_invalid_token_is_401(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    tokens = {
        "garbage": "garbage",
        "access": pair["access"],
        "foreign": sign(claims_of(pair["refresh"]), OTHER_KEY),
    }
    for kind, token in tokens.items():
        reply = await api.post(LOGOUT, {"refresh": token})
        assert reply.status == 401, (kind, reply.body)
        assert_token_refused(reply)
    with db(app):
        assert await RefreshToken.filter(revoked_at__isnull=False).count() == 0
    assert (await api.post(REFRESH, {"refresh": pair["refresh"]})).status == 200


async def test_logout_missing_refresh_is_400(app: Quart) -> None:
    reply = await API(app).post(LOGOUT, {})
    assert_error(reply, 400, "invalid")
    assert list(reply.body["errors"]) == ["refresh"]


# --- the current user ---------------------------------------------------------------------


async def test_me_returns_what_the_storefront_reads(app: Quart) -> None:
    api = API(app)
    user = await make_user(app, CLIENT_EMAIL)
    reply = await api.get(ME, token=await api.login(CLIENT_EMAIL))

    assert reply.status == 200, reply.body
    assert_cors(reply)
    body = reply.body
    assert body["id"] == user.id
    assert body["email"] == CLIENT_EMAIL
    assert body["first_name"] == "Test"
    assert body["last_name"] == "client"
    assert body["user_type"] == "client"
    assert body["is_staff"] is False
    assert body["company"] == ""
    assert "password_hash" not in body


@pytest.mark.parametrize("role", [Role.STAFF, Role.ADMIN])
async def test_me_staff_and_admin_are_staff(app: Quart, role: Role) -> None:
    api = API(app)
    await make_user(app, "staff@example.com", role)
    token = await api.login("staff@example.com")
    assert claims_of(token)["role"] == role.value
    reply = await api.get(ME, token=token)
    assert reply.status == 200, reply.body
    assert reply.body["user_type"] == role.value
    assert reply.body["is_staff"] is True


async def test_me_without_token_is_401_not_authenticated(app: Quart) -> None:
    reply = await API(app).get(ME)
    assert_error(reply, 401, "not_authenticated")
    assert reply.headers.get("WWW-Authenticate") == "Bearer"
    assert_cors(reply)


async def test_invalid_bearer_token_is_401_on_every_endpoint(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    claims = claims_of(pair["access"])
    past = datetime.now(UTC) - timedelta(minutes=1)
    tokens = {
        "garbage": "not.a.token",
        "expired": sign({**claims, "iat": past - timedelta(hours=2), "exp": past}),
        "foreign_key": sign(claims, OTHER_KEY),
        "refresh": pair["refresh"],
        "alg_none": jwt.encode(claims, None, algorithm="none"),
        "no_sub": sign({key: value for key, value in claims.items() if key != "sub"}),
        "unknown_user": sign({**claims, "sub": "999999"}),
    }
    # Public endpoints too: the storefront answers a 401 by refreshing its token.
    for path in (ME, "/health/", "/api/services/hosting-products/"):
        # The same path answers 200 with the valid token (or none, when it is public).
        valid = await api.get(path, token=pair["access"])
        assert valid.status == 200, (path, valid.body)
        for kind, token in tokens.items():
            reply = await api.get(path, token=token)
            assert reply.status == 401, (path, kind, reply.body)
            assert_token_refused(reply)
            assert_cors(reply)


@pytest.mark.parametrize("sub", ["abc", "1.0", "99999999999999999999"])
async def test_signed_token_with_a_malformed_subject_is_401_not_500(app: Quart, sub: str) -> None:
    """A validly signed access token whose ``sub`` is not a user id (another service sharing
    the key, an old token format) is an invalid token, not a server error."""
    now = datetime.now(UTC)
    token = sign(
        {
            "sub": sub,
            "iat": now,
            "exp": now + timedelta(minutes=5),
            "jti": uuid.uuid4().hex,
            "type": "access",
        }
    )
    api = API(app)
    for path in (ME, "/health/"):
        reply = await api.get(path, token=token)
        assert reply.status == 401, (path, reply.body)
        assert_token_refused(reply)


async def test_malformed_authorization_header_is_401(app: Quart) -> None:
    api = API(app)
    for header in ("Basic x", "Bearer", "Bearer ", "Token abc", "bearer", "Basic"):
        for path in (ME, "/health/"):
            reply = await api.get(path, headers={"Authorization": header})
            assert reply.status == 401, (header, path, reply.body)
            assert_token_refused(reply)


async def test_bearer_scheme_is_case_insensitive(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    reply = await api.get(ME, headers={"Authorization": f"bearer {pair['access']}"})
    assert reply.status == 200, reply.body


async def test_inactive_users_access_token_is_refused(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    with db(app):
        await User.filter(email=CLIENT_EMAIL).update(is_active=False)
    assert_token_refused(await api.get(ME, token=pair["access"]))
    assert_token_refused(await api.get("/health/", token=pair["access"]))


async def test_deleted_users_access_token_is_refused(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    with db(app):
        await User.filter(email=CLIENT_EMAIL).delete()
        assert await ClientProfile.all().count() == 0
        assert await RefreshToken.all().count() == 0
    assert_token_refused(await api.get(ME, token=pair["access"]))


# --- rate limits --------------------------------------------------------------------------


def assert_rate_limited(reply: Reply, longest: int = 60) -> None:
    assert_error(reply, 429, "rate_limited")
    retry_after = reply.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= longest
    assert reply.headers.getlist("Access-Control-Allow-Origin") == [FRONTEND_ORIGIN]
    assert reply.headers.get("Access-Control-Allow-Credentials") == "true"


async def test_register_allows_five_a_minute_per_address(app: Quart) -> None:
    api = API(app)
    # Every attempt counts, refused ones too (and they cost no password hashing here).
    for number in range(4):
        body = {"email": f"user{number}@example.com", "password": "short"}
        assert_error(await api.post(REGISTER, body), 400, "invalid")
    fifth = await api.post(REGISTER, {"email": "user4@example.com", "password": "k9#mQ2vL"})
    assert fifth.status == 201, fifth.body

    sixth = {"email": "user5@example.com", "password": "k9#mQ2vL"}
    assert_rate_limited(await api.post(REGISTER, sixth))
    # X-Forwarded-For is written by the client: it does not buy a new allowance.
    spoofed = await api.post(REGISTER, sixth, headers={"X-Forwarded-For": "198.51.100.9"})
    assert_rate_limited(spoofed)
    with db(app):
        assert await User.all().count() == 1

    # Another peer address has its own allowance; logging in is limited separately.
    assert (await post_from(api, REGISTER, sixth, "203.0.113.7")).status == 201
    login = await api.post(TOKEN, {"email": "user4@example.com", "password": "k9#mQ2vL"})
    assert login.status == 200, login.body


async def test_token_allows_ten_a_minute_per_address(app: Quart) -> None:
    await make_user(app, CLIENT_EMAIL)
    api = API(app)
    for _ in range(9):
        assert_error(await api.post(TOKEN, {"email": CLIENT_EMAIL}), 400, "invalid")
    wrong = await api.post(TOKEN, {"email": CLIENT_EMAIL, "password": "a guess"})
    assert_error(wrong, 401, "invalid_credentials")

    # The 11th attempt is refused even with the right password: no brute force.
    limited = await api.post(TOKEN, {"email": CLIENT_EMAIL, "password": PASSWORD})
    assert_rate_limited(limited)
    spoofed = await api.post(
        TOKEN,
        {"email": CLIENT_EMAIL, "password": PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.9"},
    )
    assert_rate_limited(spoofed)
    with db(app):
        assert await RefreshToken.all().count() == 0

    other = await post_from(
        api, TOKEN, {"email": CLIENT_EMAIL, "password": PASSWORD}, "203.0.113.8"
    )
    assert other.status == 200, other.body


async def test_refresh_is_not_limited_like_login(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    refresh = pair["refresh"]
    for _ in range(12):
        reply = await api.post(REFRESH, {"refresh": refresh})
        assert reply.status == 200, reply.body
        refresh = reply.body["refresh"]


# --- the create-user CLI ------------------------------------------------------------------


async def invoke_cli(app: Quart, args: list[str], stdin: str | None = None) -> Any:
    """Run a CLI command the way ``quart --app 'slyker:create_app()'`` would. The command runs
    its own event loop (asyncio.run), so it runs in a worker thread, off the test's loop."""
    runner = app.test_cli_runner()
    return await asyncio.to_thread(runner.invoke, args=args, input=stdin)


async def test_cli_create_user_admin_can_log_in(app: Quart) -> None:
    result = await invoke_cli(
        app,
        ["create-user", "Boss@Example.com", "--role", "admin", "--password", "b0ss-passw0rd",
         "--first-name", "Big", "--last-name", "Boss"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with db(app):
        user = await User.get(email="boss@example.com")
        assert await ClientProfile.filter(user_id=user.id).count() == 1
    assert result.output == f"created admin boss@example.com (id {user.id})\n"
    assert user.user_type is Role.ADMIN
    assert (user.first_name, user.last_name) == ("Big", "Boss")
    assert user.password_hash.startswith("$argon2")

    api = API(app)
    token = await api.login("boss@example.com", "b0ss-passw0rd")
    me = await api.get(ME, token=token)
    assert me.status == 200, me.body
    assert me.body["id"] == user.id
    assert me.body["user_type"] == "admin"
    assert me.body["is_staff"] is True


async def test_cli_create_user_defaults_to_staff_and_prompts_for_the_password(
    app: Quart,
) -> None:
    result = await invoke_cli(
        app, ["create-user", "staff@example.com"], stdin="st4ff-passw0rd\nst4ff-passw0rd\n"
    )
    assert result.exit_code == 0, result.output
    assert "created staff staff@example.com (id " in result.output
    api = API(app)
    me = await api.get(ME, token=await api.login("staff@example.com", "st4ff-passw0rd"))
    assert (me.body["user_type"], me.body["is_staff"]) == ("staff", True)


async def test_cli_create_user_duplicate_email_fails_clearly(app: Quart) -> None:
    await make_user(app, "boss@example.com")
    result = await invoke_cli(
        app, ["create-user", "BOSS@example.com", "--role", "admin", "--password", "b0ss-passw0rd"]
    )
    assert result.exit_code == 1, result.output
    assert "A user with this e-mail already exists." in result.output
    assert "Traceback" not in result.output
    with db(app):
        user = await User.get(email="boss@example.com")
    assert user.user_type is Role.CLIENT  # untouched


async def test_cli_create_user_rejects_an_unknown_role(app: Quart) -> None:
    result = await invoke_cli(
        app, ["create-user", "x@example.com", "--role", "root", "--password", "k9#mQ2vL"]
    )
    assert result.exit_code == 2, result.output
    assert "root" in result.output
    with db(app):
        assert await User.all().count() == 0


async def test_rate_limits_are_shared_through_redis(app_factory: Any) -> None:
    """With REDIS_URL, two app instances (two Hypercorn workers) count one allowance."""
    address = f"198.18.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"  # fresh per run
    first, second = app_factory(REDIS_URL=REDIS_URL), app_factory(REDIS_URL=REDIS_URL)
    async with first.test_app(), second.test_app():
        await prepare_database(first)
        bad = {"email": "someone@example.com"}  # no password: a cheap 400
        for _ in range(10):  # refused logins count against the allowance too
            assert_error(await post_from(API(first), TOKEN, bad, address), 400, "invalid")
        limited = await post_from(API(second), TOKEN, bad, address)
        assert_rate_limited(limited)


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_clients(
    app_factory: Any,
) -> None:
    """TRUSTED_PROXY_HOPS=1 (nginx): each client behind the proxy has its own allowance."""
    proxied = app_factory(TRUSTED_PROXY_HOPS=1)
    async with proxied.test_app():
        await prepare_database(proxied)
        api = API(proxied)
        bad = {"email": "someone@example.com"}
        for _ in range(10):
            reply = await api.post(TOKEN, bad, headers={"X-Forwarded-For": "198.51.100.1"})
            assert_error(reply, 400, "invalid")
        limited = await api.post(TOKEN, bad, headers={"X-Forwarded-For": "198.51.100.1"})
        assert_rate_limited(limited)
        other_client = await api.post(TOKEN, bad, headers={"X-Forwarded-For": "198.51.100.2"})
        assert_error(other_client, 400, "invalid")


# --- the sign-up form's fields and the profile page ----------------------------------------

PASSWORD_RESET = "/api/accounts/password-reset/"
PASSWORD_RESET_CONFIRM = "/api/accounts/password-reset/confirm/"
SIGNUP_FORM = {  # what MultiStepSignupForm sends through the auth store (with password2)
    "email": "rudo@example.com",
    "password": "Sign-up-passw0rd",
    "password2": "Sign-up-passw0rd",
    "first_name": "Rudo",
    "last_name": "Chikwanha",
    "mobile_number": "+263771234567",
    "company_name": "Chikwanha Logistics",
    "company_website": "https://chikwanha.co.zw",
    "address": "12 Samora Machel Ave",
    "city": "Harare",
    "country": "Zimbabwe",
    "referral_code": "FRIEND-2026",
}
PROFILE_SHAPE = {
    "id", "email", "first_name", "last_name", "user_type", "is_staff", "mobile_number",
    "company_name", "company_website", "address", "city", "country", "referral_code",
    "company", "phone", "date_joined",
}  # fmt: skip


async def patch_me(api: API, token: str, body: Any) -> Reply:
    return await api.call("PATCH", ME, body, token=token)


async def test_signup_form_fields_are_stored_and_returned(app: Quart) -> None:
    api = API(app)
    reply = await api.post(REGISTER, SIGNUP_FORM)
    assert reply.status == 201, reply.body
    user = reply.body["user"]
    assert set(user) == PROFILE_SHAPE
    for name, value in SIGNUP_FORM.items():
        if name not in ("password", "password2"):
            assert user[name] == value, name
    assert (user["phone"], user["company"]) == ("+263771234567", "Chikwanha Logistics")

    # users/me/ is what the auth store keeps after login: the profile page reads
    # user.mobile_number from it, checkout pre-fills the phone from it.
    me = await api.get(ME, token=await api.login(SIGNUP_FORM["email"], SIGNUP_FORM["password"]))
    assert me.status == 200, me.body
    assert me.body == user
    with db(app):
        profile = await ClientProfile.get(user_id=user["id"])
    assert (profile.phone, profile.company, profile.city) == (
        "+263771234567",
        "Chikwanha Logistics",
        "Harare",
    )
    assert (profile.address, profile.country, profile.referral_code) == (
        "12 Samora Machel Ave",
        "Zimbabwe",
        "FRIEND-2026",
    )


async def test_signup_optional_fields_may_be_left_out(app: Quart) -> None:
    body = {k: v for k, v in SIGNUP_FORM.items() if k not in ("company_website", "referral_code")}
    reply = await API(app).post(REGISTER, body)
    assert reply.status == 201, reply.body
    assert (reply.body["user"]["company_website"], reply.body["user"]["referral_code"]) == ("", "")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"password2": "something-else"}, "password2"),
        ({"mobile_number": "call me maybe"}, "mobile_number"),
        ({"mobile_number": "12345"}, "mobile_number"),  # too few digits
        ({"mobile_number": "+" + "1" * 21}, "mobile_number"),  # too many digits
        ({"mobile_number": "+263 77\n123 4567"}, "mobile_number"),
        ({"mobile_number": "x" * 41}, "mobile_number"),
        ({"first_name": "Ru\x00do"}, "first_name"),
        ({"last_name": "Moyo\u202eevil"}, "last_name"),  # bidi override
        ({"city": "Harare\r\nBcc: x@example.com"}, "city"),
        ({"company_name": "c" * 201}, "company_name"),
        ({"address": "a" * 256}, "address"),
        ({"company_website": "javascript:alert(1)"}, "company_website"),
        ({"company_website": "not a website"}, "company_website"),
        ({"referral_code": "FRIEND 2026"}, "referral_code"),
        ({"mobile_number": 263771234567}, "mobile_number"),
        ({"phone": "+263 71 000 0000"}, "phone"),  # disagrees with mobile_number
    ],
)
async def test_signup_fields_are_validated(app: Quart, changes: dict[str, Any], field: str) -> None:
    reply = await API(app).post(REGISTER, {**SIGNUP_FORM, **changes})
    assert_error(reply, 400, "invalid", starts=f"{field}: ")
    assert list(reply.body["errors"]) == [field]
    with db(app):
        assert await User.all().count() == 0


async def test_lenient_phone_formats_are_kept_as_typed(app: Quart) -> None:
    api = API(app)
    for number, phone in enumerate(["(077) 123-4567", "+1 415.555.0100", "0771234567"]):
        body = {"email": f"p{number}@example.com", "password": "k9#mQ2vL", "mobile_number": phone}
        reply = await api.post(REGISTER, body)
        assert reply.status == 201, reply.body
        assert reply.body["user"]["mobile_number"] == phone


async def test_profile_page_patch_updates_own_profile(app: Quart) -> None:
    api = API(app)
    registered = await api.post(REGISTER, SIGNUP_FORM)
    other = await client_pair(app, api, "other@example.com")
    token = registered.body["access"]
    # Exactly what the profile page sends: the whole form, e-mail unchanged.
    form = {
        "first_name": "Rudo T.",
        "last_name": "Chikwanha",
        "email": SIGNUP_FORM["email"],
        "mobile_number": "+263 71 999 8888",
    }
    reply = await patch_me(api, token, form)
    assert reply.status == 200, reply.body
    assert_cors(reply)
    assert set(reply.body) == PROFILE_SHAPE
    assert reply.body["first_name"] == "Rudo T."
    assert reply.body["mobile_number"] == "+263 71 999 8888"
    assert reply.body["company_name"] == "Chikwanha Logistics"  # untouched
    assert (await api.get(ME, token=token)).body == reply.body

    # Other profile fields, and null clears one.
    reply = await patch_me(api, token, {"city": "Bulawayo", "company_website": None})
    assert reply.status == 200, reply.body
    assert (reply.body["city"], reply.body["company_website"]) == ("Bulawayo", "")
    # Nobody else's profile moved.
    other_me = await api.get(ME, token=other["access"])
    assert (other_me.body["first_name"], other_me.body["mobile_number"]) == ("Test", "")


async def test_patch_ignores_read_only_fields(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    body = {"user_type": "admin", "is_staff": True, "id": 999, "referral_code": "X"}
    body["city"] = "Gweru"
    reply = await patch_me(api, pair["access"], body)
    assert reply.status == 200, reply.body
    assert (reply.body["user_type"], reply.body["is_staff"]) == ("client", False)
    assert reply.body["id"] != 999 and reply.body["referral_code"] == ""
    assert reply.body["city"] == "Gweru"
    with db(app):
        assert (await User.get(email=CLIENT_EMAIL)).user_type is Role.CLIENT


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mobile_number": "phone"}, "mobile_number"),
        ({"first_name": "a\x07b"}, "first_name"),
        ({"email": "not-an-email"}, "email"),
        ({"email": None}, "email"),
        ({"country": "c" * 101}, "country"),
    ],
)
async def test_patch_validates_like_registration(
    app: Quart, body: dict[str, Any], field: str
) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    reply = await patch_me(api, pair["access"], body)
    assert_error(reply, 400, "invalid", starts=f"{field}: ")
    assert list(reply.body["errors"]) == [field]
    me = await api.get(ME, token=pair["access"])
    assert (me.body["email"], me.body["mobile_number"], me.body["first_name"]) == (
        CLIENT_EMAIL,
        "",
        "Test",
    )


async def test_patch_needs_a_login(app: Quart) -> None:
    reply = await API(app).call("PATCH", ME, {"first_name": "X"})
    assert_error(reply, 401, "not_authenticated")


async def test_patch_from_a_foreign_origin_is_refused(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    foreign = API(app, origin="https://evil.example")
    reply = await foreign.call("PATCH", ME, {"first_name": "Pwned"}, token=pair["access"])
    assert reply.status == 403, reply.body
    assert (await api.get(ME, token=pair["access"])).body["first_name"] == "Test"


async def test_changing_the_email_needs_the_current_password(app: Quart) -> None:
    api = API(app)
    pair = await client_pair(app, api)
    token = pair["access"]
    new = {"email": "New.Address@Example.com"}

    missing = await patch_me(api, token, new)
    assert_error(missing, 400, "invalid", starts="current_password: ")
    wrong = await patch_me(api, token, {**new, "current_password": "not my password"})
    assert_error(wrong, 400, "invalid", starts="current_password: ")
    assert (await api.get(ME, token=token)).body["email"] == CLIENT_EMAIL

    # The same address in another case is no change and needs no password.
    same = await patch_me(api, token, {"email": "CLIENT@example.com", "first_name": "Tee"})
    assert same.status == 200, same.body
    assert (same.body["email"], same.body["first_name"]) == (CLIENT_EMAIL, "Tee")

    changed = await patch_me(api, token, {**new, "current_password": PASSWORD})
    assert changed.status == 200, changed.body
    assert changed.body["email"] == "new.address@example.com"
    assert (await api.post(TOKEN, {"email": CLIENT_EMAIL, "password": PASSWORD})).status == 401
    await api.login("new.address@example.com")


async def test_changing_the_email_to_a_taken_one_is_409(app: Quart) -> None:
    api = API(app)
    await make_user(app, "taken@example.com")
    pair = await client_pair(app, api)
    body = {"email": "TAKEN@example.com", "current_password": PASSWORD, "first_name": "New"}
    reply = await patch_me(api, pair["access"], body)
    assert_error(reply, 409, "email_taken", starts="email: ")
    me = await api.get(ME, token=pair["access"])
    assert (me.body["email"], me.body["first_name"]) == (CLIENT_EMAIL, "Test")  # all or nothing


# --- password reset -------------------------------------------------------------------------


async def drain_background_tasks(app: Quart) -> None:
    """Wait for the mails the requests handed to background tasks."""
    while app.background_tasks:
        await asyncio.wait_for(asyncio.gather(*list(app.background_tasks)), timeout=20)


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
async def mail_app(app_factory: Callable[..., Quart], smtp: SMTPServer) -> AsyncIterator[Quart]:
    """The app sending its mail through the test SMTP server."""
    application = app_factory(
        **smtp.settings(PASSWORD_RESET_URL="https://slykertech.co.zw/reset-password")
    )
    async with application.test_app():
        await prepare_database(application)
        yield application


async def request_reset(api: API, email: str, address: str = "127.0.0.1") -> Reply:
    return await post_from(api, PASSWORD_RESET, {"email": email}, address)


async def test_password_reset_mail_link_works_once(mail_app: Quart, smtp: SMTPServer) -> None:
    app = mail_app
    api = API(app)
    user = await make_user(app, CLIENT_EMAIL)
    before = await login_pair(api)
    now = datetime.now(UTC)
    old_access = sign(  # issued (to someone) a minute before the reset
        {
            "sub": str(user.id),
            "iat": now - timedelta(minutes=1),
            "exp": now + timedelta(hours=1),
            "jti": uuid.uuid4().hex,
            "type": "access",
        }
    )
    assert (await api.get(ME, token=old_access)).status == 200

    reply = await api.post(PASSWORD_RESET, {"email": "  Client@Example.com "})
    assert reply.status == 200, reply.body
    assert reply.body == {"detail": RESET_REQUESTED}
    assert_cors(reply)
    await drain_background_tasks(app)
    [mail] = await smtp.mailbox.wait_for(1)
    assert mail.rcpt_tos == [CLIENT_EMAIL]
    assert mail.message["To"] == CLIENT_EMAIL
    assert mail.message["From"] == "Slyker Tech <no-reply@slykertech.co.zw>"
    assert mail.message["Subject"] == "Reset your Slyker Tech password"
    assert mail.link().startswith("https://slykertech.co.zw/reset-password?uid=")
    assert "60 minutes" in mail.text
    params = mail.reset_params()
    with db(app):
        [record] = await PasswordResetToken.all()
    assert params["token"] not in record.token_hash  # only the hash is stored
    assert record.token_hash == hashlib.sha256(params["token"].encode()).hexdigest()

    # What the reset page sends.
    new_password = "Brand-new-passw0rd"
    body = {**params, "new_password": new_password, "new_password2": new_password}
    confirmed = await api.post(PASSWORD_RESET_CONFIRM, body)
    assert confirmed.status == 200, confirmed.body
    assert_cors(confirmed)

    assert_error(
        await api.post(TOKEN, {"email": CLIENT_EMAIL, "password": PASSWORD}),
        401,
        "invalid_credentials",
    )
    after = await login_pair(api, password=new_password)
    assert (await api.get(ME, token=after["access"])).status == 200
    # Every session from before the reset is over: refresh tokens revoked, access refused.
    assert_token_refused(await api.post(REFRESH, {"refresh": before["refresh"]}))
    assert_token_refused(await api.get(ME, token=old_access))
    # The link works once.
    another = {**params, "new_password": "Another-passw0rd"}
    again = await api.post(PASSWORD_RESET_CONFIRM, another)
    assert_error(again, 400, "invalid_token", starts="token: ")
    await login_pair(api, password=new_password)


async def test_unknown_email_gets_the_same_answer_and_no_mail(
    mail_app: Quart, smtp: SMTPServer
) -> None:
    app = mail_app
    api = API(app)
    await make_user(app, CLIENT_EMAIL)
    inactive = await make_user(app, "gone@example.com")
    with db(app):
        await User.filter(id=inactive.id).update(is_active=False)

    known = await request_reset(api, CLIENT_EMAIL, "203.0.113.1")
    unknown = await request_reset(api, "nobody@example.com", "203.0.113.2")
    gone = await request_reset(api, "gone@example.com", "203.0.113.3")
    for reply in (known, unknown, gone):
        assert reply.status == 200, reply.body
    assert known.body == unknown.body == gone.body

    def headers(reply: Reply) -> dict[str, str]:
        return {k: v for k, v in reply.headers.items() if k.lower() != "x-request-id"}

    assert headers(known) == headers(unknown) == headers(gone)
    # Every send has ended, and a send ends once the server has stored the mail (its 250):
    # no mail can still be on its way.
    await drain_background_tasks(app)
    mails = await smtp.mailbox.wait_for(1)
    assert [mail.rcpt_tos for mail in smtp.mailbox.snapshot()] == [[CLIENT_EMAIL]], mails
    with db(app):
        assert await PasswordResetToken.all().count() == 1


async def test_the_answer_does_not_wait_for_the_mail_server(
    app_factory: Callable[..., Quart], caplog: pytest.LogCaptureFixture
) -> None:
    """A hung mail server: the answer comes while the send is still waiting for it (its
    timeout is far off); when the server goes away the send fails and that is logged. (The
    send giving up after SMTP_TIMEOUT: tests/services/test_accounts.py.)"""
    with contextlib.ExitStack() as hung:
        port = hung.enter_context(silent_server())
        application = app_factory(
            SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_STARTTLS=False, SMTP_TIMEOUT=60
        )
        async with application.test_app():
            await prepare_database(application)
            await make_user(application, CLIENT_EMAIL)
            started = time.monotonic()
            reply = await API(application).post(PASSWORD_RESET, {"email": CLIENT_EMAIL})
            assert reply.status == 200, reply.body
            (send,) = application.background_tasks
            assert not send.done()  # answered while the mail server still holds the send
            hung.close()  # the server goes away: its connection is reset
            with caplog.at_level(logging.ERROR, logger="slyker.services.mail"):
                await drain_background_tasks(application)
            assert time.monotonic() - started < 5
    failures = [
        r for r in caplog.records if r.name == "slyker.services.mail" and r.levelno >= logging.ERROR
    ]
    assert len(failures) == 1, caplog.text
    assert "password reset for user" in failures[0].getMessage()
    assert CLIENT_EMAIL not in failures[0].getMessage()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_smtp_login_is_used(app_factory: Callable[..., Quart]) -> None:
    with smtp_server(credentials=("mailer", "s3cret")) as server:
        application = app_factory(**server.settings())
        async with application.test_app():
            await prepare_database(application)
            await make_user(application, CLIENT_EMAIL)
            reply = await API(application).post(PASSWORD_RESET, {"email": CLIENT_EMAIL})
            assert reply.status == 200
            await drain_background_tasks(application)
            await server.mailbox.wait_for(1)

        wrong = app_factory(**server.settings(SMTP_PASSWORD="wrong"))
        async with wrong.test_app():
            await prepare_database(wrong)
            await make_user(wrong, "second@example.com")  # (on SQLite the same database)
            reply = await API(wrong).post(PASSWORD_RESET, {"email": "second@example.com"})
            assert reply.status == 200  # the failure is the log's business, not the client's
            await drain_background_tasks(wrong)
        assert len(server.mailbox.snapshot()) == 1


async def test_without_smtp_the_mail_is_logged(
    app: Quart, caplog: pytest.LogCaptureFixture
) -> None:
    await make_user(app, CLIENT_EMAIL)
    with caplog.at_level(logging.INFO, logger="slyker.services.mail"):
        reply = await API(app).post(PASSWORD_RESET, {"email": CLIENT_EMAIL})
        assert reply.status == 200, reply.body
        await drain_background_tasks(app)
    [record] = [r for r in caplog.records if r.name == "slyker.services.mail"]
    text = record.getMessage()
    assert "SMTP_HOST is not set" in text
    assert "http://localhost:3000/reset-password?uid=" in text  # the first CORS origin
    token = text.split("token=", 1)[1].split()[0]
    uid = text.split("uid=", 1)[1].split("&", 1)[0]
    body = {"uid": uid, "token": token, "new_password": "Logged-passw0rd"}
    assert (await API(app).post(PASSWORD_RESET_CONFIRM, body)).status == 200


def test_start_up_says_once_where_mail_goes(
    app_factory: Callable[..., Quart], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="slyker.services.mail"):
        app_factory()
        app_factory(SMTP_HOST="mail.example.com")
    messages = [r.getMessage() for r in caplog.records if r.name == "slyker.services.mail"]
    assert len(messages) == 2, messages
    assert "SMTP_HOST is not set" in messages[0]
    assert "mail.example.com:587" in messages[1]


async def test_expired_reset_link_is_refused(mail_app: Quart, smtp: SMTPServer) -> None:
    api = API(mail_app)
    await make_user(mail_app, CLIENT_EMAIL)
    assert (await api.post(PASSWORD_RESET, {"email": CLIENT_EMAIL})).status == 200
    await drain_background_tasks(mail_app)
    [mail] = await smtp.mailbox.wait_for(1)
    with db(mail_app):
        await PasswordResetToken.all().update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    body = {**mail.reset_params(), "new_password": "Too-late-passw0rd"}
    assert_error(await api.post(PASSWORD_RESET_CONFIRM, body), 400, "invalid_token")
    await login_pair(api)  # the old password still works


async def test_reset_link_lifetime_setting(app_factory: Callable[..., Quart]) -> None:
    with smtp_server() as server:
        application = app_factory(**server.settings(PASSWORD_RESET_TOKEN_LIFETIME=5))
        async with application.test_app():
            await prepare_database(application)
            await make_user(application, CLIENT_EMAIL)
            await API(application).post(PASSWORD_RESET, {"email": CLIENT_EMAIL})
            await drain_background_tasks(application)
            [mail] = await server.mailbox.wait_for(1)
            with db(application):
                [record] = await PasswordResetToken.all()
    assert "5 minutes" in mail.text
    lifetime = record.expires_at - record.created_at
    assert timedelta(minutes=4, seconds=58) < lifetime <= timedelta(minutes=5, seconds=1)


async def test_two_concurrent_confirmations_of_one_link_have_one_winner(
    mail_app: Quart, smtp: SMTPServer
) -> None:
    api = API(mail_app)
    await make_user(mail_app, CLIENT_EMAIL)
    await api.post(PASSWORD_RESET, {"email": CLIENT_EMAIL})
    await drain_background_tasks(mail_app)
    [mail] = await smtp.mailbox.wait_for(1)
    params = mail.reset_params()
    first = {**params, "new_password": "First-passw0rd"}
    second = {**params, "new_password": "Second-passw0rd"}
    replies = await asyncio.gather(
        api.post(PASSWORD_RESET_CONFIRM, first), api.post(PASSWORD_RESET_CONFIRM, second)
    )
    assert sorted(r.status for r in replies) == [200, 400], [r.body for r in replies]
    winner = first if replies[0].status == 200 else second
    await login_pair(api, password=winner["new_password"])


async def test_using_one_link_uses_up_the_others(mail_app: Quart, smtp: SMTPServer) -> None:
    api = API(mail_app)
    await make_user(mail_app, CLIENT_EMAIL)
    for _ in range(2):
        await api.post(PASSWORD_RESET, {"email": CLIENT_EMAIL})
    await drain_background_tasks(mail_app)
    first, second = await smtp.mailbox.wait_for(2)
    assert first.reset_params() != second.reset_params()
    body = {**second.reset_params(), "new_password": "Second-passw0rd"}
    assert (await api.post(PASSWORD_RESET_CONFIRM, body)).status == 200
    body = {**first.reset_params(), "new_password": "First-passw0rd"}
    assert_error(await api.post(PASSWORD_RESET_CONFIRM, body), 400, "invalid_token")


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"new_password": "short"}, "invalid", "new_password"),
        ({"new_password": "x" * 129}, "invalid", "new_password"),
        ({"new_password": " " * 8, "new_password2": " " * 8}, "invalid", "new_password"),
        ({"new_password": "\x00" * 8, "new_password2": "\x00" * 8}, "invalid", "new_password"),
        ({"new_password": "password", "new_password2": "password"}, "invalid", "new_password"),
        ({"new_password": "12345678", "new_password2": "12345678"}, "invalid", "new_password"),
        ({"new_password": "Tab\there1", "new_password2": "Tab\there1"}, "invalid", "new_password"),
        ({"new_password2": "Different-passw0rd"}, "invalid", "new_password2"),
        ({"token": "not-the-token"}, "invalid_token", "token"),
        ({"token": ""}, "invalid", "token"),
        ({"uid": "garbage!"}, "invalid_token", "token"),
        ({"uid": "OTk5OTk"}, "invalid_token", "token"),  # base64 of another user id
        ({"uid": "x" * 65}, "invalid", "uid"),
    ],
)
async def test_bad_confirmations_are_refused(
    mail_app: Quart, smtp: SMTPServer, change: dict[str, str], code: str, field: str
) -> None:
    api = API(mail_app)
    await make_user(mail_app, CLIENT_EMAIL)
    await api.post(PASSWORD_RESET, {"email": CLIENT_EMAIL})
    await drain_background_tasks(mail_app)
    [mail] = await smtp.mailbox.wait_for(1)
    good = {**mail.reset_params(), "new_password": "Good-passw0rd"}
    good["new_password2"] = good["new_password"]
    reply = await api.post(PASSWORD_RESET_CONFIRM, {**good, **change})
    assert_error(reply, 400, code, starts=f"{field}: ")
    assert list(reply.body["errors"]) == [field]
    # Nothing was used up: the real link still works.
    assert (await api.post(PASSWORD_RESET_CONFIRM, good)).status == 200


async def test_another_users_uid_with_my_token_is_refused(
    mail_app: Quart, smtp: SMTPServer
) -> None:
    api = API(mail_app)
    await make_user(mail_app, CLIENT_EMAIL)
    victim = await make_user(mail_app, "victim@example.com")
    await api.post(PASSWORD_RESET, {"email": CLIENT_EMAIL})
    await drain_background_tasks(mail_app)
    [mail] = await smtp.mailbox.wait_for(1)
    uid = base64.urlsafe_b64encode(str(victim.id).encode()).decode().rstrip("=")
    body = {"uid": uid, "token": mail.reset_params()["token"], "new_password": "Taken-over-1"}
    assert_error(await api.post(PASSWORD_RESET_CONFIRM, body), 400, "invalid_token")
    await login_pair(api, "victim@example.com")


@pytest.mark.parametrize(
    "body", [{}, {"email": "not-an-email"}, {"email": None}, {"email": "a@b.c" * 60}]
)
async def test_reset_request_needs_an_email(app: Quart, body: dict[str, Any]) -> None:
    reply = await API(app).post(PASSWORD_RESET, body)
    assert_error(reply, 400, "invalid", starts="email: ")
    assert not app.background_tasks


async def test_reset_requests_are_limited_per_email_known_or_not(
    mail_app: Quart, smtp: SMTPServer
) -> None:
    api = API(mail_app)
    await make_user(mail_app, CLIENT_EMAIL)
    for email in (CLIENT_EMAIL, "nobody@example.com"):
        for number in range(3):  # from three addresses: the allowance is the mailbox's
            reply = await request_reset(api, email, f"198.51.100.{number + 1}")
            assert reply.status == 200, reply.body
        limited = await request_reset(api, email.upper(), "198.51.100.99")
        assert_rate_limited(limited, longest=20 * 60)  # 3 an hour: one more every 20 minutes
    await drain_background_tasks(mail_app)
    assert len(await smtp.mailbox.wait_for(3)) == 3
    # Another address is unaffected.
    assert (await request_reset(api, "third@example.com", "198.51.100.99")).status == 200


async def test_reset_requests_are_limited_per_client_address(app: Quart) -> None:
    api = API(app)
    for number in range(5):
        reply = await request_reset(api, f"someone{number}@example.com", "198.51.100.7")
        assert reply.status == 200, reply.body
    limited = await request_reset(api, "someone5@example.com", "198.51.100.7")
    assert_rate_limited(limited, longest=3 * 60)  # 5 per 15 minutes: one every 3 minutes
    assert (await request_reset(api, "someone5@example.com", "198.51.100.8")).status == 200
    await drain_background_tasks(app)


async def test_reset_confirmations_are_limited_per_client_address(app: Quart) -> None:
    api = API(app)
    body = {"uid": "MQ", "token": "guess", "new_password": "Guess-passw0rd"}
    for _ in range(10):
        reply = await post_from(api, PASSWORD_RESET_CONFIRM, body, "198.51.100.5")
        assert_error(reply, 400, "invalid_token")
    assert_rate_limited(await post_from(api, PASSWORD_RESET_CONFIRM, body, "198.51.100.5"))


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        (" " * 8, "only spaces"),
        ("\u3000" * 8, "only spaces"),  # ideographic spaces
        # NUL is refused for every text field before the password rules (slyker/validation.py)
        ("\x00" * 8, "must not contain NUL characters"),
        ("good-pass\x00word", "must not contain NUL characters"),
        ("line\nbreak-pass", "control characters"),
        ("password", "too common"),
        ("PASSWORD", "too common"),
        ("12345678", "too common"),
        ("Password1", "too common"),
        ("qwerty123", "too common"),
        ("iloveyou", "too common"),
    ],
)
async def test_register_refuses_weak_passwords(app: Quart, password: str, reason: str) -> None:
    reply = await API(app).post(REGISTER, {"email": "weak@example.com", "password": password})
    assert_error(reply, 400, "invalid", starts="password: ")
    assert reason in reply.error
    with db(app):
        assert await User.filter(email="weak@example.com").count() == 0


async def test_a_long_unusual_password_with_spaces_is_fine(app: Quart) -> None:
    reply = await API(app).post(
        REGISTER, {"email": "ok@example.com", "password": "  correct horse battery staple  "}
    )
    assert reply.status == 201, reply.body


def test_the_profile_fields_are_declared_once() -> None:
    """Sign-up and PATCH me/ take the same profile fields, from one list, and that list is
    what the accounts service stores."""
    profile = set(ProfileFields.model_fields)
    assert profile == set(NAME_FIELDS) | set(PROFILE_FIELDS)
    assert set(Registration.model_fields) - profile == {
        "email",
        "password",
        "password2",
        "referral_code",
    }
    assert set(ProfileUpdate.model_fields) - profile == {"email", "current_password"}
