"""The chat area's settings section: ``settings.chat`` (``CHAT_*``, ``WS_ALLOW_MISSING_ORIGIN``).

Read and validated at start-up with the rest (:func:`slyker.settings.load_settings`), whether
or not the chat area is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from slyker.settings_reader import Reader, SettingsError

DEFAULT_CHAT_AUTO_REPLY = (
    "Thanks for your message. No {department} agent is online right now: we have your "
    "message and will reply here or by e-mail as soon as possible."
)
_DEPARTMENT_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class ChatSettings:
    departments: tuple[str, ...]
    staff_departments: tuple[str, ...]  # a visitor socket to these needs a signed-in user
    auto_replies: dict[str, str]  # per department: sent when no agent is online
    ping_interval: float
    typing_interval: float  # at most one typing event per conversation per this
    messages_per_second: int
    message_burst: int
    max_message_bytes: int
    send_queue_size: int
    agent_messages_per_second: int
    max_sockets_per_client: int
    new_conversations_per_minute: int
    auth_recheck_seconds: float
    # A socket that needs a user and got no token at the handshake waits this long for its
    # {"type": "auth", "token": ...} frame.
    auth_frame_timeout: float
    ws_allow_missing_origin: bool  # handshakes without Origin (non-browser clients)


def read_chat_settings(read: Reader) -> ChatSettings:
    departments = tuple(
        d.lower()
        for d in read.list("CHAT_DEPARTMENTS", ("sales", "support", "billing", "management"))
    )
    for department in departments:
        if not _DEPARTMENT_RE.fullmatch(department) or department == "agents":
            raise SettingsError("CHAT_DEPARTMENTS", f"{department!r} is not a department name")
    staff_only = tuple(d.lower() for d in read.list("CHAT_STAFF_DEPARTMENTS", ("management",)))
    for department in staff_only:
        if department not in departments:
            raise SettingsError(
                "CHAT_STAFF_DEPARTMENTS", f"{department!r} is not in CHAT_DEPARTMENTS"
            )
    return ChatSettings(
        departments=departments,
        staff_departments=staff_only,
        auto_replies={
            department: read.raw(f"CHAT_AUTO_REPLY_{department.upper().replace('-', '_')}")
            or (read.raw("CHAT_AUTO_REPLY") or DEFAULT_CHAT_AUTO_REPLY).format(
                department=department
            )
            for department in departments
        },
        # Seconds, fractions allowed (the tests run on sub-second intervals).
        ping_interval=read.float("CHAT_PING_INTERVAL", 25.0, minimum=0.1, maximum=3600.0),
        typing_interval=read.float("CHAT_TYPING_INTERVAL", 1.0, minimum=0.05, maximum=60.0),
        messages_per_second=read.int("CHAT_MESSAGES_PER_SECOND", 5, minimum=1),
        message_burst=read.int("CHAT_MESSAGE_BURST", 10, minimum=1),
        max_message_bytes=read.int("CHAT_MAX_MESSAGE_BYTES", 4096, minimum=64),
        send_queue_size=read.int("CHAT_SEND_QUEUE_SIZE", 100, minimum=1),
        agent_messages_per_second=read.int("CHAT_AGENT_MESSAGES_PER_SECOND", 500, minimum=1),
        max_sockets_per_client=read.int("CHAT_MAX_SOCKETS_PER_CLIENT", 20, minimum=1),
        new_conversations_per_minute=read.int("CHAT_NEW_CONVERSATIONS_PER_MINUTE", 30, minimum=1),
        auth_recheck_seconds=read.float(
            "CHAT_AUTH_RECHECK_SECONDS", 30.0, minimum=0.1, maximum=86400.0
        ),
        auth_frame_timeout=read.float("CHAT_AUTH_FRAME_TIMEOUT", 5.0, minimum=0.1, maximum=60.0),
        ws_allow_missing_origin=read.bool("WS_ALLOW_MISSING_ORIGIN", False),
    )
