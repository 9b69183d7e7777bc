"""The accounts area's settings section: ``settings.accounts`` (``JWT_*``, ``SMTP_*``,
``MAIL_FROM``, ``PASSWORD_RESET_*``).

Read and validated at start-up with the rest (:func:`slyker.settings.load_settings`), whether
or not the accounts area is installed: the core's identity check reads the token lifetimes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parseaddr
from urllib.parse import urlsplit

from slyker.settings_reader import Reader, SettingsError

DEFAULT_MAIL_FROM = "Slyker Tech <no-reply@slykertech.co.zw>"
RESET_PAGE = "/reset-password?uid={uid}&token={token}"
_HEADER_UNSAFE_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class AccountsSettings:
    jwt_access_token_lifetime: timedelta
    jwt_refresh_token_lifetime: timedelta
    jwt_refresh_reuse_grace: timedelta
    smtp_host: str | None  # None: e-mails are written to the log instead of being sent
    smtp_port: int
    smtp_username: str
    smtp_password: str
    smtp_starttls: bool
    smtp_timeout: float  # seconds, fractions allowed
    mail_from: str
    password_reset_url: str
    password_reset_token_lifetime: timedelta


def read_accounts_settings(read: Reader, front_end_origins: Sequence[str]) -> AccountsSettings:
    """SMTP, the password-reset mail and token lifetimes. Without SMTP_HOST mail goes to the
    log. ``front_end_origins`` (the core's CORS origins) give the reset page's default."""
    username = read.raw("SMTP_USERNAME") or ""
    password = read.raw("SMTP_PASSWORD") or ""
    if bool(username) != bool(password):
        raise SettingsError(
            "SMTP_PASSWORD" if username else "SMTP_USERNAME",
            "SMTP_USERNAME and SMTP_PASSWORD are set together or not at all",
        )
    mail_from = read.raw("MAIL_FROM") or DEFAULT_MAIL_FROM
    _, address = parseaddr(mail_from)
    if "@" not in address or _HEADER_UNSAFE_RE.search(mail_from):
        raise SettingsError("MAIL_FROM", f"expected an e-mail address, got {mail_from!r}")
    reset_url = read.raw("PASSWORD_RESET_URL") or front_end_origins[0] + RESET_PAGE
    parsed = urlsplit(reset_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or " " in reset_url:
        raise SettingsError("PASSWORD_RESET_URL", f"expected an http(s) URL, got {reset_url!r}")
    placeholders = ("{uid}" in reset_url, "{token}" in reset_url)
    if any(placeholders) and not all(placeholders):
        raise SettingsError("PASSWORD_RESET_URL", "needs both {uid} and {token}, or neither")
    return AccountsSettings(
        jwt_access_token_lifetime=timedelta(
            minutes=read.int("JWT_ACCESS_TOKEN_LIFETIME", 120, minimum=1)
        ),
        jwt_refresh_token_lifetime=timedelta(
            minutes=read.int("JWT_REFRESH_TOKEN_LIFETIME", 10080, minimum=1)
        ),
        # Seconds, fractions allowed (the tests run on sub-second windows); 0 disables it.
        jwt_refresh_reuse_grace=timedelta(
            seconds=read.float("JWT_REFRESH_REUSE_GRACE_SECONDS", 30.0, minimum=0.0, maximum=300.0)
        ),
        smtp_host=read.raw("SMTP_HOST") or None,
        smtp_port=read.port("SMTP_PORT", 587),
        smtp_username=username,
        smtp_password=password,
        smtp_starttls=read.bool("SMTP_STARTTLS", True),
        smtp_timeout=read.float("SMTP_TIMEOUT", 10.0, minimum=0.1, maximum=3600.0),
        mail_from=mail_from,
        password_reset_url=reset_url,
        password_reset_token_lifetime=timedelta(
            minutes=read.int("PASSWORD_RESET_TOKEN_LIFETIME", 60, minimum=1)
        ),
    )
