"""Accounts: registration, JWT login / refresh / logout, and the current user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, EmailStr, Field
from quart import Blueprint, request
from quart_rate_limiter import rate_limit
from quart_schema import validate_request
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from slyker.auth import (
    authenticated_user,
    hash_password,
    ignores_bearer_header,
    issue_tokens,
    login_required,
    revoke_refresh_token,
    rotate_refresh_token,
    verify_password,
)
from slyker.errors import APIError
from slyker.models.accounts import ClientProfile, Role, User

blueprint = Blueprint("accounts", __name__)


async def client_address() -> str:
    """The peer address. Not X-Forwarded-For, which any client can write: behind a proxy,
    Hypercorn's proxy support must turn the trusted proxy's header into this address."""
    return request.remote_addr or "unknown"


class Registration(BaseModel):
    email: EmailStr
    password: str = Field(min_length=8, max_length=128)
    first_name: str = Field(default="", max_length=150)
    last_name: str = Field(default="", max_length=150)
    company: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=40)


class Credentials(BaseModel):
    email: str = Field(max_length=254)
    password: str = Field(max_length=128)


class RefreshRequest(BaseModel):
    refresh: str = Field(max_length=2048)


async def user_json(user: User) -> dict[str, Any]:
    profile = await ClientProfile.get_or_none(user=user)
    return {
        "id": user.id,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "user_type": str(user.user_type),
        "is_staff": user.is_staff,
        "company": profile.company if profile else "",
        "phone": profile.phone if profile else "",
        "date_joined": user.created_at.isoformat(),
    }


async def create_user(email: str, password: str, role: Role = Role.CLIENT, **details: str) -> User:
    """Create a user and the client profile every account has; 409 if the e-mail is taken."""
    try:
        async with in_transaction():
            user = await User.create(
                email=email.strip().lower(),
                password_hash=hash_password(password),
                first_name=details.get("first_name", ""),
                last_name=details.get("last_name", ""),
                user_type=role,
            )
            await ClientProfile.create(
                user=user, company=details.get("company", ""), phone=details.get("phone", "")
            )
    except IntegrityError:
        raise APIError(
            409,
            "email: A user with this e-mail already exists.",
            code="email_taken",
            errors={"email": ["A user with this e-mail already exists."]},
        ) from None
    return user


@blueprint.post("/api/accounts/register/")
@ignores_bearer_header
@rate_limit(5, timedelta(minutes=1), key_function=client_address)
@validate_request(Registration)
async def register(data: Registration) -> tuple[dict[str, Any], int]:
    """Create a client account (and its client profile); returns the user and tokens."""
    user = await create_user(
        data.email,
        data.password,
        first_name=data.first_name,
        last_name=data.last_name,
        company=data.company,
        phone=data.phone,
    )
    return {"user": await user_json(user), **await issue_tokens(user)}, 201


@blueprint.post("/api/token/")
@ignores_bearer_header
@rate_limit(10, timedelta(minutes=1), key_function=client_address)
@validate_request(Credentials)
async def obtain_token(data: Credentials) -> dict[str, str]:
    """Log in with e-mail and password: ``{access, refresh}``."""
    user = await User.get_or_none(email=data.email.strip().lower())
    if not verify_password(user, data.password) or user is None or not user.is_active:
        raise APIError(
            401, "No active account found with the given credentials.", code="invalid_credentials"
        )
    await User.filter(id=user.id).update(last_login=datetime.now(UTC))
    return await issue_tokens(user)


@blueprint.post("/api/token/refresh/")
@ignores_bearer_header
@validate_request(RefreshRequest)
async def refresh_token(data: RefreshRequest) -> dict[str, str]:
    """Exchange a refresh token for a new pair; the old refresh token stops working."""
    return await rotate_refresh_token(data.refresh)


@blueprint.post("/api/token/logout/")
@ignores_bearer_header
@validate_request(RefreshRequest)
async def logout(data: RefreshRequest) -> dict[str, str]:
    """Revoke a refresh token. (Access tokens stay valid until they expire.)"""
    await revoke_refresh_token(data.refresh)
    return {"detail": "Logged out."}


@blueprint.get("/api/accounts/users/me/")
@login_required
async def me() -> dict[str, Any]:
    """The logged-in user."""
    return await user_json(authenticated_user())
