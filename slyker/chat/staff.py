"""The staff REST operations over conversations: lists with a summary per conversation (two
queries per page, whatever its size), one conversation with its messages, statistics, and a
reply or a close from the staff pages."""

from __future__ import annotations

from typing import Any

from tortoise.functions import Count, Max

from slyker.chat.schemas import ConversationOut, ConversationSummary, MessageOut
from slyker.chat.service import close_conversation, current_broker, post_agent_reply
from slyker.models.accounts import User
from slyker.models.chat import ChatMessage, Conversation, ConversationStatus
from slyker.pagination import paginate
from slyker.services.errors import Conflict, InvalidInput, NotFound


def _summaries(
    conversations: list[Conversation], totals: dict[int, tuple[int, str | None]]
) -> list[ConversationSummary]:
    return [
        ConversationSummary(
            **ConversationOut.of(conversation).model_dump(),
            message_count=totals.get(conversation.id, (0, None))[0],
            last_message=totals.get(conversation.id, (0, None))[1],
        )
        for conversation in conversations
    ]


async def _message_totals(conversation_ids: list[int]) -> dict[int, tuple[int, str | None]]:
    """Per conversation: how many messages, and the text of the last one (two queries)."""
    if not conversation_ids:
        return {}
    counts = (
        await ChatMessage.filter(conversation_id__in=conversation_ids)
        .annotate(count=Count("id"), last_id=Max("id"))
        .group_by("conversation_id")
        .order_by("conversation_id")
        .values("conversation_id", "count", "last_id")
    )
    last_ids = [row["last_id"] for row in counts]
    texts = dict(await ChatMessage.filter(id__in=last_ids).values_list("id", "text"))
    return {row["conversation_id"]: (row["count"], texts.get(row["last_id"])) for row in counts}


async def conversation_page(status: str | None, active_only: bool = False) -> dict[str, Any]:
    """A page of conversations, most recently active first (``?page=``, ``?page_size=``)."""
    queryset = Conversation.all()
    if active_only:
        queryset = queryset.filter(status=ConversationStatus.ACTIVE)
    elif status:
        if status not in {s.value for s in ConversationStatus}:
            invalid = InvalidInput("status", "must be active or closed.", code="bad_request")
            invalid.errors = {"status": ["invalid"]}
            raise invalid
        queryset = queryset.filter(status=status)
    page = await paginate(queryset.order_by("-last_active_at", "-id"), lambda row: row)
    conversations: list[Conversation] = page["results"]
    totals = await _message_totals([conversation.id for conversation in conversations])
    return {**page, "results": _summaries(conversations, totals)}


async def conversation(session_pk: int) -> Conversation:
    found = await Conversation.get_or_none(id=session_pk)
    if found is None:
        raise NotFound("Chat session not found.")
    return found


async def conversation_detail(session_pk: int) -> dict[str, Any]:
    found = await conversation(session_pk)
    messages = await ChatMessage.filter(conversation_id=found.id).order_by("id")
    return {
        **ConversationOut.of(found).model_dump(),
        "messages": [MessageOut.of(message, found) for message in messages],
    }


async def statistics(departments: tuple[str, ...]) -> dict[str, Any]:
    """Conversations per status and department, and agents online per department."""
    rows = (
        await Conversation.annotate(count=Count("id"))
        .group_by("department", "status")
        .order_by("department", "status")
        .values("department", "status", "count")
    )
    counted: dict[tuple[str, str], int] = {
        (row["department"], str(row["status"])): row["count"] for row in rows
    }
    broker = current_broker()
    by_department = {
        department: {
            "active": counted.get((department, ConversationStatus.ACTIVE.value), 0),
            "closed": counted.get((department, ConversationStatus.CLOSED.value), 0),
            "agents_online": await broker.agents_online(department),
        }
        for department in departments
    }
    active = sum(n for (_, status), n in counted.items() if status == ConversationStatus.ACTIVE)
    closed = sum(n for (_, status), n in counted.items() if status == ConversationStatus.CLOSED)
    return {
        "total": sum(counted.values()),
        "active": active,
        "closed": closed,
        "messages": await ChatMessage.all().count(),
        "by_department": by_department,
    }


async def close(session_pk: int, closed_by: str) -> ConversationOut:
    found = await conversation(session_pk)
    await close_conversation(found, closed_by)
    await found.refresh_from_db()
    return ConversationOut.of(found)


async def reply(session_pk: int, staff: User, text: str) -> MessageOut:
    found = await conversation(session_pk)
    if found.status != ConversationStatus.ACTIVE:
        raise Conflict("This chat session is closed.", code="session_closed")
    message = await post_agent_reply(found, staff, text)
    return MessageOut.of(message, found)
