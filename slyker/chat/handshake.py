"""The WebSocket handshake: the ``Origin`` check before accept, the staff access token, and
the visitor key that binds a conversation to the browser that started it.

The ``Origin`` of every handshake is checked with the one origin policy **before** accept: a
refused handshake is an HTTP 403 and no handler code runs. Everything else is reported after
accept, so that the browser actually sees it: identity (close 4001 / 4003), too many sockets
from one address (close 1013), sustained flooding (close 1008).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from hypercorn.protocol import ws_stream
from quart import abort, websocket
from werkzeug.http import dump_cookie
from wsproto.extensions import PerMessageDeflate

from slyker.auth import ACCESS, decode_token
from slyker.chat.service import (
    VISITOR_KEY_COOKIE,
    issue_visitor_key,
    valid_visitor_key,
    visitor_key_hash,
)
from slyker.errors import APIError
from slyker.models.accounts import User
from slyker.origins import LOOPBACK_HOSTS, OriginPolicy
from slyker.settings import Settings

log = logging.getLogger(__name__)

BEARER_PROTOCOL = "bearer"
MAX_TOKEN_LENGTH = 2048


class DeclinedDeflate(PerMessageDeflate):
    """permessage-deflate, declined when a client offers it: chat frames go uncompressed.

    Why: Hypercorn accepts the extension on every socket it is offered on (browsers and the
    ``websockets`` client always offer it) with a 32 KiB window and context takeover, so every
    socket that received one frame kept a zlib compressor of its own: ~95 KiB of RSS per idle
    socket (146 KiB with it, 52 without, measured over 1,000 idle sockets), and deflating every
    small frame was ~12 % of the worker's CPU under load. Chat frames are a few hundred bytes;
    the bandwidth saved was not worth either. Declining is plain RFC 7692 negotiation: the
    client then sends uncompressed frames too. Hypercorn has no setting for it."""

    def accept(self, offer: str) -> None:
        return None


def decline_compression() -> None:
    """Before a chat socket's accept: Hypercorn's handshake uses :class:`DeclinedDeflate`.
    (Slyker's only WebSockets are chat's; under the test client this changes nothing.)"""
    if ws_stream.PerMessageDeflate is not DeclinedDeflate:
        ws_stream.PerMessageDeflate = DeclinedDeflate  # type: ignore[misc]


def check_origin(settings: Settings) -> None:
    """Before accept: an allowed CORS origin, or the same-host rule; else HTTP 403. Exactly
    one Origin header: with two, a check of the first could pass what a browser sent second."""
    origins = websocket.headers.getlist("Origin")
    if len(origins) > 1:
        log.warning(
            "WebSocket origin rejected: %d Origin headers on %s", len(origins), websocket.path
        )
        abort(403)
    origin = origins[0] if origins else None
    if origin is None:
        if settings.chat.ws_allow_missing_origin:
            return
        log.warning("WebSocket origin rejected: (missing) on %s", websocket.path)
        abort(403)
    if settings.origin_policy.is_allowed(origin) or OriginPolicy.is_same_host(
        origin, websocket.headers.get("Host"), settings.allowed_hosts
    ):
        log.debug("WebSocket origin validated: %s", origin)
        return
    log.warning("WebSocket origin rejected: %s on %s", repr(origin)[:300], websocket.path)
    abort(403)


# --- staff: the access token ---------------------------------------------------------------


@dataclass(slots=True)
class Identity:
    """The user of a socket's token, re-checked while the socket lives."""

    user: User
    expires_at: float  # the token's exp (seconds since the epoch)
    staff: bool = False  # the socket is for staff only


def offered_token() -> tuple[str | None, str | None]:
    """The handshake's access token and the subprotocol to answer with.

    ``Sec-WebSocket-Protocol: bearer, <token>`` (the answer names only ``bearer``), else
    ``?token=`` (older clients; a query string ends up in proxies' logs, see docker/README.md).
    Without either, a socket that needs a user waits for an ``auth`` frame
    (:func:`auth_frame_token`)."""
    protocols = [protocol.strip() for protocol in websocket.requested_subprotocols]
    if protocols and protocols[0].lower() == BEARER_PROTOCOL:
        token = protocols[1] if len(protocols) == 2 else None
        return token or None, BEARER_PROTOCOL
    return websocket.args.get("token") or None, None


async def auth_frame_token(settings: Settings) -> str | None:
    """The token of the first frame, ``{"type": "auth", "token": "..."}``, sent within
    CHAT_AUTH_FRAME_TIMEOUT of the accept; None for anything else (or nothing)."""
    try:
        async with asyncio.timeout(settings.chat.auth_frame_timeout):
            raw = await websocket.receive()
    except TimeoutError:
        return None
    if isinstance(raw, bytes) or len(raw) > MAX_TOKEN_LENGTH + 100:
        return None
    try:
        frame = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(frame, dict) or frame.get("type") != "auth":
        return None
    token = frame.get("token")
    return token if isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_LENGTH else None


async def socket_identity(token: str | None) -> tuple[Identity | None, bool]:
    """The identity of ``token``; (None, False) without a token; (None, True) for a bad one."""
    if not token:
        return None, False
    try:
        claims = decode_token(token, ACCESS)
    except APIError:
        return None, True
    user = await User.get_or_none(id=int(claims["sub"]), is_active=True)
    if user is None:
        return None, True
    return Identity(user, float(claims["exp"])), False


# --- visitors: the visitor key ---------------------------------------------------------------


@dataclass(slots=True)
class VisitorKey:
    """The browser's visitor key (from its cookie or ``?resume_token=``, else a new one), and
    the hashes of every key this socket has proved."""

    key: str
    cookie_outdated: bool  # the browser must be sent the key as a cookie
    hashes: set[str]

    @classmethod
    def of_handshake(cls, secret_key: str) -> VisitorKey:
        cookie_key = valid_visitor_key(secret_key, websocket.cookies.get(VISITOR_KEY_COOKIE))
        query_key = valid_visitor_key(secret_key, websocket.args.get("resume_token"))
        key = cookie_key or query_key or issue_visitor_key(secret_key)
        hashes = {visitor_key_hash(k) for k in (key, query_key) if k is not None}
        return cls(key, cookie_key != key, hashes)

    def accept_headers(self) -> dict[str, str]:
        """The visitor key as an HttpOnly cookie: browsers keep cookies set on a WebSocket
        handshake and send them on the next one, so the widget, which keeps nothing itself,
        can continue its conversation after a reconnect."""
        if not self.cookie_outdated:
            return {}
        host = websocket.host.lower()
        host = host if host.endswith("]") else host.rsplit(":", 1)[0]
        cookie = dump_cookie(
            VISITOR_KEY_COOKIE,
            self.key,
            httponly=True,
            secure=host.lower() not in LOOPBACK_HOSTS,
            samesite="Lax",
            path="/",
        )
        return {"Set-Cookie": cookie}
