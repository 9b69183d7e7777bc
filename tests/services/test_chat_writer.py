"""The chat message writer on its own (group commit): messages handed over together are
stored in one transaction, in order, each published right after the commit; a batch the
database refuses is stored not at all and every sender gets the error. Runs on SQLite, and on
PostgreSQL with SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from quart import Quart
from tortoise.exceptions import ValidationError

from slyker.chat.service import open_conversation
from slyker.chat.writer import MessageWriter, NewMessage
from slyker.models.chat import ChatMessage, Conversation, ConversationStatus, SenderType
from tests.api import db
from tests.conftest import TEST_DATABASE


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


sqlite_only = pytest.mark.skipif(
    TEST_DATABASE != "sqlite", reason="the writer opens conversations on SQLite only"
)


def draft(session_id: uuid.UUID | None = None, **fields: object) -> Conversation:
    fields = {"department": "sales", "visitor_name": "Ada", "owner_key_hash": "k" * 64, **fields}
    return Conversation(session_id=session_id or uuid.uuid4(), **fields)


@sqlite_only
async def test_new_conversations_are_stored_with_the_waiting_messages(app: Quart) -> None:
    with db(app):
        existing = await new_conversation()
        writer = MessageWriter()
        assert writer.can_open()
        drafts = [draft(), draft()]
        [message] = writer.submit([NewMessage(existing, SenderType.USER, "Visitor", "hi")])
        opened = await asyncio.gather(*(writer.open(d) for d in drafts))
        await message
        assert [c and c.session_id for c in opened] == [d.session_id for d in drafts]
        stored = {c.id: c for c in await Conversation.all()}
        assert len(stored) == 3
        for conversation in opened:
            assert conversation is not None and conversation.id is not None
            again = stored[conversation.id]
            assert again.session_id == conversation.session_id
            assert (again.department, again.visitor_name) == ("sales", "Ada")
            assert again.owner_key_hash == "k" * 64
            assert again.user_id is None
            assert again.status == ConversationStatus.ACTIVE
            assert not again.auto_reply_sent
            assert again.created_at == conversation.created_at == again.last_active_at
        # Saved, as Tortoise sees it: it can be a message's conversation (Tortoise refuses an
        # unsaved one), later updates of the instance go to its row, and it refreshes.
        first, second = opened
        assert first is not None and second is not None
        reply = await writer.store(NewMessage(first, SenderType.USER, "Visitor", "hello"))
        assert (await ChatMessage.get(id=reply.id)).conversation_id == first.id  # type: ignore[attr-defined]
        first.visitor_name = "Grace"
        await first.save(update_fields=["visitor_name"])
        assert (await Conversation.get(id=first.id)).visitor_name == "Grace"
        await Conversation.filter(id=second.id).update(visitor_name="Linus")
        await second.refresh_from_db()
        assert second.visitor_name == "Linus"


@sqlite_only
async def test_a_taken_session_id_creates_nothing(app: Quart) -> None:
    with db(app):
        existing = await new_conversation(visitor_name="First")
        assert await MessageWriter().open(draft(existing.session_id)) is None
        assert [c.visitor_name for c in await Conversation.all()] == ["First"]


@sqlite_only
async def test_a_refused_opening_stores_nothing_of_its_batch(app: Quart) -> None:
    with db(app):
        existing = await new_conversation()
        writer = MessageWriter()
        [message] = writer.submit([NewMessage(existing, SenderType.USER, "Visitor", "hi")])
        refused = draft(user_id=2**31 - 1)  # no such user: the foreign key refuses it
        with pytest.raises(Exception):  # noqa: B017 - the database's own integrity error
            await writer.open(refused)
        with pytest.raises(Exception):  # noqa: B017 - the same transaction
            await message
        assert await Conversation.all().count() == 1
        assert await ChatMessage.all().count() == 0


@sqlite_only
async def test_an_invalid_conversation_fails_for_its_caller_alone(app: Quart) -> None:
    with db(app):
        existing = await new_conversation()
        writer = MessageWriter()
        [message] = writer.submit([NewMessage(existing, SenderType.USER, "Visitor", "hi")])
        with pytest.raises(ValidationError):
            await writer.open(draft(visitor_name="x" * 101))  # max_length 100
        assert (await message).text == "hi"
        assert await writer.open(draft()) is not None
        assert await Conversation.all().count() == 2


async def test_open_conversation_creates_once_then_continues_or_refuses(app: Quart) -> None:
    """The service's opening, on either database: new, then the same session id again."""
    async with app.app_context():
        with db(app):
            session_id = uuid.uuid4()

            def opening(owner: str, allowed: bool) -> Any:
                return open_conversation(
                    session_id, "sales", "Ada", None, owner, lambda conversation: allowed
                )

            created, was_created = await opening("a" * 64, True)
            assert was_created and created is not None
            again, was_created = await opening("b" * 64, True)
            assert not was_created and again is not None and again.id == created.id
            assert again.owner_key_hash == "a" * 64
            assert await opening("b" * 64, False) == (None, False)
            assert await Conversation.filter(session_id=session_id).count() == 1
