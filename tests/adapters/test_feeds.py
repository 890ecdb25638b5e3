"""Upstream feeds against a real websocket feed server: subscribe with since, reconnect with
backoff, ERROR after the retry limit (and back), the position kept in the journal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
from websockets.asyncio.server import Server, ServerConnection, serve

from actors.provider import ProviderEvent
from adapters.feeds import Feed, FeedPosition, Feeds, FeedState
from runtime.backoff import Backoff
from runtime.sqlite_journal import SQLiteJournal

FAST = Backoff(base=0.02, cap=0.1, max_retries=2)
WAIT = 10.0


class FeedServer:
    """A feed: records each connection's `subscribe`, pushes what the test gives it."""

    def __init__(self) -> None:
        self.subscribes: list[float] = []
        self.connections: list[ServerConnection] = []
        self.server: Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await serve(self._handle, "127.0.0.1", self.port)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.connections.clear()

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections.append(connection)
        async for message in connection:
            frame = msgpack.unpackb(message)
            if frame.get("type") == "subscribe":
                self.subscribes.append(frame["since"])

    async def push(self, **frame: Any) -> None:
        for connection in self.connections:
            await connection.send(msgpack.packb(frame))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def event_frame(event_id: str, created: float) -> dict[str, Any]:
    return {
        "type": "provider_event",
        "id": event_id,
        "intent_id": "pi_1",
        "status": "succeeded",
        "created": created,
    }


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 (the conditions are plain attributes, no event)
            await asyncio.sleep(0.01)
    assert condition(), what


class Sinks:
    """The domain's side: records what arrived; only `pi_1` belongs to a flow here."""

    def __init__(self) -> None:
        self.events: list[ProviderEvent] = []
        self.health: list[bool] = []

    async def on_event(self, event: ProviderEvent) -> bool:
        self.events.append(event)
        return event.intent_id == "pi_1"

    def on_health(self, healthy: bool) -> None:
        self.health.append(healthy)


async def _monitoring(
    server: FeedServer, journal: SQLiteJournal, sinks: Sinks
) -> tuple[Feed, asyncio.Task[None]]:
    """A feed of `server` running, subscribed and monitoring."""
    feed = Feed(
        server.url,
        position=FeedPosition(journal, server.url),
        on_event=sinks.on_event,
        on_health=sinks.on_health,
        backoff=FAST,
    )
    task = asyncio.create_task(feed.run())
    await until(lambda: feed.state is FeedState.MONITORING, "monitoring")
    return feed, task


def test_reconnect_resubscribes_since_the_latest_applied_event(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        server = FeedServer()
        await server.start()
        sinks = Sinks()
        with SQLiteJournal(tmp_path / "j.db") as journal:
            feed, task = await _monitoring(server, journal, sinks)
            assert server.subscribes == [0]
            await server.push(type="hello")  # a frame type we do not know: ignored
            await server.push(type="provider_event", id="bad")  # malformed: skipped
            await server.push(**event_frame("evt_1", 100))
            await until(lambda: feed.since == 100, "position advanced")
            await server.stop()
            await server.start()  # same port
            await until(lambda: server.subscribes == [0, 100], "resubscribed with since")
            await until(lambda: feed.state is FeedState.MONITORING, "monitoring again")
            assert feed.reconnects >= 1
            assert [event.event_id for event in sinks.events] == ["evt_1"]
            assert sinks.events[0].source == "feed"
            await feed.stop()
            await asyncio.wait_for(task, WAIT)
            assert FeedPosition(journal, server.url).since == 100  # what a restart resumes from
            await server.stop()

    asyncio.run(scenario())


def test_only_events_that_reached_a_flow_move_since_and_never_past_now(tmp_path: Path) -> None:
    # One foreign or future-dated event must not make a reconnect skip real events before it.
    async def scenario() -> None:
        server = FeedServer()
        await server.start()
        sinks = Sinks()
        with SQLiteJournal(tmp_path / "j.db") as journal:
            feed, task = await _monitoring(server, journal, sinks)
            await server.push(**event_frame("evt_1", 100.75))
            await until(lambda: feed.since == 100.75, "position advanced")
            foreign = {**event_frame("evt_2", 5_000), "intent_id": "pi_nobody"}
            await server.push(**foreign)
            future = time.time() + 3600
            await server.push(**event_frame("evt_3", future))
            await until(lambda: len(sinks.events) == 3, "all three delivered")
            await until(lambda: feed.since > 100.75, "position advanced by evt_3")
            assert feed.since < future - 3000  # held at this machine's clock
            assert feed.intents == {"pi_1"}
            await server.stop()
            await server.start()
            await until(lambda: len(server.subscribes) == 2, "resubscribed")
            assert server.subscribes[0] == 0
            assert server.subscribes[1] == int(feed.since)
            assert type(server.subscribes[1]) is int  # whole seconds, rounded down
            await feed.stop()
            await asyncio.wait_for(task, WAIT)
            await server.stop()

    asyncio.run(scenario())


def test_the_retry_limit_leads_to_error_and_recovery_reports_health(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = FeedServer()
        await server.start()
        sinks = Sinks()
        with SQLiteJournal(tmp_path / "j.db") as journal:
            feeds = Feeds(
                [server.url, server.url],  # listed twice: still one connection
                journal=journal,
                on_event=sinks.on_event,
                on_health=sinks.on_health,
                backoff=FAST,
            )
            feeds.start()
            assert len(feeds.rows()) == 1
            feed = feeds.feeds[0]
            await until(lambda: feed.state is FeedState.MONITORING, "monitoring")
            await server.stop()
            await until(lambda: feed.state is FeedState.ERROR, "error after the retry limit")
            assert sinks.health == [False]
            assert feeds.rows()[0]["state"] == "ERROR"
            await server.start()
            await until(lambda: feed.state is FeedState.MONITORING, "recovered")
            assert sinks.health == [False, True]
            await feeds.stop()
            await server.stop()

    asyncio.run(scenario())
