"""The chat message writer on its own (group commit): messages handed over together are
stored in one transaction, in order, each published right after the commit; a batch the
database refuses is stored not at all and every sender gets the error. Runs on SQLite, and on
PostgreSQL with SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from quart import Quart

from slyker.chat.writer import MessageWriter, NewMessage
from slyker.models.chat import ChatMessage, Conversation, ConversationStatus, SenderType
from tests.api import db


async def new_conversation(**fields: object) -> Conversation:
    return await Conversation.create(session_id=uuid.uuid4(), department="sales", **fields)


async def test_messages_handed_over_together_are_stored_in_order_then_published(
    app: Quart,
) -> None:
    with db(app):
        first, second = await new_conversation(), await new_conversation()
        published: list[tuple[int, str]] = []
        writer = MessageWriter()
        messages = [
            NewMessage(
                conversation,
                SenderType.USER,
                "Visitor",
                f"text {n}",
                on_stored=lambda row: published.append((row.id, row.text)),
            )
            for n, conversation in enumerate([first, second, first, first])
        ]
        rows = await asyncio.gather(*writer.submit(messages))
        stored = await ChatMessage.all().order_by("id")
        assert [(row.id, row.text) for row in rows] == [(m.id, m.text) for m in stored]
        assert [m.text for m in stored] == ["text 0", "text 1", "text 2", "text 3"]
        assert [m.conversation_id for m in stored] == [first.id, second.id, first.id, first.id]
        assert published == [(m.id, m.text) for m in stored]
        assert [row.created_at for row in rows] == [m.created_at for m in stored]


async def test_a_visitor_message_reopens_its_closed_conversation(app: Quart) -> None:
    with db(app):
        closed = await new_conversation(status=ConversationStatus.CLOSED)
        message = NewMessage(closed, SenderType.USER, "Visitor", "Back again", reopen=True)
        await MessageWriter().store(message)
        await closed.refresh_from_db()
        assert closed.status == ConversationStatus.ACTIVE
        assert closed.closed_at is None


async def test_a_refused_batch_stores_nothing_and_every_sender_is_told(app: Quart) -> None:
    with db(app):
        real = await new_conversation()
        gone = Conversation(id=2**31 - 1, session_id=uuid.uuid4(), department="sales")
        published: list[int] = []
        writer = MessageWriter()
        futures = writer.submit(
            [
                NewMessage(
                    real,
                    SenderType.USER,
                    "Visitor",
                    "ok",
                    on_stored=lambda r: published.append(r.id),
                ),
                NewMessage(gone, SenderType.USER, "Visitor", "no such conversation"),
            ]
        )
        for future in futures:
            with pytest.raises(Exception):  # noqa: B017 - the database's own integrity error
                await future
        assert await ChatMessage.all().count() == 0
        assert published == []
        # The writer goes on with the next batch.
        row = await writer.store(NewMessage(real, SenderType.USER, "Visitor", "again"))
        assert [m.id for m in await ChatMessage.all()] == [row.id]
