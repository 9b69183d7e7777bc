"""Users, their client profiles, and the refresh-token record that makes rotation and
revocation real."""

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
    company = fields.CharField(max_length=200, default="")
    phone = fields.CharField(max_length=40, default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "accounts_client_profile"


class RefreshToken(Model):
    """One row per refresh token issued. A token is usable once: refreshing marks it used
    and issues its successor in the same family; presenting a used or revoked token revokes
    the whole family (it was stolen or replayed)."""

    jti = fields.CharField(max_length=64, primary_key=True)
    family = fields.CharField(max_length=64, db_index=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="refresh_tokens", on_delete=fields.CASCADE
    )
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "accounts_refresh_token"
