"""Chat operations shared by the sockets and the staff REST endpoints: every message is
stored first, then published, so what a client missed can always be replayed by id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from quart import current_app

from slyker.chat.broker import Broker, InProcessBroker, RedisBroker
from slyker.chat.schemas import MessageOut
from slyker.chat.writer import NewMessage, current_writer
from slyker.models.accounts import User
from slyker.models.chat import ChatMessage, Conversation, ConversationStatus, SenderType

BROKER_KEY = "slyker.chat.broker"
VISITOR_KEY_COOKIE = "slyker_chat"
_VISITOR_KEY_RE = re.compile(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}")


def make_broker(redis_url: str | None) -> Broker:
    return RedisBroker(redis_url) if redis_url else InProcessBroker()


def current_broker() -> Broker:
    return current_app.extensions[BROKER_KEY]  # type: ignore[no-any-return]


def session_channel(session_id: uuid.UUID | str) -> str:
    return f"session:{session_id}"


def department_channel(department: str) -> str:
    return f"department:{department}"


def display_name(user: User) -> str:
    return f"{user.first_name} {user.last_name}".strip() or user.email


# --- who may use a conversation -------------------------------------------------------------


def _key_mac(secret_key: str, nonce: str) -> str:
    digest = hmac.new(secret_key.encode(), b"chat-visitor:" + nonce.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def issue_visitor_key(secret_key: str) -> str:
    """A new visitor key: random, and signed so that only keys this server issued count."""
    nonce = secrets.token_urlsafe(32)
    return f"{nonce}.{_key_mac(secret_key, nonce)}"


def valid_visitor_key(secret_key: str, value: object) -> str | None:
    if not isinstance(value, str) or not _VISITOR_KEY_RE.fullmatch(value):
        return None
    nonce, mac = value.split(".")
    return value if hmac.compare_digest(mac, _key_mac(secret_key, nonce)) else None


def visitor_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def may_use(
    conversation: Conversation, department: str, key_hashes: set[str], user: User | None
) -> bool:
    """Only in its own department, and only for the browser that started it (its visitor key)
    or the signed-in user it belongs to: a session id is not a secret."""
    if conversation.department != department:
        return False
    if conversation.owner_key_hash is not None and conversation.owner_key_hash in key_hashes:
        return True
    return user is not None and conversation.user_id == user.id


def message_event(message: ChatMessage, conversation: Conversation) -> dict[str, Any]:
    """The frame of a stored message (the staff API's message shape, too)."""
    return MessageOut.of(message, conversation).model_dump()


async def store_message(
    conversation: Conversation,
    sender_type: SenderType,
    sender_name: str,
    text: str,
    notice: bool = False,
    on_stored: Callable[[ChatMessage], None] | None = None,
) -> ChatMessage:
    """Store a message (group commit: :mod:`slyker.chat.writer`); ``on_stored`` publishes it
    once stored, before anything stored after it."""
    return await current_writer().store(
        NewMessage(conversation, sender_type, sender_name, text, notice, on_stored=on_stored)
    )


async def open_conversation(
    session_id: uuid.UUID,
    department: str,
    visitor_name: str,
    user: User | None,
    owner_key_hash: str,
    may_continue: Callable[[Conversation], bool],
) -> tuple[Conversation | None, bool]:
    """A new conversation owned by ``owner_key_hash``, or the existing one of ``session_id`` if
    ``may_continue`` allows it (reopened if it was closed); else (None, False).

    On SQLite a new one is created by the message writer, with whatever else it is storing
    (one transaction for many new visitors, not one each); only a session id that turns out
    to be taken goes on to the look-up below."""
    writer = current_writer()
    if writer.can_open():
        opened = await writer.open(
            Conversation(
                session_id=session_id,
                department=department,
                visitor_name=visitor_name,
                user=user,
                owner_key_hash=owner_key_hash,
            )
        )
        if opened is not None:
            return opened, True
    conversation, created = await Conversation.get_or_create(
        session_id=session_id,
        defaults={
            "department": department,
            "visitor_name": visitor_name,
            "user": user,
            "owner_key_hash": owner_key_hash,
        },
    )
    if created:
        return conversation, True
    if not may_continue(conversation):
        return None, False
    if conversation.status == ConversationStatus.CLOSED:
        await Conversation.filter(id=conversation.id).update(
            status=ConversationStatus.ACTIVE, closed_at=None
        )
        await conversation.refresh_from_db()
    return conversation, created


def agent_reply(
    conversation: Conversation, agent: User, text: str, agent_name: str | None = None
) -> NewMessage:
    """An agent's reply, to store; once stored it is delivered live to the visitor and to the
    other agents."""

    broker = current_broker()  # the callback runs in the writer's task

    def deliver(message: ChatMessage) -> None:
        event = {
            **message_event(message, conversation),
            "sender_type": "agent",
            "agent_id": agent.id,
        }
        broker.publish_now(session_channel(conversation.session_id), event)
        broker.publish_now(
            department_channel(conversation.department), {**event, "type": "agent_message"}
        )

    name = agent_name or display_name(agent)
    return NewMessage(conversation, SenderType.AGENT, name, text, on_stored=deliver)


async def post_agent_reply(conversation: Conversation, agent: User, text: str) -> ChatMessage:
    """Store an agent's reply and deliver it live to the visitor and to the other agents."""
    return await current_writer().store(agent_reply(conversation, agent, text))


async def close_conversation(conversation: Conversation, closed_by: str) -> None:
    closed = await Conversation.filter(id=conversation.id, status=ConversationStatus.ACTIVE).update(
        status=ConversationStatus.CLOSED, closed_at=datetime.now(UTC)
    )
    if not closed:
        return

    broker = current_broker()  # the callback runs in the writer's task

    def deliver(notice: ChatMessage) -> None:
        broker.publish_now(
            session_channel(conversation.session_id), message_event(notice, conversation)
        )
        broker.publish_now(
            department_channel(conversation.department),
            {"type": "conversation_closed", "session_id": str(conversation.session_id)},
        )

    await store_message(
        conversation,
        SenderType.SYSTEM,
        "Slyker Tech",
        f"This conversation was closed by {closed_by}.",
        notice=True,
        on_stored=deliver,
    )
