"""Upstream event feeds (CONTRACT.md "Upstream event feeds"): one websocket client per URL.

    DISCONNECTED -> CONNECTING -> CONNECTED -> MONITORING (subscribed, receiving)
         ^______________|_____________|____________|        (connection lost: back off, retry)
    ERROR: the retry limit ran out; the feed keeps retrying at the backoff cap, and its first
    successful connect takes it back to CONNECTED.

On every connect the feed sends `subscribe` with `since` = the latest `created` it applied, so a
reconnect (or a restart: the position is kept in the journal, one small stream per feed) replays
only what was missed; a replayed event is harmless, the tracker merge drops what it already saw.
Only an event that reached a flow moves the position, and never past this machine's clock: an
event for an intent nobody here knows, or dated in the future, must not make a reconnect skip
the real events before it. `since` goes out as whole seconds, rounded down (a replayed second
is harmless, a skipped one is not).
Events are decoded by adapters/feed_codec.py and handed to `on_event` (the domain's router) in
order; a frame the codec rejects is logged and skipped, it does not cost the connection.

When a feed goes ERROR, pushed news is no longer trustworthy, so `on_health(False)` tells the
domain (trackers then poll faster); `on_health(True)` once every feed is connected again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from actors.provider import ProviderEvent
from adapters.feed_codec import decode_feed_frame, encode_subscribe
from runtime.backoff import Backoff
from runtime.errors import PayflowError
from runtime.journal import AppendRequest, Journal, NewEvent

FEED_TAG = "feed"
"""Journal tag of the feed position streams (not flows: flow listings skip it)."""
FEED_STREAM_PREFIX = "feed:"
POSITION_EVENT = "feed_position"
DEFAULT_BACKOFF = Backoff(base=0.5, cap=30.0, max_retries=3)
"""DESIGN.md's recovery table, socket disconnect: 3 retries, exponential backoff, full jitter."""
_OPEN_TIMEOUT_S = 10.0
# A feed that stopped answering pings will not answer a close either. websockets waits 10 s
# for the closing handshake by default: a dead feed would be redialled that much later, and a
# SIGTERM would wait that long for it (the contract gives the whole shutdown 10 s).
_CLOSE_TIMEOUT_S = 2.0
_DIAL_ERRORS = (OSError, InvalidHandshake, InvalidURI, TimeoutError, ConnectionClosed)

EventSink = Callable[[ProviderEvent], Awaitable[bool]]
"""Routes one event; True if it reached a flow's tracker."""
HealthSink = Callable[[bool], None]


def _log() -> Any:
    return structlog.get_logger("payflowd.feeds")


class FeedState(StrEnum):
    DISCONNECTED = "DISCONNECTED"
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    MONITORING = "MONITORING"
    ERROR = "ERROR"


class FeedPosition:
    """The latest `created` applied from one feed, kept in the journal across restarts."""

    def __init__(self, journal: Journal, url: str) -> None:
        self._journal = journal
        self._stream = FEED_STREAM_PREFIX + url
        head = journal.head(self._stream)
        self._version = head.version if head is not None else 0
        events = journal.events(self._stream, after_version=self._version - 1) if head else []
        self.since = float(events[-1].payload["created"]) if events else 0.0

    def advance(self, created: float) -> None:
        """Record `created` if newer (blocking: call it off the loop)."""
        if created <= self.since:
            return
        event = NewEvent(kind=POSITION_EVENT, payload={"created": created}, at=time.time())
        self._version = self._journal.append(
            AppendRequest(
                stream_id=self._stream,
                expected_version=self._version,
                events=[event],
                tag=FEED_TAG,
            )
        )
        self.since = created


class Feed:
    """One upstream feed connection; `run` until `stop`."""

    def __init__(
        self,
        url: str,
        *,
        position: FeedPosition,
        on_event: EventSink,
        on_health: HealthSink,
        backoff: Backoff = DEFAULT_BACKOFF,
        ping_interval: float = 20.0,
        ping_timeout: float = 20.0,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.state = FeedState.DISCONNECTED
        self.reconnects = 0
        self.intents: set[str] = set()
        self._position = position
        self._on_event = on_event
        self._on_health = on_health
        self._backoff = backoff
        self._ping = (ping_interval, ping_timeout)
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self._connection: ClientConnection | None = None

    @property
    def since(self) -> float:
        return self._position.since

    async def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if await self._connect_once():
                failures = 0
            if self._stopping.is_set():
                break
            failures += 1
            self._after_failure(failures)
            await self._pause(self._backoff.delay(failures - 1, self._rng))

    async def stop(self) -> None:
        self._stopping.set()
        if self._connection is not None:
            await self._connection.close()

    async def _connect_once(self) -> bool:
        """One connection's life; True if it got as far as subscribing."""
        if self.state is not FeedState.ERROR:  # ERROR stays visible until a connect succeeds
            self._set(FeedState.CONNECTING)
        subscribed = False
        try:
            async with connect(
                self.url,
                ping_interval=self._ping[0],
                ping_timeout=self._ping[1],
                open_timeout=_OPEN_TIMEOUT_S,
                close_timeout=_CLOSE_TIMEOUT_S,
                compression=None,
            ) as connection:
                self._connection = connection
                self._connected()
                await connection.send(encode_subscribe(int(self._position.since)))
                self._set(FeedState.MONITORING)
                subscribed = True
                async for message in connection:
                    await self._receive(message)
        except _DIAL_ERRORS as exc:
            _log().info("feed_disconnected", url=self.url, reason=type(exc).__name__)
        finally:
            self._connection = None
        return subscribed

    def _connected(self) -> None:
        recovered = self.state is FeedState.ERROR
        self._set(FeedState.CONNECTED)
        if recovered:
            _log().info("feed_recovered", url=self.url)
            self._on_health(True)

    def _after_failure(self, failures: int) -> None:
        self.reconnects += 1
        if self.state is not FeedState.ERROR and self._backoff.exhausted(failures):
            self._set(FeedState.ERROR)
            _log().warning("feed_error", url=self.url, retries=failures)
            self._on_health(False)
        elif self.state is not FeedState.ERROR:
            self._set(FeedState.DISCONNECTED)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _receive(self, message: bytes | str) -> None:
        try:
            event = decode_feed_frame(message)
        except PayflowError as exc:
            _log().warning("feed_frame_rejected", url=self.url, code=exc.code, reason=str(exc))
            return
        if event is None:
            return
        if not await self._on_event(event):
            return
        self.intents.add(event.intent_id)
        await asyncio.to_thread(self._position.advance, min(event.created, time.time()))

    def _set(self, state: FeedState) -> None:
        if state is not self.state:
            self.state = state
            _log().debug("feed_state", url=self.url, state=str(state))

    def row(self) -> dict[str, Any]:
        return {
            "kind": "feed",
            "url": self.url,
            "state": str(self.state),
            "reconnects": self.reconnects,
            "flows": len(self.intents),
            "since": self.since,
        }


class Feeds:
    """Every configured feed, run as tasks on the daemon's loop."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        journal: Journal,
        on_event: EventSink,
        on_health: HealthSink,
        backoff: Backoff = DEFAULT_BACKOFF,
        ping_interval: float = 20.0,
        ping_timeout: float = 20.0,
    ) -> None:
        self._on_health = on_health
        self.feeds = [
            Feed(
                url,
                position=FeedPosition(journal, url),
                on_event=on_event,
                on_health=self._health_changed,
                backoff=backoff,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
            )
            for url in dict.fromkeys(urls)  # one connection per URL, even if listed twice
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def _health_changed(self, _healthy: bool) -> None:
        # Healthy again only once no feed is in ERROR: one good feed does not vouch for another.
        self._on_health(not any(feed.state is FeedState.ERROR for feed in self.feeds))

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(feed.run(), name=f"feed {feed.url}") for feed in self.feeds]

    async def stop(self) -> None:
        for feed in self.feeds:
            await feed.stop()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)  # part of the 10 s SIGTERM budget
        for task in self._tasks:
            task.cancel()

    def rows(self) -> list[dict[str, Any]]:
        return [feed.row() for feed in self.feeds]

    def healthy_count(self) -> int:
        return sum(feed.state is FeedState.MONITORING for feed in self.feeds)
