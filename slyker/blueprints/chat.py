"""Live chat routes: the visitor and agent WebSockets, and the staff REST API over
conversations. What they run lives in :mod:`slyker.chat` (handshake, sockets, protocol,
lifecycle, visitors, agents, staff)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_cors import cors_exempt
from quart_schema import validate_querystring, validate_request, validate_response

from slyker.auth import authenticated_user, staff_required
from slyker.chat import staff
from slyker.chat.agents import serve_agent
from slyker.chat.schemas import (
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    ConversationStats,
    MessageOut,
    PageOnlyQuery,
    ReplyIn,
    SessionQuery,
)
from slyker.chat.service import display_name
from slyker.chat.visitors import serve_visitor
from slyker.settings import current_settings

blueprint = Blueprint("chat", __name__)


# --- WebSockets (the handshake's Origin is checked by slyker.chat.handshake, before accept) ---


@blueprint.websocket("/ws/chat/<department>/")
@cors_exempt
async def chat_socket(department: str) -> None:
    """Visitor chat (older widget URL)."""
    await serve_visitor(department)


@blueprint.websocket("/livechat/ws/<department>/")
@cors_exempt
async def livechat_socket(department: str) -> None:
    """Visitor chat (newer widget URL)."""
    await serve_visitor(department)


@blueprint.websocket("/ws/chat/agents/")
@cors_exempt
async def agents_socket() -> None:
    """Staff: every conversation of their departments (``?departments=sales,support``).

    The access token: ``Sec-WebSocket-Protocol: bearer, <token>``, or a first frame
    ``{"type": "auth", "token": ...}`` within 5 s (else close 4001), or ``?token=``."""
    await serve_agent()


# --- staff REST ----------------------------------------------------------------------------


@blueprint.get("/api/livechat/sessions/")
@staff_required
@validate_querystring(SessionQuery)
@validate_response(ConversationPage)
async def list_sessions(query_args: SessionQuery) -> dict[str, Any]:
    """Staff: chat sessions, most recently active first; ``?status=active|closed``."""
    return await staff.conversation_page(query_args.status)


@blueprint.get("/api/livechat/sessions/active/")
@staff_required
@validate_querystring(PageOnlyQuery)
@validate_response(ConversationPage)
async def active_sessions(query_args: PageOnlyQuery) -> dict[str, Any]:
    """Staff: active chat sessions."""
    return await staff.conversation_page(None, active_only=True)


@blueprint.get("/api/livechat/sessions/stats/")
@staff_required
@validate_response(ConversationStats)
async def session_stats() -> dict[str, Any]:
    """Staff: conversations per status and department, and agents online per department."""
    return await staff.statistics(current_settings().chat.departments)


@blueprint.get("/api/livechat/sessions/<int:session_pk>/")
@staff_required
@validate_response(ConversationDetail)
async def get_session(session_pk: int) -> dict[str, Any]:
    """Staff: one chat session with all its messages."""
    return await staff.conversation_detail(session_pk)


@blueprint.post("/api/livechat/sessions/<int:session_pk>/close_session/")
@staff_required
@validate_response(ConversationOut)
async def close_session(session_pk: int) -> ConversationOut:
    """Staff: close a chat session (the visitor is told, live)."""
    return await staff.close(session_pk, display_name(authenticated_user()))


@blueprint.post("/api/livechat/sessions/<int:session_pk>/send_message/")
@staff_required
@validate_request(ReplyIn)
@validate_response(MessageOut, 201)
async def send_message(session_pk: int, data: ReplyIn) -> tuple[MessageOut, int]:
    """Staff: reply to a visitor; delivered live to the visitor's socket, and stored."""
    return await staff.reply(session_pk, authenticated_user(), data.message.strip()), 201
