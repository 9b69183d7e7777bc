"""Live chat: a conversation per visitor session, and its messages (stored before they are
delivered, so a reconnecting client can always resync by the last message id)."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from slyker.models.accounts import User


class ConversationStatus(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"


class SenderType(StrEnum):
    USER = "user"
    AGENT = "agent"
    SYSTEM = "system"


class Conversation(Model):
    id = fields.IntField(primary_key=True)
    session_id = fields.UUIDField(unique=True)  # chosen by the widget, one per page load
    # SHA-256 of the server-issued visitor key of the browser that started the conversation:
    # only a socket proving that key (cookie or resume_token), or the same signed-in user, may
    # read or post to it. The session id alone is not a secret: any client can send one.
    owner_key_hash = fields.CharField(max_length=64, null=True)
    user: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="conversations", null=True, on_delete=fields.SET_NULL
    )
    visitor_name = fields.CharField(max_length=100, default="Visitor")
    department = fields.CharField(max_length=32, db_index=True)
    status = fields.CharEnumField(
        ConversationStatus, max_length=16, default=ConversationStatus.ACTIVE
    )
    auto_reply_sent = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    last_active_at = fields.DatetimeField(auto_now_add=True)
    closed_at = fields.DatetimeField(null=True)

    messages: fields.ReverseRelation[ChatMessage]

    class Meta:
        table = "chat_conversation"
        ordering = ["-last_active_at"]


class ChatMessage(Model):
    id = fields.IntField(primary_key=True)
    conversation: fields.ForeignKeyRelation[Conversation] = fields.ForeignKeyField(
        "models.Conversation", related_name="messages", on_delete=fields.CASCADE
    )
    sender_type = fields.CharEnumField(SenderType, max_length=16)
    sender_name = fields.CharField(max_length=150)
    text = fields.TextField()
    # A notice ("closed by ...") is shown as a system line, not as a chat bubble.
    is_notice = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "chat_message"
        ordering = ["id"]
