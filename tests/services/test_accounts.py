"""The accounts service on its own: profile validation, users, and password reset with a
real SMTP server (aiosmtpd on 127.0.0.1). Runs on SQLite, and on PostgreSQL with
SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from quart import Quart

from slyker.auth import verify_password
from slyker.models.accounts import ClientProfile, PasswordResetToken, RefreshToken, Role, User
from slyker.services import accounts
from slyker.services.accounts import (
    clean_phone,
    clean_text,
    clean_website,
    confirm_password_reset,
    create_user,
    make_uid,
    parse_uid,
    reset_link,
    send_password_reset,
    update_user,
)
from slyker.services.errors import Conflict, InvalidInput
from slyker.services.mail import build_message, send_message
from slyker.settings import Settings, load_settings
from tests.api import PASSWORD, db, make_user
from tests.conftest import TEST_SECRET_KEY
from tests.mail_server import silent_server, smtp_server

EMAIL = "client@example.com"


def settings_for(**overrides: Any) -> Settings:
    return load_settings({}, {"SECRET_KEY": TEST_SECRET_KEY, **overrides})


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phone",
    ["+263771234567", "+263 77 123 4567", "(077) 123-4567", "077.123.4567", "123456", ""],
)
def test_lenient_phone_numbers_are_accepted_as_typed(phone: str) -> None:
    assert clean_phone("mobile_number", f"  {phone} ") == phone


@pytest.mark.parametrize(
    "phone",
    [
        "12345",  # too few digits
        "1" * 21,  # too many
        "+263 77 CALL ME",
        "263+771234567",  # + only in front
        "+263\n771234567",
        "+263\x00771234567",
        "٠٧٧١٢٣٤٥٦٧",  # digits, but not ASCII ones
        "+" + "1 " * 21,  # 21 digits
        "1" * 41,
    ],
)
def test_bad_phone_numbers_are_refused(phone: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        clean_phone("mobile_number", phone)
    assert caught.value.field == "mobile_number"


@pytest.mark.parametrize(
    "website", ["https://example.com", "http://shop.example.co.zw/about", "example.com", ""]
)
def test_websites(website: str) -> None:
    assert clean_website("company_website", website) == website


@pytest.mark.parametrize(
    "website",
    [
        "javascript:alert(1)",
        "ftp://example.com",
        "https://localhost",
        "https://user:pw@example.com",
        "https://exa mple.com",
        "https://example.com:99999",
        "https://[::1",
        "data:text/html,hi",
    ],
)
def test_bad_websites_are_refused(website: str) -> None:
    with pytest.raises(InvalidInput):
        clean_website("company_website", website)


@pytest.mark.parametrize(
    "text", ["a\x00b", "a\tb", "a\nb", "a\rb", "a\x7fb", "a\u2028b", "a\u202eb", "a\ud800b"]
)
def test_control_characters_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="control characters"):
        clean_text("city", text, 100)


def test_text_is_trimmed_and_bounded() -> None:
    assert clean_text("city", "  Mutare ", 6) == "Mutare"
    assert clean_text("city", "Zürich ☀", 100) == "Zürich ☀"
    with pytest.raises(InvalidInput, match="no more than 6"):
        clean_text("city", "Harare!", 6)
    with pytest.raises(InvalidInput, match="string"):
        clean_text("city", 12, 6)


# --- the reset link ------------------------------------------------------------------------


@pytest.mark.parametrize("user_id", [1, 42, 2**31 - 1])
def test_uid_round_trip(user_id: int) -> None:
    uid = make_uid(user_id)
    assert uid.isascii() and "=" not in uid
    assert parse_uid(uid) == user_id


@pytest.mark.parametrize(
    # "YWJj" is "abc", "MA" is "0", "LTE" is "-1", "w4k" is not ASCII.
    "uid",
    ["", "!!!", "YWJj", "MA", "LTE", make_uid(2**31), "MQ" * 40, "w4k", "M Q", "M\nQ", "MQ+"],
)
def test_bad_uids_are_none(uid: str) -> None:
    assert parse_uid(uid) is None


def test_uid_padding_is_tolerated() -> None:
    assert parse_uid("MQ==") == 1


def test_reset_link_placeholders_or_query() -> None:
    assert (
        reset_link("https://shop.example/reset/{uid}/{token}/", "MQ", "t0k")
        == "https://shop.example/reset/MQ/t0k/"
    )
    assert (
        reset_link("https://shop.example/reset-password?lang=en#top", "MQ", "t-k_")
        == "https://shop.example/reset-password?lang=en&uid=MQ&token=t-k_#top"
    )


# --- users ---------------------------------------------------------------------------------


async def test_create_user_stores_every_profile_field(app: Quart) -> None:
    with db(app):
        user = await create_user(
            " Someone@Example.COM ",
            "long-enough",
            first_name=" Tendai ",
            mobile_number="+263 77 000 0000",
            phone="+263 77 000 0000",  # agreeing aliases are fine
            company_name="Acme",
            company_website="acme.co.zw",
            address="1 Main St",
            city="Gweru",
            country="Zimbabwe",
            referral_code="ABC_123",
            last_name=None,
        )
        profile = await ClientProfile.get(user_id=user.id)
    assert (user.email, user.first_name, user.last_name) == ("someone@example.com", "Tendai", "")
    assert user.user_type is Role.CLIENT
    assert (profile.phone, profile.company, profile.company_website) == (
        "+263 77 000 0000",
        "Acme",
        "acme.co.zw",
    )
    assert (profile.address, profile.city, profile.country, profile.referral_code) == (
        "1 Main St",
        "Gweru",
        "Zimbabwe",
        "ABC_123",
    )


@pytest.mark.parametrize(
    ("password", "details", "field"),
    [
        ("short", {}, "password"),
        ("x" * 129, {}, "password"),
        ("        ", {}, "password"),
        ("\x00" * 8, {}, "password"),
        ("password", {}, "password"),
        ("12345678", {}, "password"),
        ("long-enough", {"company": "A", "company_name": "B"}, "company_name"),
        ("long-enough", {"referral_code": "no spaces"}, "referral_code"),
        ("long-enough", {"first_name": "x" * 151}, "first_name"),
    ],
)
async def test_create_user_refuses_bad_input(
    app: Quart, password: str, details: dict[str, Any], field: str
) -> None:
    with db(app):
        with pytest.raises(InvalidInput) as caught:
            await create_user("a@example.com", password, **details)
        assert caught.value.field == field
        assert await User.all().count() == 0


async def test_create_user_twice_is_a_conflict(app: Quart) -> None:
    with db(app):
        await create_user(EMAIL, PASSWORD)
        with pytest.raises(Conflict) as caught:
            await create_user(EMAIL.upper(), PASSWORD)
    assert caught.value.code == "email_taken"
    assert caught.value.errors == {"email": ["A user with this e-mail already exists."]}


async def test_update_user_profile_and_email(app: Quart) -> None:
    user = await make_user(app, EMAIL)
    with db(app):
        await PasswordResetToken.create(
            user=user, token_hash="a" * 64, expires_at=datetime.now(UTC) + timedelta(hours=1)
        )
        updated = await update_user(user, {"mobile_number": "0771234567", "city": "Harare"})
        assert (await ClientProfile.get(user_id=user.id)).phone == "0771234567"
        with pytest.raises(InvalidInput) as caught:
            await update_user(updated, {"email": "new@example.com"})
        assert caught.value.field == "current_password"
        with pytest.raises(InvalidInput):
            await update_user(updated, {"email": "new@example.com"}, "wrong password")
        moved = await update_user(updated, {"email": " NEW@example.com"}, PASSWORD)
        assert moved.email == "new@example.com"
        # A reset link mailed to the old address no longer works.
        assert await PasswordResetToken.filter(used_at__isnull=True).count() == 0
        cleared = await update_user(moved, {"city": None, "first_name": None})
        assert cleared.first_name == ""
        assert (await ClientProfile.get(user_id=user.id)).city == ""


async def test_update_user_to_a_taken_email_is_a_conflict(app: Quart) -> None:
    await make_user(app, "taken@example.com")
    user = await make_user(app, EMAIL)
    with db(app), pytest.raises(Conflict):
        await update_user(user, {"email": "taken@example.com", "first_name": "X"}, PASSWORD)
    with db(app):
        assert (await User.get(id=user.id)).first_name == "Test"


# --- password reset ------------------------------------------------------------------------


async def test_send_password_reset_mails_a_link_for_active_accounts_only(app: Quart) -> None:
    user = await make_user(app, EMAIL)
    inactive = await make_user(app, "inactive@example.com")
    with smtp_server() as server:
        settings = settings_for(**server.settings())
        with db(app):
            await User.filter(id=inactive.id).update(is_active=False)
            assert await send_password_reset(settings, "Client@Example.com") is True
            assert await send_password_reset(settings, "nobody@example.com") is False
            assert await send_password_reset(settings, "inactive@example.com") is False
            [record] = await PasswordResetToken.all()
        [mail] = await server.mailbox.wait_for(1)
        await asyncio.sleep(0.1)
        assert len(server.mailbox.snapshot()) == 1
    params = mail.reset_params()
    assert params["uid"] == make_uid(user.id)
    assert record.user_id == user.id  # type: ignore[attr-defined]
    assert record.token_hash == accounts.hash_reset_token(params["token"])
    assert len(params["token"]) >= 40
    assert mail.link().startswith("http://localhost:3000/reset-password?uid=")


async def test_confirm_password_reset_is_single_use_and_revokes_sessions(app: Quart) -> None:
    user = await make_user(app, EMAIL)
    token = "known-token-for-the-test"
    with db(app):
        await PasswordResetToken.create(
            user=user,
            token_hash=accounts.hash_reset_token(token),
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )
        for _ in range(2):
            await RefreshToken.create(
                jti=uuid.uuid4().hex,
                family=uuid.uuid4().hex,
                user=user,
                expires_at=datetime.now(UTC) + timedelta(days=1),
            )
        changed = await confirm_password_reset(make_uid(user.id), token, "New-passw0rd")
        assert await verify_password(changed, "New-passw0rd")
        assert not await verify_password(changed, PASSWORD)
        assert changed.password_changed_at is not None
        assert await RefreshToken.filter(revoked_at__isnull=True).count() == 0
        with pytest.raises(InvalidInput) as caught:
            await confirm_password_reset(make_uid(user.id), token, "Newer-passw0rd")
        assert caught.value.code == "invalid_token"
        assert await verify_password(await User.get(id=user.id), "New-passw0rd")


async def test_confirm_password_reset_refuses_expired_and_foreign_links(app: Quart) -> None:
    user = await make_user(app, EMAIL)
    other = await make_user(app, "other@example.com")
    with db(app):
        await PasswordResetToken.create(
            user=user,
            token_hash=accounts.hash_reset_token("expired"),
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )
        await PasswordResetToken.create(
            user=user,
            token_hash=accounts.hash_reset_token("fresh"),
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )
        for uid, token in [
            (make_uid(user.id), "expired"),
            (make_uid(other.id), "fresh"),  # someone else's account with my link
            ("garbage", "fresh"),
            (make_uid(user.id), "unknown"),
        ]:
            with pytest.raises(InvalidInput) as caught:
                await confirm_password_reset(uid, token, "New-passw0rd")
            assert caught.value.code == "invalid_token"
        with pytest.raises(InvalidInput) as caught:
            await confirm_password_reset(make_uid(user.id), "fresh", "short")
        assert caught.value.field == "new_password"
        assert await PasswordResetToken.filter(used_at__isnull=False).count() == 0


# --- mail ----------------------------------------------------------------------------------


async def test_send_message_gives_up_on_a_hung_server_within_its_timeout() -> None:
    with silent_server() as port:
        settings = settings_for(
            SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_STARTTLS=False, SMTP_TIMEOUT=0.2
        )
        message = build_message(settings, EMAIL, "Hello", "Hi")
        started = asyncio.get_running_loop().time()
        assert await send_message(settings, message) is False
        assert asyncio.get_running_loop().time() - started < 2


async def test_send_message_to_a_closed_port_fails_quietly() -> None:
    with silent_server() as port:
        pass  # the port is free again: nothing listens
    settings = settings_for(SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_STARTTLS=False)
    assert await send_message(settings, build_message(settings, EMAIL, "Hello", "Hi")) is False


async def test_build_message_headers() -> None:
    settings = settings_for(MAIL_FROM="Shop <shop@example.com>")
    message = build_message(settings, EMAIL, "Subject line", "Body")
    assert message["From"] == "Shop <shop@example.com>"
    assert message["Message-ID"].endswith("@example.com>")
    assert message["Date"]
