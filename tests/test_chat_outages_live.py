"""Chat through Redis and database outages, against real processes: two ``python -m slyker
serve`` deployments (A and B) on one database and one private redis-server, real WebSocket
clients, faults injected by killing redis-server or cutting the database.

The rule: a message a client sent is either stored and delivered exactly once, or the client
gets an error frame saying it was not. Every client message here carries a ``client_id``; the
server answers each with an ``ack`` (stored) or an ``error`` naming it.

1. A visitor on A and an agent on B keep sending about one message a second while Redis is
   killed for ~25 s and started again: afterwards each side has every message the other sent
   exactly once, in order, and every message was acknowledged (Redis decides nothing).
2. The same with Redis down when the workers start, and started later.
3. The database down: a visitor's message is answered with a ``not_sent`` error naming it, the
   socket stays open, and once the database is back messages are stored again.

Each test prints its numbers (sent, acknowledged, errored, lost, duplicated, time to recover).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import TEST_DATABASE
from tests.live_servers import HOST, Hypercorn, free_port, start_hypercorns, stop_servers
from tests.test_chat_live import (
    Deployment,
    Peer,
    _agent_connected,
    _agent_url,
    _messages,
    _request,
    _visitor_connected,
    _visitor_message,
    _visitor_url,
    deployment,
    peer,
)

SEND_INTERVAL = 1.0  # each side sends about one message a second
BEFORE_OUTAGE = 5.0
OUTAGE = 25.0  # Redis down, mid-conversation
DOWN_AT_START = 15.0  # Redis down from before the workers start until this long into the talk
AFTER_OUTAGE = 8.0
RECOVERY_TIMEOUT = 20.0  # Redis back -> every message missed meanwhile on the other side
ANSWER_TIMEOUT = 15.0  # a message -> its ack or error


# --- a conversation with numbered messages ---------------------------------------------------


@dataclass
class Side:
    """One client's sent messages (client_id -> text, send time) and what came back."""

    name: str
    client: Peer
    sent: dict[str, tuple[str, float]] = field(default_factory=dict)

    def answers(self, kind: str) -> dict[str, dict[str, Any]]:
        return {
            f["client_id"]: f
            for f in self.client.frames
            if f.get("type") == kind and isinstance(f.get("client_id"), str)
        }

    def unanswered(self) -> list[str]:
        acks, errors = self.answers("ack"), self.answers("error")
        return [cid for cid in self.sent if cid not in acks and cid not in errors]


def _texts_from(receiver: Side, sender_type: str, session_id: str) -> list[tuple[str, float]]:
    """(text, arrival) of every message of ``sender_type`` in the conversation, as received."""
    return [
        (frame["message"], when)
        for frame, when in zip(receiver.client.frames, receiver.client.arrivals, strict=False)
        if frame.get("type") in ("message", "agent_message")
        and frame.get("sender_type") == sender_type
        and frame.get("session_id") == session_id
    ]


@dataclass
class Delivery:
    """How one side's messages reached the other."""

    sent: int
    acknowledged: int
    errored: list[dict[str, Any]]
    unanswered: list[str]
    received_in_order: list[str]
    lost: list[str]  # acknowledged, never received
    duplicated: dict[str, int]
    stored: int
    recovery_seconds: float | None  # Redis back -> the last message missed meanwhile arrived

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "errored": len(self.errored),
            "unanswered": len(self.unanswered),
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "stored": self.stored,
            "recovery_s": round(self.recovery_seconds or 0.0, 2),
        }


def _delivery(
    sender: Side,
    receiver: Side,
    sender_type: str,
    session_id: str,
    stored_texts: list[str],
    restarted_at: float,
) -> Delivery:
    received = _texts_from(receiver, sender_type, session_id)
    texts = [text for text, _ in received]
    acked = sender.answers("ack")
    acked_texts = [text for cid, (text, _) in sender.sent.items() if cid in acked]
    first_arrival: dict[str, float] = {}
    for text, when in received:
        first_arrival.setdefault(text, when)
    missed_before_restart = [
        first_arrival[text] - restarted_at
        for cid, (text, at) in sender.sent.items()
        if at < restarted_at and text in first_arrival and first_arrival[text] > restarted_at
    ]
    return Delivery(
        sent=len(sender.sent),
        acknowledged=len(acked),
        errored=list(sender.answers("error").values()),
        unanswered=sender.unanswered(),
        received_in_order=texts,
        lost=[text for text in acked_texts if text not in first_arrival],
        duplicated={text: n for text, n in Counter(texts).items() if n > 1},
        stored=sum(1 for text in stored_texts if text in {t for t, _ in sender.sent.values()}),
        recovery_seconds=max(missed_before_restart, default=0.0),
    )


async def _keep_sending(side: Side, frame: Callable[[str, str], dict[str, Any]]) -> None:
    """One numbered message about every SEND_INTERVAL until cancelled."""
    number = 0
    while True:
        number += 1
        client_id = f"{side.name}-{number}"
        text = f"{side.name} message {number:03d}"
        side.sent[client_id] = (text, time.monotonic())
        await side.client.send(**frame(client_id, text))
        await asyncio.sleep(SEND_INTERVAL)


async def _wait_until(what: str, done: Callable[[], bool], within: float) -> float:
    """Seconds until ``done()``; an AssertionError naming ``what`` after ``within``."""
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within:.0f} s: {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def _talk(live: Deployment) -> AsyncIterator[tuple[Side, Side, str]]:
    """A visitor on A and an agent on B in one conversation, the visitor's first message
    acknowledged (so that the agent may answer in it)."""
    session_id = str(uuid.uuid4())
    async with (
        peer("agent@B", _agent_url(live, live.b), live.logs) as agent_client,
        peer("visitor@A", _visitor_url(live.a, session_id), live.logs) as visitor_client,
    ):
        await _agent_connected(agent_client)
        await _visitor_connected(visitor_client, session_id)
        visitor, agent = Side("visitor", visitor_client), Side("agent", agent_client)
        text = "visitor message 000"
        visitor.sent["visitor-0"] = (text, time.monotonic())
        await visitor_client.send(**_visitor_message(session_id, text), client_id="visitor-0")
        ack = await visitor_client.wait_for(
            "the first ack", lambda f: f.get("client_id") == "visitor-0", within=ANSWER_TIMEOUT
        )
        assert ack["type"] == "ack", visitor_client.describe()
        yield visitor, agent, session_id


def _visitor_frame(session_id: str) -> Callable[[str, str], dict[str, Any]]:
    return lambda cid, text: {**_visitor_message(session_id, text), "client_id": cid}


def _agent_frame(session_id: str) -> Callable[[str, str], dict[str, Any]]:
    return lambda cid, text: {
        "type": "message",
        "session_id": session_id,
        "message": text,
        "client_id": cid,
    }


async def _converse_through(
    live: Deployment, redis_down_for: float, *, down_at_start: bool
) -> tuple[Delivery, Delivery]:
    """Both sides send while Redis is down (from the start, or after BEFORE_OUTAGE) for
    ``redis_down_for`` seconds; the deliveries, visitor's then agent's, once both sides have
    everything (or RECOVERY_TIMEOUT has passed)."""
    assert live.redis is not None
    async with _talk(live) as (visitor, agent, session_id):
        senders = [
            asyncio.create_task(_keep_sending(visitor, _visitor_frame(session_id))),
            asyncio.create_task(_keep_sending(agent, _agent_frame(session_id))),
        ]
        try:
            if not down_at_start:
                await asyncio.sleep(BEFORE_OUTAGE)
                live.redis.kill()
            await asyncio.sleep(redis_down_for)
            live.redis.start()
            restarted_at = time.monotonic()
            await asyncio.sleep(AFTER_OUTAGE)
        finally:
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)

        def everything_arrived() -> bool:
            visitor_texts = {t for t, _ in _texts_from(agent, "user", session_id)}
            agent_texts = {t for t, _ in _texts_from(visitor, "agent", session_id)}
            return (
                not visitor.unanswered()
                and not agent.unanswered()
                and all(text in visitor_texts for text, _ in visitor.sent.values())
                and all(text in agent_texts for text, _ in agent.sent.values())
            )

        with contextlib.suppress(AssertionError):
            await _wait_until("every message on both sides", everything_arrived, RECOVERY_TIMEOUT)
        await visitor.client.barrier()
        await agent.client.barrier()
        status, sessions = await _request(
            live.a, "GET", "/api/livechat/sessions/", token=live.tokens["staff"]
        )
        assert status == 200, sessions
        [conversation] = [s for s in sessions["results"] if s["session_id"] == session_id]
        stored = [m["message"] for m in await _messages(live, live.a, conversation["id"])]
    visitor_delivery = _delivery(visitor, agent, "user", session_id, stored, restarted_at)
    agent_delivery = _delivery(agent, visitor, "agent", session_id, stored, restarted_at)
    print(
        "\nchat through a Redis outage"
        + (" (down at start)" if down_at_start else "")
        + ": "
        + json.dumps(
            {
                "redis_down_s": redis_down_for,
                "visitor_to_agent": visitor_delivery.summary(),
                "agent_to_visitor": agent_delivery.summary(),
            }
        )
    )
    assert stored.count(visitor.sent["visitor-0"][0]) == 1
    return visitor_delivery, agent_delivery


def _assert_exactly_once_in_order(delivery: Delivery, sender: str, logs: str) -> None:
    problems = []
    if delivery.unanswered:
        problems.append(f"no ack or error for {delivery.unanswered}")
    if delivery.errored:
        problems.append(f"refused although only Redis was down: {delivery.errored}")
    if delivery.lost:
        problems.append(f"acknowledged but never delivered: {delivery.lost}")
    if delivery.duplicated:
        problems.append(f"delivered more than once: {delivery.duplicated}")
    if delivery.received_in_order != sorted(delivery.received_in_order):
        problems.append(f"out of order: {delivery.received_in_order}")
    if delivery.stored != delivery.acknowledged:
        problems.append(f"stored {delivery.stored}, acknowledged {delivery.acknowledged}")
    if delivery.recovery_seconds is not None and delivery.recovery_seconds > RECOVERY_TIMEOUT:
        problems.append(f"recovered only after {delivery.recovery_seconds:.1f} s")
    assert not problems, f"{sender}'s messages: " + "; ".join(problems) + f"\n{logs}"


async def test_chat_through_a_redis_outage_mid_conversation(tmp_path: Path) -> None:
    with deployment(tmp_path, ["A", "B"], redis=True, supervised=True) as live:
        visitor, agent = await _converse_through(live, OUTAGE, down_at_start=False)
        logs = live.logs()
    _assert_exactly_once_in_order(visitor, "the visitor", logs)
    _assert_exactly_once_in_order(agent, "the agent", logs)


async def test_chat_with_redis_down_when_the_workers_start(tmp_path: Path) -> None:
    with deployment(tmp_path, ["A", "B"], redis=True, supervised=True) as live:
        assert live.redis is not None
        live.redis.kill()
        # The workers start (again) while Redis is down.
        specs = [Hypercorn(s.name, live.env, supervised=True) for s in live.servers]
        stop_servers(live.servers)
        live.servers[:] = start_hypercorns(specs, tmp_path / "restarted")
        visitor, agent = await _converse_through(live, DOWN_AT_START, down_at_start=True)
        logs = live.logs()
    _assert_exactly_once_in_order(visitor, "the visitor", logs)
    _assert_exactly_once_in_order(agent, "the agent", logs)


# --- the database down -----------------------------------------------------------------------


class TCPProxy:
    """Forwards a loopback port to ``target_port`` (PostgreSQL) until ``cut()``: then every
    connection through it is closed and new ones are refused, as when the database host goes
    away; ``restore()`` listens again on the same port. It runs on an event loop in a thread
    of its own: the deployment's set-up makes blocking requests from the test's loop."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)

    def start(self) -> None:
        self._run(self._listen())

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._serve, HOST, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    target.write(data)
                    await target.drain()
            target.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self.writers -= {writer, upstream_writer}

    def cut(self) -> None:
        self._run(self._cut())

    async def _cut(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()
        self.server = None

    def restore(self) -> None:
        self.start()

    def stop(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@dataclass
class DatabaseFault:
    """The database made unavailable: PostgreSQL behind a proxy that is cut; SQLite locked by
    another process's exclusive transaction (writes fail as "database is locked")."""

    proxy: TCPProxy | None = None
    lock: sqlite3.Connection | None = None
    sqlite_path: Path | None = None

    def server_env(self, env: dict[str, str]) -> dict[str, str]:
        url = env["DATABASE_URL"]
        if self.proxy is not None:
            env["DATABASE_URL"] = url.replace("127.0.0.1:5432", f"{HOST}:{self.proxy.port}")
        else:
            self.sqlite_path = Path(url.removeprefix("sqlite://"))
        return env

    async def down(self) -> None:
        if self.proxy is not None:
            self.proxy.cut()
        else:
            assert self.sqlite_path is not None
            self.lock = sqlite3.connect(self.sqlite_path, timeout=1, isolation_level=None)
            self.lock.execute("BEGIN EXCLUSIVE")

    async def up(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        elif self.lock is not None:
            self.lock.execute("ROLLBACK")
            self.lock.close()
            self.lock = None


async def test_a_visitor_message_while_the_database_is_down_is_refused_not_dropped(
    tmp_path: Path,
) -> None:
    fault = DatabaseFault(proxy=TCPProxy(5432) if TEST_DATABASE == "postgres" else None)
    if fault.proxy is not None:
        fault.proxy.start()
    try:
        with deployment(
            tmp_path, ["A"], redis=True, supervised=True, server_env=fault.server_env
        ) as live:
            await _database_down_conversation(live, fault)
    finally:
        if fault.lock is not None:
            await fault.up()
        if fault.proxy is not None:
            fault.proxy.stop()


async def _database_down_conversation(live: Deployment, fault: DatabaseFault) -> None:
    session_id = str(uuid.uuid4())
    async with peer("visitor@A", _visitor_url(live.a, session_id), live.logs) as client:
        await _visitor_connected(client, session_id)
        visitor = Side("visitor", client)
        numbers = iter(range(1, 1000))

        async def send(text: str) -> dict[str, Any]:
            client_id = f"visitor-{next(numbers)}"
            visitor.sent[client_id] = (text, time.monotonic())
            await client.send(**_visitor_message(session_id, text), client_id=client_id)
            return await client.wait_for(
                f"an answer to {client_id}",
                lambda f: f.get("client_id") == client_id,
                within=ANSWER_TIMEOUT,
            )

        assert (await send("before the outage"))["type"] == "ack", client.describe()
        await fault.down()
        down_at = time.monotonic()
        try:
            refused = await send("while the database is down")
        finally:
            await fault.up()
        restored_at = time.monotonic()
        assert refused["type"] == "error" and refused["code"] == "not_sent", client.describe()
        assert client.closed is None, f"socket closed: {client.closed}\n{client.describe()}"
        # Back: the client sends again (as a user would) until it is stored.
        answer: dict[str, Any] = {}
        while time.monotonic() - restored_at < RECOVERY_TIMEOUT:
            answer = await send("after the outage")
            if answer["type"] == "ack":
                break
            await asyncio.sleep(1.0)
        recovered = time.monotonic() - restored_at
        assert answer.get("type") == "ack", client.describe()
        assert client.closed is None, client.describe()
        await client.barrier()

    status, sessions = await _request(
        live.a, "GET", "/api/livechat/sessions/", token=live.tokens["staff"]
    )
    assert status == 200, sessions
    [conversation] = [s for s in sessions["results"] if s["session_id"] == session_id]
    stored = [
        m["message"]
        for m in await _messages(live, live.a, conversation["id"])
        if m["sender_type"] == "user"
    ]
    acked = [text for cid, (text, _) in visitor.sent.items() if cid in visitor.answers("ack")]
    errored = [text for cid, (text, _) in visitor.sent.items() if cid in visitor.answers("error")]
    print(
        "\nchat with the database down: "
        + json.dumps(
            {
                "sent": len(visitor.sent),
                "acknowledged": len(acked),
                "errored": len(errored),
                "stored": len(stored),
                "lost": len([t for t in acked if t not in stored]),
                "duplicated": len([t for t, n in Counter(stored).items() if n > 1]),
                "down_s": round(restored_at - down_at, 2),
                "recovery_s": round(recovered, 2),
            }
        )
    )
    # Stored exactly what was acknowledged, once each; the refused message is not stored.
    assert sorted(stored) == sorted(acked), (stored, acked)
    assert "while the database is down" not in stored
