"""The chat message writer on its own (group commit): messages handed over together are
stored in one transaction, in order, each published right after the commit; a batch the
database refuses is stored not at all and every sender gets the error. Runs on SQLite, and on
PostgreSQL with SLYKER_TEST_DATABASE=postgres."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart
from tortoise.exceptions import ValidationError
from tortoise.transactions import in_transaction

from slyker.chat.service import open_conversation
from slyker.chat.writer import MessageWriter, NewMessage, current_writer
from slyker.models.chat import ChatMessage, Conversation, ConversationStatus, SenderType
from tests.api import db
from tests.conftest import TEST_DATABASE, prepare_database


@pytest.fixture
async def writer() -> AsyncIterator[MessageWriter]:
    """A writer of the test's own, closed at the end (on SQLite: its connection and thread)."""
    writer = MessageWriter()
    yield writer
    await writer.close()


async def new_conversation(**fields: object) -> Conversation:
    return await Conversation.create(session_id=uuid.uuid4(), department="sales", **fields)


async def test_messages_handed_over_together_are_stored_in_order_then_published(
    app: Quart,
    writer: MessageWriter,
) -> None:
    with db(app):
        first, second = await new_conversation(), await new_conversation()
        published: list[tuple[int, str]] = []
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


async def test_a_visitor_message_reopens_its_closed_conversation(
    app: Quart, writer: MessageWriter
) -> None:
    with db(app):
        closed = await new_conversation(status=ConversationStatus.CLOSED)
        message = NewMessage(closed, SenderType.USER, "Visitor", "Back again", reopen=True)
        await writer.store(message)
        await closed.refresh_from_db()
        assert closed.status == ConversationStatus.ACTIVE
        assert closed.closed_at is None


async def test_a_refused_batch_stores_nothing_and_every_sender_is_told(
    app: Quart, writer: MessageWriter
) -> None:
    with db(app):
        real = await new_conversation()
        gone = Conversation(id=2**31 - 1, session_id=uuid.uuid4(), department="sales")
        published: list[int] = []
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


def visitor_says(conversation: Conversation, text: str) -> NewMessage:
    return NewMessage(conversation, SenderType.USER, "Visitor", text)


async def agent_says(conversation: Conversation, text: str, connection: Any) -> ChatMessage:
    """A message written by a Tortoise transaction, not the writer."""
    return await ChatMessage.create(
        conversation=conversation,
        sender_type=SenderType.AGENT,
        sender_name="Agent",
        text=text,
        using_db=connection,
    )


sqlite_only = pytest.mark.skipif(
    TEST_DATABASE != "sqlite", reason="the writer opens conversations on SQLite only"
)


@pytest.mark.skipif(TEST_DATABASE != "sqlite", reason="SQLite's write lock")
async def test_a_batch_handed_over_during_a_tortoise_write_transaction_commits_after_it(
    app: Quart, writer: MessageWriter
) -> None:
    """On SQLite the writer has a connection of its own: while a Tortoise transaction holds
    the write lock the writer waits for it (on its own thread: the event loop and that
    transaction go on), then commits after it. Both commit, nothing is lost, ids follow the
    commits. (Without a busy timeout the batch would fail with "database is locked"; waiting
    on the event loop would stall the transaction below until the writer gave up.)"""
    with db(app):
        conversation = await new_conversation()
        go = asyncio.Event()

        async def hand_over() -> list[asyncio.Future[ChatMessage]]:
            """A socket's task, outside the transaction (the writer's task copies its
            context: started inside it, it would write inside it)."""
            await go.wait()
            return writer.submit([visitor_says(conversation, f"writer {n}") for n in range(3)])

        handing_over = asyncio.create_task(hand_over())
        async with in_transaction() as connection:
            await agent_says(conversation, "transaction 1", connection)
            go.set()
            futures = await handing_over
            for _ in range(10):  # loop turns and time for the writer's thread to try its BEGIN
                await asyncio.sleep(0.005)
            assert not any(future.done() for future in futures)  # not inside this transaction
            await agent_says(conversation, "transaction 2", connection)
            await (
                Conversation.filter(id=conversation.id)
                .using_db(connection)
                .update(visitor_name="Ada")
            )
        rows = await asyncio.gather(*futures)
        stored = await ChatMessage.all().order_by("id")
        assert [m.text for m in stored] == [
            "transaction 1",
            "transaction 2",
            "writer 0",
            "writer 1",
            "writer 2",
        ]
        assert [row.id for row in rows] == [m.id for m in stored[2:]]
        again = await Conversation.get(id=conversation.id)
        assert again.visitor_name == "Ada"  # the transaction's update
        assert again.last_active_at == rows[0].created_at  # and the writer's, after it


async def test_writer_batches_and_tortoise_transactions_at_once_all_commit(
    app: Quart, writer: MessageWriter
) -> None:
    """Batches and Tortoise write transactions started together, interleaved: every one
    commits (none refused for a lock), nothing is lost, the writer's ids grow in hand-over
    order and each row it answered is the one stored."""
    with db(app):
        conversation = await new_conversation()

        async def tortoise_writes(n: int) -> None:
            async with in_transaction() as connection:
                await agent_says(conversation, f"transaction {n}", connection)
                await asyncio.sleep(0)  # a loop turn inside the transaction
                await (
                    Conversation.filter(id=conversation.id)
                    .using_db(connection)
                    .update(visitor_name=f"transaction {n}")
                )

        futures: list[asyncio.Future[ChatMessage]] = []
        transactions: list[asyncio.Task[None]] = []
        for n in range(20):
            futures += writer.submit([visitor_says(conversation, f"writer {n}")])
            transactions.append(asyncio.create_task(tortoise_writes(n)))
            await asyncio.sleep(0)
        rows = await asyncio.gather(*futures)
        await asyncio.gather(*transactions)
        stored = await ChatMessage.all().order_by("id")
        assert sorted(m.text for m in stored) == sorted(
            [f"writer {n}" for n in range(20)] + [f"transaction {n}" for n in range(20)]
        )
        by_writer = [m for m in stored if m.text.startswith("writer")]
        assert [m.text for m in by_writer] == [f"writer {n}" for n in range(20)]
        assert [(row.id, row.text) for row in rows] == [(m.id, m.text) for m in by_writer]


async def test_closing_stores_what_is_waiting_and_the_writer_goes_on(
    app: Quart, writer: MessageWriter
) -> None:
    """Closing (when serving ends) answers every sender first; a later message is stored
    again (on SQLite through a new connection and thread)."""
    with db(app):
        conversation = await new_conversation()
        futures = writer.submit([visitor_says(conversation, f"text {n}") for n in range(3)])
        await writer.close()
        assert [future.result().text for future in futures] == ["text 0", "text 1", "text 2"]
        await writer.close()  # twice is fine
        row = await writer.store(visitor_says(conversation, "after closing"))
        stored = await ChatMessage.all().order_by("id")
        assert [m.text for m in stored] == ["text 0", "text 1", "text 2", "after closing"]
        assert stored[-1].id == row.id


@pytest.mark.skipif(TEST_DATABASE != "sqlite", reason="the writer's own SQLite connection")
async def test_the_apps_writer_stores_what_is_waiting_and_closes_when_serving_ends(
    app_factory: Any,
) -> None:
    """When serving ends (SIGTERM included) the app's writer answers every sender first,
    then closes its connection and thread: none of it outlives the app."""
    before = set(threading.enumerate())
    application = app_factory()
    async with application.test_app(), application.app_context():
        await prepare_database(application)
        with db(application):
            conversation = await new_conversation()
            writer = current_writer()
            await writer.store(visitor_says(conversation, "first"))
            threads = {t for t in set(threading.enumerate()) - before if "chat-writer" in t.name}
            assert len(threads) == 1
            waiting = writer.submit([visitor_says(conversation, "waiting")])
    assert waiting[0].result().text == "waiting"
    assert not any(thread.is_alive() for thread in threads)


async def test_on_an_in_memory_database_the_writer_uses_tortoises_transactions(
    app_factory: Any,
) -> None:
    """An in-memory SQLite database is private to its connection: the writer cannot open one
    of its own, so it stores through Tortoise's transactions, and the service opens
    conversations itself."""
    application = app_factory(DATABASE_URL="sqlite://:memory:")
    async with application.test_app(), application.app_context():
        await prepare_database(application)
        with db(application):
            writer = MessageWriter()
            assert not writer.can_open()
            conversation, created = await open_conversation(
                uuid.uuid4(), "sales", "Ada", None, "a" * 64, lambda _: True
            )
            assert created and conversation is not None
            rows = await asyncio.gather(
                *writer.submit([visitor_says(conversation, f"text {n}") for n in range(3)])
            )
            stored = await ChatMessage.all().order_by("id")
            assert [(m.id, m.text) for m in stored] == [(r.id, r.text) for r in rows]
            assert [m.text for m in stored] == ["text 0", "text 1", "text 2"]
            await writer.close()


def draft(session_id: uuid.UUID | None = None, **fields: object) -> Conversation:
    fields = {"department": "sales", "visitor_name": "Ada", "owner_key_hash": "k" * 64, **fields}
    return Conversation(session_id=session_id or uuid.uuid4(), **fields)


@sqlite_only
async def test_new_conversations_are_stored_with_the_waiting_messages(
    app: Quart, writer: MessageWriter
) -> None:
    with db(app):
        existing = await new_conversation()
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
async def test_a_taken_session_id_creates_nothing(app: Quart, writer: MessageWriter) -> None:
    with db(app):
        existing = await new_conversation(visitor_name="First")
        assert await writer.open(draft(existing.session_id)) is None
        assert [c.visitor_name for c in await Conversation.all()] == ["First"]


@sqlite_only
async def test_a_refused_opening_stores_nothing_of_its_batch(
    app: Quart, writer: MessageWriter
) -> None:
    with db(app):
        existing = await new_conversation()
        [message] = writer.submit([NewMessage(existing, SenderType.USER, "Visitor", "hi")])
        refused = draft(user_id=2**31 - 1)  # no such user: the foreign key refuses it
        with pytest.raises(Exception):  # noqa: B017 - the database's own integrity error
            await writer.open(refused)
        with pytest.raises(Exception):  # noqa: B017 - the same transaction
            await message
        assert await Conversation.all().count() == 1
        assert await ChatMessage.all().count() == 0


@sqlite_only
async def test_an_invalid_conversation_fails_for_its_caller_alone(
    app: Quart, writer: MessageWriter
) -> None:
    with db(app):
        existing = await new_conversation()
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
