"""Outgoing e-mail: over SMTP (aiosmtplib) when ``SMTP_HOST`` is set, else into the log.

Callers send from a background task (never on a request's path) and get ``True`` or
``False`` back: a failure is logged here, with the recipient's user id rather than the
address where the caller gives one, and never raised.
"""

from __future__ import annotations

import asyncio
import logging
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

import aiosmtplib

from slyker.settings import Settings

log = logging.getLogger(__name__)


def build_message(settings: Settings, to: str, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.accounts.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    domain = parseaddr(settings.accounts.mail_from)[1].rpartition("@")[2] or None
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(text)
    return message


async def send_message(settings: Settings, message: EmailMessage, label: str = "") -> bool:
    """Deliver ``message``; ``label`` names it in the log (e.g. "password reset for user 7").

    Bounded by ``SMTP_TIMEOUT`` for each SMTP step and twice that overall."""
    what = label or str(message["Subject"])
    if settings.accounts.smtp_host is None:
        log.info(
            "E-mail not sent (SMTP_HOST is not set), here it is instead: %s\nTo: %s\n"
            "Subject: %s\n\n%s",
            what,
            message["To"],
            message["Subject"],
            message.get_body(preferencelist=("plain",)).get_content(),  # type: ignore[union-attr]
        )
        return True
    try:
        async with asyncio.timeout(settings.accounts.smtp_timeout * 2):
            await aiosmtplib.send(
                message,
                hostname=settings.accounts.smtp_host,
                port=settings.accounts.smtp_port,
                username=settings.accounts.smtp_username or None,
                password=settings.accounts.smtp_password or None,
                start_tls=settings.accounts.smtp_starttls,
                timeout=settings.accounts.smtp_timeout,
            )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
        log.error(
            "E-mail failed (%s via %s:%s): %s: %s",
            what,
            settings.accounts.smtp_host,
            settings.accounts.smtp_port,
            type(error).__name__,
            error,
        )
        return False
    except Exception:  # a bug here must not surface in the task that sent it
        log.exception("E-mail failed (%s)", what)
        return False
    log.info("E-mail sent: %s", what)
    return True


def announce_mail_mode(settings: Settings) -> None:
    """Say once, at start-up, where e-mail goes."""
    if settings.accounts.smtp_host is None:
        log.warning(
            "SMTP_HOST is not set: e-mails (password-reset links) are written to this log "
            "instead of being sent"
        )
    else:
        log.info(
            "E-mail is sent through %s:%s (STARTTLS %s)",
            settings.accounts.smtp_host,
            settings.accounts.smtp_port,
            "required" if settings.accounts.smtp_starttls else "off",
        )
