"""Users, their client profiles, the refresh-token record that makes rotation and
revocation real, and password-reset tokens (stored as hashes only)."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model


class Role(StrEnum):
    CLIENT = "client"
    STAFF = "staff"
    ADMIN = "admin"


class User(Model):
    id = fields.IntField(primary_key=True)
    email = fields.CharField(max_length=254, unique=True)  # stored lower-cased
    password_hash = fields.CharField(max_length=255)
    first_name = fields.CharField(max_length=150, default="")
    last_name = fields.CharField(max_length=150, default="")
    user_type = fields.CharEnumField(Role, max_length=16, default=Role.CLIENT)
    is_active = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    last_login = fields.DatetimeField(null=True)
    # Access tokens issued before this instant are refused (set by a password reset).
    password_changed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "accounts_user"

    @property
    def is_staff(self) -> bool:
        return self.user_type in (Role.STAFF, Role.ADMIN)


class ClientProfile(Model):
    id = fields.IntField(primary_key=True)
    user: fields.OneToOneRelation[User] = fields.OneToOneField(
        "models.User", related_name="client_profile", on_delete=fields.CASCADE
    )
    company = fields.CharField(max_length=200, default="")  # the storefront's company_name
    phone = fields.CharField(max_length=40, default="")  # the storefront's mobile_number
    company_website = fields.CharField(max_length=200, default="")
    address = fields.CharField(max_length=255, default="")
    city = fields.CharField(max_length=100, default="")
    country = fields.CharField(max_length=100, default="")
    referral_code = fields.CharField(max_length=64, default="")  # as given at sign-up
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "accounts_client_profile"


class RefreshToken(Model):
    """One row per refresh token issued. A token is usable once: refreshing marks it used
    and issues its successor in the same family (``parent_jti`` is the token it came from);
    presenting a used or revoked token revokes the whole family (it was stolen or replayed),
    except within the short reuse grace window after its rotation (concurrent refreshes)."""

    jti = fields.CharField(max_length=64, primary_key=True)
    family = fields.CharField(max_length=64, db_index=True)
    parent_jti = fields.CharField(max_length=64, null=True, db_index=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="refresh_tokens", on_delete=fields.CASCADE
    )
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "accounts_refresh_token"


class PasswordResetToken(Model):
    """A password-reset link that was mailed. Only the SHA-256 of its token is stored; it
    works once, until ``expires_at``, and a reset uses up every other link of the user."""

    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="password_reset_tokens", on_delete=fields.CASCADE
    )
    token_hash = fields.CharField(max_length=64, unique=True)
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "accounts_password_reset_token"
