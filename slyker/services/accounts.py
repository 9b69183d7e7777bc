"""Accounts: creating users with their client profile, editing one's own profile, and
resetting a forgotten password by e-mail.

Profile fields are validated here (so the CLI and any other caller get the same rules as
the API): text is trimmed, bounded and free of control characters; a phone number is
lenient (``+263 77 123 4567``, ``(077) 123-4567``) but bounded; a website is http(s).

Password reset: the mailed link carries ``uid`` (the user id, base64url) and a random
``token`` of which only the SHA-256 is stored. A link works once, until it expires; using
one uses up every other link of the user, changes the password, refuses access tokens issued
before the change and revokes every refresh token of the user. Whether an address has an
account is never revealed: the request is answered before the account is even looked up,
and the look-up and the mail happen in a background task.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from slyker.auth import hash_password, revoke_user_refresh_tokens, verify_password
from slyker.models.accounts import ClientProfile, PasswordResetToken, Role, User
from slyker.passwords import password_problem
from slyker.services.errors import Conflict, InvalidInput
from slyker.services.mail import build_message, send_message
from slyker.settings import Settings

log = logging.getLogger(__name__)

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
EMAIL_TAKEN = "A user with this e-mail already exists."
INVALID_RESET_LINK = "The password reset link is invalid or has expired."

# --- validation ----------------------------------------------------------------------------

# Control characters (NUL, CR, LF, tab…), lone surrogates, line/paragraph separators and the
# bidirectional overrides that make a name display as something else.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_PHONE_RE = re.compile(r"\+?[0-9 ().\-]+")
_PHONE_DIGITS = (6, 20)
_REFERRAL_CODE_RE = re.compile(r"[A-Za-z0-9_-]*")


def clean_text(field: str, value: Any, max_length: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, "Must be a string.")
    value = value.strip()
    if len(value) > max_length:
        raise InvalidInput(field, f"Ensure this field has no more than {max_length} characters.")
    if any(unicodedata.category(c) in _FORBIDDEN_CATEGORIES or c in _BIDI_CONTROLS for c in value):
        raise InvalidInput(field, "Must not contain control characters.")
    return value


def clean_phone(field: str, value: Any) -> str:
    value = clean_text(field, value, 40)
    if not value:
        return ""
    digits = sum(c.isdigit() for c in value)
    low, high = _PHONE_DIGITS
    if not _PHONE_RE.fullmatch(value) or not low <= digits <= high:
        raise InvalidInput(
            field,
            f"Enter a phone number of {low} to {high} digits "
            "(digits, spaces, a leading +, and ( ) - . only).",
        )
    return value


def clean_website(field: str, value: Any) -> str:
    value = clean_text(field, value, 200)
    if not value:
        return ""
    candidate = value if "://" in value else f"https://{value}"
    try:
        parts = urlsplit(candidate)
        host = parts.hostname or ""
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        host = ""
        parts = urlsplit("")
    if (
        parts.scheme.lower() not in ("http", "https")
        or "." not in host
        or parts.username is not None
        or any(c.isspace() for c in value)
    ):
        raise InvalidInput(field, "Enter a web address such as https://example.com.")
    return value


def clean_referral_code(field: str, value: Any) -> str:
    value = clean_text(field, value, 64)
    if not _REFERRAL_CODE_RE.fullmatch(value):
        raise InvalidInput(field, "Use letters, digits, - and _ only.")
    return value


def _text(max_length: int) -> Callable[[str, Any], str]:
    return lambda field, value: clean_text(field, value, max_length)


@dataclass(frozen=True)
class ProfileField:
    attribute: str  # the ClientProfile column
    clean: Callable[[str, Any], str]


# The storefront's names (and the older ``company``/``phone``) → client profile columns.
PROFILE_FIELDS: dict[str, ProfileField] = {
    "mobile_number": ProfileField("phone", clean_phone),
    "phone": ProfileField("phone", clean_phone),
    "company_name": ProfileField("company", _text(200)),
    "company": ProfileField("company", _text(200)),
    "company_website": ProfileField("company_website", clean_website),
    "address": ProfileField("address", _text(255)),
    "city": ProfileField("city", _text(100)),
    "country": ProfileField("country", _text(100)),
}
NAME_FIELDS = {"first_name": 150, "last_name": 150}
# What the owner may change with PATCH users/me/ (email has rules of its own).
EDITABLE_FIELDS = frozenset({"email", *NAME_FIELDS, *PROFILE_FIELDS})


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_password(field: str, password: Any) -> str:
    if not isinstance(password, str):
        raise InvalidInput(field, "Must be a string.")
    if len(password) < PASSWORD_MIN_LENGTH:
        raise InvalidInput(field, f"String should have at least {PASSWORD_MIN_LENGTH} characters")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise InvalidInput(field, f"String should have at most {PASSWORD_MAX_LENGTH} characters")
    problem = password_problem(password)
    if problem is not None:
        raise InvalidInput(field, problem)
    return password


def clean_profile(details: Mapping[str, Any]) -> dict[str, str]:
    """Profile columns from API fields (``None`` = not given). An alias pair
    (``mobile_number``/``phone``, ``company_name``/``company``) must agree if both are given."""
    columns: dict[str, str] = {}
    given_by: dict[str, str] = {}
    for name, value in details.items():
        spec = PROFILE_FIELDS.get(name)
        if spec is None or value is None:
            continue
        cleaned = spec.clean(name, value)
        if spec.attribute in columns and columns[spec.attribute] != cleaned:
            other = given_by[spec.attribute]
            raise InvalidInput(name, f"Disagrees with {other}; send only one of them.")
        columns[spec.attribute] = cleaned
        given_by[spec.attribute] = name
    return columns


def clean_names(details: Mapping[str, Any]) -> dict[str, str]:
    return {
        name: clean_text(name, details[name], max_length)
        for name, max_length in NAME_FIELDS.items()
        if details.get(name) is not None
    }


# --- users ---------------------------------------------------------------------------------


def email_taken() -> Conflict:
    return Conflict(f"email: {EMAIL_TAKEN}", code="email_taken", errors={"email": [EMAIL_TAKEN]})


async def create_user(email: str, password: str, role: Role = Role.CLIENT, **details: Any) -> User:
    """A user and the client profile every account has. ``details``: first/last name, the
    profile fields of :data:`PROFILE_FIELDS` and ``referral_code``; ``None`` = not given."""
    check_password("password", password)
    names = clean_names(details)
    profile = clean_profile(details)
    if details.get("referral_code") is not None:
        profile["referral_code"] = clean_referral_code("referral_code", details["referral_code"])
    password_hash = await hash_password(password)
    try:
        async with in_transaction():
            user = await User.create(
                email=normalise_email(email), password_hash=password_hash, user_type=role, **names
            )
            await ClientProfile.create(user=user, **profile)
    except IntegrityError:
        raise email_taken() from None
    return user


async def profile_of(user: User) -> ClientProfile:
    """The user's client profile (created empty if an old account has none)."""
    profile, _ = await ClientProfile.get_or_create(user=user)
    return profile


async def update_user(
    user: User, changes: Mapping[str, Any], current_password: str | None = None
) -> User:
    """Apply the owner's changes (only :data:`EDITABLE_FIELDS`; ``None`` clears a profile
    field). A new e-mail address needs the current password and must be free; it uses up
    the user's outstanding password-reset links."""
    names = clean_names(changes)
    for name in NAME_FIELDS:
        if name in changes and changes[name] is None:
            names[name] = ""
    profile = clean_profile(changes)
    for name, spec in PROFILE_FIELDS.items():
        if name in changes and changes[name] is None:
            profile.setdefault(spec.attribute, "")
    new_email: str | None = None
    if "email" in changes:
        if not isinstance(changes["email"], str) or not changes["email"].strip():
            raise InvalidInput("email", "Enter a valid e-mail address.")
        candidate = normalise_email(changes["email"])
        if candidate != user.email:
            if not current_password:
                raise InvalidInput(
                    "current_password", "Enter your current password to change your e-mail."
                )
            if not await verify_password(user, current_password):
                raise InvalidInput("current_password", "The password is not correct.")
            new_email = candidate
    try:
        async with in_transaction() as connection:
            user_changes: dict[str, Any] = dict(names)
            if new_email is not None:
                user_changes["email"] = new_email
            if user_changes:
                await User.filter(id=user.id).using_db(connection).update(**user_changes)
            if profile:
                await ClientProfile.get_or_create(user_id=user.id, using_db=connection)
                await ClientProfile.filter(user_id=user.id).using_db(connection).update(**profile)
            if new_email is not None:
                await (
                    PasswordResetToken.filter(user_id=user.id, used_at__isnull=True)
                    .using_db(connection)
                    .update(used_at=datetime.now(UTC))
                )
    except IntegrityError:
        raise email_taken() from None
    if new_email is not None:
        log.info("User %s changed their e-mail address", user.id)
    return await User.get(id=user.id)


# --- password reset ------------------------------------------------------------------------


def make_uid(user_id: int) -> str:
    return base64.urlsafe_b64encode(str(user_id).encode()).rstrip(b"=").decode()


def parse_uid(uid: str) -> int | None:
    try:
        padded = uid + "=" * (-len(uid) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 2**31:
        return None
    return int(text)


def hash_reset_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def reset_link(template: str, uid: str, token: str) -> str:
    """The storefront page: ``{uid}`` and ``{token}`` substituted, else added to the query."""
    if "{uid}" in template:
        return template.replace("{uid}", uid).replace("{token}", token)
    parts = urlsplit(template)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("uid", uid), ("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def reset_mail_text(user: User, link: str, lifetime_minutes: int) -> str:
    greeting = f"Hello {user.first_name}," if user.first_name else "Hello,"
    return (
        f"{greeting}\n\n"
        f"Someone (we hope you) asked to reset the password of the Slyker Tech account "
        f"{user.email}.\nOpen this link to choose a new password. It works once, for "
        f"{lifetime_minutes} minutes:\n\n{link}\n\n"
        "If you did not ask for this, ignore this e-mail: your password stays as it is.\n"
    )


async def send_password_reset(settings: Settings, email: str) -> bool:
    """Background work of a reset request: a link for an active account, mailed; nothing
    (but a log line) for an unknown address. ``True`` if a mail went out."""
    user = await User.get_or_none(email=normalise_email(email), is_active=True)
    if user is None:
        log.info("Password reset requested for an address without an active account")
        return False
    token = secrets.token_urlsafe(32)
    await PasswordResetToken.create(
        user=user,
        token_hash=hash_reset_token(token),
        expires_at=datetime.now(UTC) + settings.accounts.password_reset_token_lifetime,
    )
    link = reset_link(settings.accounts.password_reset_url, make_uid(user.id), token)
    minutes = int(settings.accounts.password_reset_token_lifetime.total_seconds() // 60)
    message = build_message(
        settings,
        user.email,
        "Reset your Slyker Tech password",
        reset_mail_text(user, link, minutes),
    )
    return await send_message(settings, message, f"password reset for user {user.id}")


def invalid_reset_link() -> InvalidInput:
    return InvalidInput("token", INVALID_RESET_LINK, code="invalid_token")


async def confirm_password_reset(uid: str, token: str, new_password: str) -> User:
    """Set a new password with a mailed link: once, before it expires."""
    check_password("new_password", new_password)
    user_id = parse_uid(uid)
    if user_id is None:
        raise invalid_reset_link()
    now = datetime.now(UTC)
    record = await PasswordResetToken.get_or_none(
        token_hash=hash_reset_token(token), user_id=user_id
    )
    user = await User.get_or_none(id=user_id, is_active=True)
    if record is None or user is None or record.used_at is not None or record.expires_at <= now:
        raise invalid_reset_link()
    password_hash = await hash_password(new_password)
    async with in_transaction() as connection:
        # Conditional on "unused and unexpired": of two concurrent confirmations one wins.
        claimed = (
            await PasswordResetToken.filter(id=record.id, used_at__isnull=True, expires_at__gt=now)
            .using_db(connection)
            .update(used_at=now)
        )
        if not claimed:
            raise invalid_reset_link()
        await (
            User.filter(id=user_id)
            .using_db(connection)
            .update(password_hash=password_hash, password_changed_at=now)
        )
        await (
            PasswordResetToken.filter(user_id=user_id, used_at__isnull=True)
            .using_db(connection)
            .update(used_at=now)
        )
        await revoke_user_refresh_tokens(user_id, connection)
    log.info("User %s reset their password: every refresh token is revoked", user_id)
    return await User.get(id=user_id)
