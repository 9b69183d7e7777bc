"""Accounts: registration, JWT login / refresh / logout, the current user and their profile,
and password reset by e-mail."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, EmailStr, Field, ValidationInfo, field_validator
from quart import Blueprint, Response, current_app, request
from quart_rate_limiter import RateLimit, rate_limit
from quart_schema import validate_request, validate_response

from slyker.auth import (
    authenticated_user,
    current_user,
    ignores_bearer_header,
    issue_tokens,
    login_required,
    revoke_refresh_token,
    rotate_refresh_token,
    verify_password,
)
from slyker.contracts import Detail, IsoDateTime
from slyker.errors import APIError, invalid
from slyker.models.accounts import ClientProfile, User
from slyker.ratelimit import client_address
from slyker.services.accounts import (
    confirm_password_reset,
    create_user,
    normalise_email,
    profile_of,
    send_password_reset,
    update_user,
)
from slyker.settings import current_settings

blueprint = Blueprint("accounts", __name__)


@blueprint.after_request
async def never_cached(response: Response) -> Response:
    """Tokens, profiles and reset answers are for this client only: no cache (a shared proxy,
    the browser's back/forward cache) may keep them."""
    response.headers["Cache-Control"] = "no-store"
    return response


RESET_REQUESTED = (
    "If an account with this e-mail address exists, we have sent it a link to reset the password."
)


def _optional(max_length: int, description: str | None = None) -> Any:
    return Field(default=None, max_length=max_length, description=description)


class ProfileFields(BaseModel):
    """The profile fields a client sets at sign-up and may change later (one list for
    :class:`Registration` and :class:`ProfileUpdate`)."""

    first_name: str | None = _optional(150)
    last_name: str | None = _optional(150)
    mobile_number: str | None = _optional(40)
    company_name: str | None = _optional(200)
    company_website: str | None = _optional(200)
    address: str | None = _optional(255)
    city: str | None = _optional(100)
    country: str | None = _optional(100)
    company: str | None = _optional(200, "older name of company_name")
    phone: str | None = _optional(40, "older name of mobile_number")


class SignUpCredentials(BaseModel):
    email: EmailStr
    password: str = Field(min_length=8, max_length=128)
    password2: str | None = _optional(128, "must equal password")

    @field_validator("password2")
    @classmethod
    def passwords_match(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and "password" in info.data and value != info.data["password"]:
            raise ValueError("Passwords do not match.")
        return value


class Registration(ProfileFields, SignUpCredentials):
    """The storefront's sign-up form. Unknown fields are ignored, as everywhere in the API;
    every known one is stored and comes back in ``user``."""

    referral_code: str | None = _optional(64)


class ProfileUpdate(ProfileFields):
    """``PATCH users/me/``: any of these; ``null`` clears a profile field. Everything else
    (``id``, ``user_type``, ``is_staff``, ``referral_code``…) is read-only and ignored."""

    email: EmailStr | None = None
    current_password: str | None = _optional(128, "needed to change the e-mail address")


class UserOut(BaseModel):
    id: int
    email: str
    first_name: str
    last_name: str
    user_type: str
    is_staff: bool
    mobile_number: str
    company_name: str
    company_website: str
    address: str
    city: str
    country: str
    referral_code: str
    company: str = Field(description="= company_name")
    phone: str = Field(description="= mobile_number")
    date_joined: IsoDateTime

    @classmethod
    def from_row(cls, user: User, profile: ClientProfile) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            first_name=user.first_name,
            last_name=user.last_name,
            user_type=str(user.user_type),
            is_staff=user.is_staff,
            mobile_number=profile.phone,
            company_name=profile.company,
            company_website=profile.company_website,
            address=profile.address,
            city=profile.city,
            country=profile.country,
            referral_code=profile.referral_code,
            company=profile.company,
            phone=profile.phone,
            date_joined=user.created_at,
        )

    @classmethod
    async def of(cls, user: User) -> UserOut:
        return cls.from_row(user, await profile_of(user))


class RegistrationOut(BaseModel):
    user: UserOut
    access: str
    refresh: str


class Credentials(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=128)


class RefreshRequest(BaseModel):
    refresh: str = Field(max_length=2048)


class PasswordResetRequest(BaseModel):
    email: EmailStr


class PasswordResetConfirm(BaseModel):
    uid: str = Field(min_length=1, max_length=64)
    token: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=8, max_length=128)
    new_password2: str | None = _optional(128, "must equal new_password")

    @field_validator("new_password2")
    @classmethod
    def passwords_match(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value != info.data.get("new_password", value):
            raise ValueError("Passwords do not match.")
        return value


class TokenPair(BaseModel):
    access: str
    refresh: str


async def user_key() -> str:
    user = current_user()
    return f"user:{user.id}" if user else await client_address()


async def _reset_email() -> str | None:
    body = await request.get_json(silent=True) if request.is_json else None
    email = body.get("email") if isinstance(body, dict) else None
    return normalise_email(email) if isinstance(email, str) and email.strip() else None


async def reset_email_key() -> str:
    """Reset mails are limited per e-mail address too, known or not (so a 429 says nothing
    about the account); keyed by a hash, so no address is written to Redis."""
    email = await _reset_email() or ""
    return "email:" + hashlib.sha256(email.encode()).hexdigest()[:32]


async def no_reset_email() -> bool:
    return await _reset_email() is None


@blueprint.post("/api/accounts/register/")
@ignores_bearer_header
@rate_limit(5, timedelta(minutes=1), key_function=client_address)
@validate_request(Registration)
@validate_response(RegistrationOut, 201)
async def register(data: Registration) -> tuple[RegistrationOut, int]:
    """Create a client account with its client profile (phone, company, address… as the
    sign-up form sends them); returns the user and a token pair."""
    details = data.model_dump(exclude={"email", "password", "password2"})
    user = await create_user(data.email, data.password, **details)
    user_out = await UserOut.of(user)
    return RegistrationOut(user=user_out, **await issue_tokens(user)), 201


@blueprint.post("/api/token/")
@ignores_bearer_header
@rate_limit(10, timedelta(minutes=1), key_function=client_address)
@validate_request(Credentials)
@validate_response(TokenPair)
async def obtain_token(data: Credentials) -> TokenPair:
    """Log in with e-mail and password: ``{access, refresh}``."""
    user = await User.get_or_none(email=normalise_email(data.email))
    if not await verify_password(user, data.password) or user is None or not user.is_active:
        raise APIError(
            401, "No active account found with the given credentials.", code="invalid_credentials"
        )
    await User.filter(id=user.id).update(last_login=datetime.now(UTC))
    return TokenPair(**await issue_tokens(user))


@blueprint.post("/api/token/refresh/")
@ignores_bearer_header
@validate_request(RefreshRequest)
@validate_response(TokenPair)
async def refresh_token(data: RefreshRequest) -> TokenPair:
    """Exchange a refresh token for a new pair; the old refresh token stops working (a
    second use within ``JWT_REFRESH_REUSE_GRACE_SECONDS`` of the first gets a pair too)."""
    return TokenPair(**await rotate_refresh_token(data.refresh))


@blueprint.post("/api/token/logout/")
@ignores_bearer_header
@validate_request(RefreshRequest)
@validate_response(Detail)
async def logout(data: RefreshRequest) -> Detail:
    """Revoke a refresh token and every token rotated from the same login (all tabs).
    (Access tokens stay valid until they expire.)"""
    await revoke_refresh_token(data.refresh)
    return Detail(detail="Logged out.")


@blueprint.get("/api/accounts/users/me/")
@login_required
@validate_response(UserOut)
async def me() -> UserOut:
    """The logged-in user, with their client profile's fields."""
    return await UserOut.of(authenticated_user())


@blueprint.patch("/api/accounts/users/me/")
@login_required
@rate_limit(20, timedelta(minutes=1), key_function=user_key)
@validate_request(ProfileUpdate)
@validate_response(UserOut)
async def update_me(data: ProfileUpdate) -> UserOut:
    """Change one's own names, profile fields or e-mail address (a new address needs
    ``current_password`` and must be free); returns the updated user."""
    changes = {name: getattr(data, name) for name in data.model_fields_set}
    changes.pop("current_password", None)
    if "email" in changes and changes["email"] is None:
        raise invalid("email", "Enter a valid e-mail address.")
    user = await update_user(authenticated_user(), changes, data.current_password)
    return await UserOut.of(user)


@blueprint.post("/api/accounts/password-reset/")
@ignores_bearer_header
@rate_limit(5, timedelta(minutes=15), key_function=client_address)
@rate_limit(
    limits=[
        RateLimit(3, timedelta(hours=1), key_function=reset_email_key, skip_function=no_reset_email)
    ]
)
@validate_request(PasswordResetRequest)
@validate_response(Detail)
async def password_reset(data: PasswordResetRequest) -> Detail:
    """Mail a password-reset link if the address has an active account. The answer is the
    same either way and comes before the account is even looked up: the look-up and the
    mail happen in a background task. Limits: 5 requests per 15 minutes per client address,
    3 per hour per e-mail address."""
    current_app.add_background_task(send_password_reset, current_settings(), data.email)
    return Detail(detail=RESET_REQUESTED)


@blueprint.post("/api/accounts/password-reset/confirm/")
@ignores_bearer_header
@rate_limit(10, timedelta(minutes=1), key_function=client_address)
@validate_request(PasswordResetConfirm)
@validate_response(Detail)
async def password_reset_confirm(data: PasswordResetConfirm) -> Detail:
    """Set a new password with the ``uid`` and ``token`` of a mailed link (once, before it
    expires). Every refresh token of the user is revoked and access tokens issued before
    the reset stop working: every session logs in again."""
    await confirm_password_reset(data.uid, data.token, data.new_password)
    return Detail(detail="Your password has been reset. You can log in with the new password.")
