"""The shapes chat sends: the staff REST responses (declared with quart-schema) and the
conversation and message objects the sockets carry in their frames.

Times are the ISO 8601 text Python writes (``2026-01-02T03:04:05.123456+00:00``), as the
widgets and the staff pages have always received them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from slyker.chat.protocol import storable_text
from slyker.models.chat import ChatMessage, Conversation


class ConversationOut(BaseModel):
    id: int
    session_id: str
    visitor_name: str
    department: str
    status: str
    user: int | None
    created_at: str
    last_active_at: str
    closed_at: str | None

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationOut:
        return cls(
            id=conversation.id,
            session_id=str(conversation.session_id),
            visitor_name=conversation.visitor_name,
            department=conversation.department,
            status=str(conversation.status),
            user=conversation.user_id,  # type: ignore[attr-defined]
            created_at=conversation.created_at.isoformat(),
            last_active_at=conversation.last_active_at.isoformat(),
            closed_at=conversation.closed_at.isoformat() if conversation.closed_at else None,
        )

    def frame(self) -> dict[str, Any]:
        """As a socket frame carries it."""
        return self.model_dump()


class ConversationSummary(ConversationOut):
    message_count: int
    last_message: str | None


class ConversationPage(BaseModel):
    count: int
    next: str | None
    previous: str | None
    results: list[ConversationSummary]


class MessageOut(BaseModel):
    type: Literal["message", "system"]
    id: int
    session_id: str
    department: str
    message: str
    sender: str
    sender_type: str
    created_at: str
    success: bool

    @classmethod
    def of(cls, message: ChatMessage, conversation: Conversation) -> MessageOut:
        return cls(
            type="system" if message.is_notice else "message",
            id=message.id,
            session_id=str(conversation.session_id),
            department=conversation.department,
            message=message.text,
            sender=message.sender_name,
            sender_type=str(message.sender_type),
            created_at=message.created_at.isoformat(),
            success=True,
        )


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]


class DepartmentStats(BaseModel):
    active: int
    closed: int
    agents_online: int


class ConversationStats(BaseModel):
    total: int
    active: int
    closed: int
    messages: int
    by_department: dict[str, DepartmentStats]


class SessionQuery(BaseModel):
    """``?status=`` (checked by the service: its error is ``{"status": ["invalid"]}``), and
    the page (:class:`slyker.pagination.PageQuery`, read by ``paginate``)."""

    status: str | None = Field(default=None, description="active or closed")
    page: str | None = Field(default=None, description="a page past the last one is a 404")
    page_size: str | None = Field(default=None, description="at most 100 are returned")


class PageOnlyQuery(BaseModel):
    page: str | None = Field(default=None, description="a page past the last one is a 404")
    page_size: str | None = Field(default=None, description="at most 100 are returned")


class ReplyIn(BaseModel):
    message: str = Field(min_length=1, max_length=4000)

    @field_validator("message")
    @classmethod
    def storable(cls, message: str) -> str:
        if not storable_text(message):
            raise ValueError("contains characters that cannot be sent")
        if not message.strip():
            raise ValueError("cannot be blank")
        return message
