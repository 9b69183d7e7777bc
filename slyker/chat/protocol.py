"""The chat protocol: frame types, close codes, the error frames, and parsing of client input
(../shared/contract/chat-protocol.md describes what the widgets speak)."""

from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from typing import Any

from slyker.chat.broker import Event

GREETING = "Connected to Slyker Tech Live Support"
CLOSE_NOT_AUTHENTICATED = 4001
CLOSE_NOT_STAFF = 4003
CLOSE_TRY_AGAIN_LATER = 1013  # too slow a reader, or too many sockets from one address
CLOSE_POLICY_VIOLATION = 1008  # kept flooding after being told
CLOSE_TOO_BIG = 1009
CLOSE_GOING_AWAY = 1001  # the server is stopping: reconnect (to another worker)

VISITOR_MESSAGE_TYPES = {None, "message", "chat_message"}
AGENT_FRAME_TYPES = ("message", "typing", "close")
# Events that carry a stored message's id, and so are delivered at most once per socket.
MESSAGE_EVENT_TYPES = {"message", "system", "agent_message"}

# Characters no message may carry: NUL and other C0 controls (PostgreSQL refuses NUL in text),
# DEL, and UTF-16 surrogates (a JSON "\ud800" escape gives one; no database can store it).
_FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
MAX_CLIENT_ID_LENGTH = 64
MAX_MESSAGE_ID = 2**31 - 1  # ids are 32-bit integers in the database
MAX_ECHOED_NUMBER = 2**53  # a pong echoes a timestamp only if JavaScript can read it back


def error_event(message: str, code: str, **extra: Any) -> Event:
    return {"type": "error", "message": message, "code": code, **extra}


FORBIDDEN_SESSION = error_event(
    "This conversation belongs to another connection", "forbidden_session"
)
SESSION_MISMATCH = error_event("session_id does not match this connection", "session_mismatch")
INVALID_SESSION = error_event("session_id must be a UUID", "invalid_session")
INVALID_AFTER = error_event(
    "after must be the id of the last message received (a whole number)", "invalid_after"
)
INVALID_TEXT = error_event("Message contains characters that cannot be sent", "invalid_text")
NOT_SENT = error_event(
    "Your message was not sent (the service is having trouble); please send it again",
    "not_sent",
)
EMPTY_MESSAGE = error_event("Message cannot be empty", "empty_message")
UNKNOWN_TYPE = error_event("Unknown message type", "unknown_type")
UNKNOWN_SESSION = error_event("Unknown session_id", "unknown_session")
SERVER_ERROR = error_event("Something went wrong; please try again", "server_error")


def storable_text(text: str) -> bool:
    return _FORBIDDEN_CHARACTERS.search(text) is None


def clean_name(value: object, default: str) -> str:
    """A display name from client input: text only, without control or surrogate characters."""
    if not isinstance(value, str):
        return default
    name = "".join(
        c for c in value[:1000] if unicodedata.category(c) not in {"Cc", "Cs", "Cf"}
    ).strip()
    return name[:100] or default


def client_id_of(frame: dict[str, Any] | None) -> str | int | None:
    """The ``client_id`` a client put in a frame to match our answer (an ``ack`` or an
    ``error``) to it: short text or a whole number JavaScript can read back."""
    value = (frame or {}).get("client_id")
    if isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_ID_LENGTH and value.isprintable():
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_ECHOED_NUMBER:
        return value
    return None


def parse_uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str) or len(value) > 100:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def parse_after(value: object) -> int | None:
    """A message id the client has seen (0: none); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_MESSAGE_ID:
        return value
    return None


def parse_frame(raw: str) -> dict[str, Any] | None:
    try:
        frame = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return None
    return frame if isinstance(frame, dict) else None


def echoed_timestamp(value: object) -> object:
    """A ping's timestamp as the pong may carry it back: short text or a finite number."""
    if isinstance(value, str) and len(value) <= 64:
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and math.isfinite(value) and abs(value) <= MAX_ECHOED_NUMBER:  # type: ignore[arg-type]
        return value
    return None


def frame_type(frame: dict[str, Any]) -> str | None:
    kind = frame.get("type")
    return kind if kind is None or isinstance(kind, str) else "(invalid)"


def message_text(frame: dict[str, Any]) -> str | Event:
    """The text of a message frame, stripped, or the error frame that answers it."""
    text = frame.get("message")
    if not isinstance(text, str) or not text.strip():
        return EMPTY_MESSAGE
    if not storable_text(text):
        return INVALID_TEXT
    return text.strip()
