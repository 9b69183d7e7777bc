"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 (a free port, in its own thread),
which keeps every message it receives. slyker's real client (aiosmtplib) talks to it over
the network, so the tests see the mail exactly as a mailbox would."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.live_servers import HOST, free_port

LINK_RE = re.compile(r"https?://\S+")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, self.message
        return str(part.get_content())

    def link(self) -> str:
        links = LINK_RE.findall(self.text)
        assert len(links) == 1, self.text
        return str(links[0])

    def reset_params(self) -> dict[str, str]:
        """``uid`` and ``token`` from the link's query string."""
        query = parse_qs(urlsplit(self.link()).query)
        return {"uid": query["uid"][0], "token": query["token"][0]}


@dataclass
class Mailbox:
    """What the server received; ``delay`` seconds of thinking before accepting DATA."""

    delay: float = 0.0
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.messages)

    async def wait_for(self, count: int, seconds: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + seconds
        while len(self.snapshot()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} mails, got {len(self.snapshot())}")
            await asyncio.sleep(0.02)
        return self.snapshot()


@dataclass
class SMTPServer:
    mailbox: Mailbox
    port: int
    credentials: tuple[str, str] | None

    def settings(self, **extra: Any) -> dict[str, Any]:
        """slyker settings that send through this server."""
        settings: dict[str, Any] = {
            "SMTP_HOST": HOST,
            "SMTP_PORT": self.port,
            "SMTP_STARTTLS": False,
            "SMTP_TIMEOUT": 5,
        }
        if self.credentials:
            settings["SMTP_USERNAME"], settings["SMTP_PASSWORD"] = self.credentials
        return {**settings, **extra}


@contextmanager
def smtp_server(
    credentials: tuple[str, str] | None = None, delay: float = 0.0
) -> Iterator[SMTPServer]:
    """A running SMTP server; with ``credentials`` it requires AUTH with exactly those."""
    mailbox = Mailbox(delay=delay)
    options: dict[str, Any] = {}
    if credentials:
        login, password = credentials

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == login
                and data.password.decode() == password
            )
            return AuthResult(success=ok, handled=False)

        options = {"authenticator": authenticator, "auth_required": True}
    for attempt in range(3):  # a free port can be taken before the server binds it
        port = free_port()
        controller = Controller(
            mailbox,
            hostname=HOST,
            port=port,
            ready_timeout=5.0,
            auth_require_tls=False,
            **options,
        )
        try:
            controller.start()
        except OSError:
            if attempt == 2:
                raise
            continue
        break
    try:
        yield SMTPServer(mailbox, port, credentials)
    finally:
        controller.stop()


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a hung mail server)."""
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(8)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
