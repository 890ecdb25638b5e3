"""Terminal-state notifications to the booking backend (CONTRACT "Notifications").

Each terminal flow becomes one JSON event, signed like Stripe signs webhooks
(`Payflowd-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`), stored in an outbox
table before anything is sent, and POSTed until the backend answers 2xx: at least once, with
full-jitter backoff, across restarts (`start()` resends whatever the outbox still holds).
`event_id` is `{flow_id}:{version}`: the same on every retry, so the backend can deduplicate.

The outbox is a small table of its own in the journal's SQLite file (one file to back up); the
journal's tables are not touched.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from actors.flow_core import status_view
from actors.flow_journal import load_flow
from runtime.backoff import Backoff
from runtime.journal import Journal

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "Payflowd-Signature"
DEFAULT_BACKOFF = Backoff(base=0.5, cap=60.0)  # no max_retries: until a 2xx
EVENT_TYPES: Mapping[str, str] = {
    "COMPLETED": "flow.completed",
    "FAILED": "flow.failed",
    "CANCELLED": "flow.cancelled",
    "EXPIRED": "flow.expired",
}
_MAX_BACKOFF_ATTEMPT = 32  # past this the delay is at its cap anyway

_SCHEMA = """CREATE TABLE IF NOT EXISTS notify_outbox (
    event_id TEXT NOT NULL PRIMARY KEY, body BLOB NOT NULL, created REAL NOT NULL,
    delivered_at REAL) WITHOUT ROWID"""


def notification(view: Mapping[str, Any], intent_id: str | None) -> dict[str, Any]:
    """The event for a flow's terminal status view."""
    state = str(view["state"])
    return {
        "event_id": f"{view['flow_id']}:{view['version']}",
        "type": EVENT_TYPES[state],
        "flow_id": view["flow_id"],
        "booking_id": view["booking_id"],
        "pre_id": view["pre_id"],
        "state": state,
        "version": view["version"],
        "amount": view["amount"],
        "currency": view["currency"],
        "intent_id": intent_id,
        "at": view["updated_at"],
    }


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


class Outbox:
    """Notifications not yet acknowledged, durable in SQLite. Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(path), timeout=5.0, check_same_thread=False, isolation_level=None
        )
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute(_SCHEMA)

    def add(self, event_id: str, body: bytes) -> bool:
        """Store a new event; False if this event id is already known (delivered or not)."""
        with self._lock:
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO notify_outbox (event_id, body, created) VALUES (?, ?, ?)",
                (event_id, body, time.time()),
            )
            return cursor.rowcount == 1

    def known(self, event_id: str) -> bool:
        """Whether this event id was ever stored (delivered or not)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM notify_outbox WHERE event_id = ?", (event_id,)
            ).fetchone()
        return row is not None

    def pending(self) -> list[tuple[str, bytes]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT event_id, body FROM notify_outbox WHERE delivered_at IS NULL "
                "ORDER BY created"
            ).fetchall()
        return [(str(event_id), bytes(body)) for event_id, body in rows]

    def delivered(self, event_id: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE notify_outbox SET delivered_at = ? WHERE event_id = ?",
                (time.time(), event_id),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class Notifier:
    """`actors.messages.TerminalNotifier`: `flow_terminal` from any thread, delivery on `loop`."""

    def __init__(
        self,
        url: str,
        secret: str,
        outbox: Outbox,
        loop: asyncio.AbstractEventLoop,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._secret = secret
        self._outbox = outbox
        self._loop = loop
        self._backoff = backoff
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._rng = random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._sending: dict[str, asyncio.Task[None]] = {}

    def __repr__(self) -> str:
        return f"Notifier(url={self._url!r}, secret=[redacted])"

    def flow_terminal(self, view: Mapping[str, Any], *, intent_id: str | None) -> None:
        event = notification(view, intent_id)
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        if self._outbox.add(event["event_id"], body):  # durable before the first try
            self._loop.call_soon_threadsafe(self._send, event["event_id"], body)

    def start(self) -> None:
        """Resend what an earlier run left undelivered (call once at start, any thread)."""
        for event_id, body in self._outbox.pending():
            self._loop.call_soon_threadsafe(self._send, event_id, body)

    def reconcile(self, journal: Journal, *, since: float) -> int:
        """Queue every flow that finished at or after `since` but never reached the outbox.

        The terminal event is durable before its outbox row is written, so a crash between the
        two would lose the notification; the journal is the truth, and this closes that gap at
        start. Blocking (SQLite reads): call it off the event loop. Returns how many it queued.
        """
        queued = 0
        for head in journal.heads(tags=EVENT_TYPES.keys()):
            if head.updated_at < since or self._outbox.known(f"{head.stream_id}:{head.version}"):
                continue
            flow = load_flow(journal, head.stream_id)
            if flow.is_terminal:  # a recoverable FAILED may still be retried: not final
                self.flow_terminal(status_view(flow), intent_id=flow.intent_id)
                queued += 1
        if queued:
            log.warning("notifications_reconciled", count=queued)
        return queued

    async def close(self) -> None:
        """Stop sending (what is left stays in the outbox for the next start)."""
        tasks = list(self._sending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _send(self, event_id: str, body: bytes) -> None:
        if event_id not in self._sending:
            task = self._loop.create_task(self._deliver(event_id, body))
            self._sending[event_id] = task
            task.add_done_callback(lambda _: self._sending.pop(event_id, None))

    async def _deliver(self, event_id: str, body: bytes) -> None:
        attempt = 0
        while not await self._post(body):
            delay = self._backoff.delay(min(attempt, _MAX_BACKOFF_ATTEMPT), self._rng)
            log.info("notification_retry", event_id=event_id, attempt=attempt + 1)
            await asyncio.sleep(delay)
            attempt += 1
        await asyncio.to_thread(self._outbox.delivered, event_id)
        log.info("notification_delivered", event_id=event_id)

    async def _post(self, body: bytes) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self._secret, int(self._clock()), body),
        }
        try:
            async with self._session.post(self._url, data=body, headers=headers) as reply:
                return 200 <= reply.status < 300
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("notification_unreachable", error=type(exc).__name__)
            return False
