"""The ceiling payflow-bench compares payflowd with: the happy path on the same stack, bare.

One asyncio process, websockets + msgpack + sqlite, no actors, no supervision, no trackers, no
metrics, no logging. It speaks the protocol subset the load driver's success path uses
(`create_flow`, `attach_booking`, `select_method`, `submit`, `leave`; replies `created`/`ack`;
`status` frames with every key of the contract) and keeps payflowd's promises that cost time:

- every change is an event appended to a SQLite journal in WAL mode with `synchronous=FULL`,
  version-checked by the primary key, and nothing is answered or pushed before it is durable;
- appends that arrive together share one transaction and one fsync (group commit, on a writer
  thread, as payflowd's `GroupCommitter` does);
- the simulated provider answers after `latency` seconds (create intent, confirm intent).

What it leaves out is what payflowd is for (ids in one namespace, tokens, idempotency keys,
recovery, retries, 3-D Secure): it shows what CPython can do with these libraries on this
machine, so payflowd's figures can be read as a fraction of it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from actors.flow_view import STATUS_KEYS

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (flow_id TEXT, version INTEGER, kind TEXT, body TEXT,"
    " at REAL, PRIMARY KEY (flow_id, version)) WITHOUT ROWID"
)
_Row = tuple[str, int, str, str, float]


class GroupCommit:
    """Appends from the loop, committed by one writer thread, many per fsync."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._pending: list[tuple[_Row, asyncio.Future[None]]] = []
        self._wake = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._write_forever, daemon=True)
        self._writer.start()

    def append(self, row: _Row) -> asyncio.Future[None]:
        durable = self._loop.create_future()
        with self._wake:
            self._pending.append((row, durable))
            self._wake.notify()
        return durable

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._writer.join(5)
        self._db.close()

    def _write_forever(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                batch, self._pending = self._pending, []
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", [r for r, _ in batch])
            self._db.execute("COMMIT")  # one fsync of the WAL for the whole batch
            self._loop.call_soon_threadsafe(_resolve, [f for _, f in batch])


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


@dataclass(slots=True)
class _Flow:
    flow_id: str
    connection: ServerConnection
    view: dict[str, Any] = field(default_factory=dict)


class CeilingServer:
    """The bare happy path; see the module docstring."""

    def __init__(self, journal: GroupCommit, latency: float) -> None:
        self._journal = journal
        self._latency = latency
        self._flows: dict[str, _Flow] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, connection: ServerConnection) -> None:
        try:
            async for message in connection:
                request = msgpack.unpackb(message)
                reply = await self._handle(connection, request)
                await connection.send(msgpack.packb({**reply, "ref": request.get("ref")}))
        except ConnectionClosed:
            return

    async def _handle(
        self, connection: ServerConnection, request: dict[str, Any]
    ) -> dict[str, Any]:
        kind = request["type"]
        if kind == "create_flow":
            flow = _Flow(flow_id="flw_" + secrets.token_urlsafe(16), connection=connection)
            flow.view = dict.fromkeys(STATUS_KEYS) | {"type": "status", "flow_id": flow.flow_id}
            await self._change(
                flow,
                "created",
                state="PRE_BOOKING",
                pre_id=request.get("pre_id"),
                amount=request["amount"],
                currency=request["currency"],
                attempts=0,
                modal="BOOKING",
                step="SESSION",
                push=False,
            )
            self._flows[flow.flow_id] = flow
            return {
                "type": "created",
                "flow_id": flow.flow_id,
                "token": "t",
                "state": "PRE_BOOKING",
                "version": 1,
            }
        if kind == "leave":
            return {"type": "ack", "flow_id": request["id"], "version": 0}
        flow = self._flows[request["id"]]
        if kind == "attach_booking":
            await self._change(
                flow,
                kind,
                state="PAYMENT_PENDING",
                booking_id=request["booking_id"],
                modal="PAYMENT_PENDING",
                step="METHOD",
            )
        elif kind == "select_method":
            await self._change(
                flow, kind, state="PAYMENT_ACTIVE", modal="PAYMENT_ACTIVE", step="REVIEW"
            )
            self._spawn(
                self._provider_step(
                    flow,
                    "intent_created",
                    provider_status="requires_confirmation",
                    client_secret="pi_x_secret_y",  # noqa: S106 - a fake of the real size
                    attempts=1,
                )
            )
        elif kind == "submit":
            await self._change(flow, kind, state="PAYMENT_PROCESSING", step="PROCESSING")
            self._spawn(
                self._provider_step(
                    flow,
                    "payment_succeeded",
                    state="COMPLETED",
                    provider_status="succeeded",
                    modal="PAYMENT_COMPLETE",
                    step="CONFIRMATION",
                )
            )
        return {"type": "ack", "flow_id": flow.flow_id, "version": flow.view["version"]}

    async def _change(self, flow: _Flow, kind: str, *, push: bool = True, **changes: Any) -> None:
        """Persist the event, then (once durable) publish the new status."""
        at = time.time()
        version = (flow.view["version"] or 0) + 1
        flow.view.update(changes, version=version, updated_at=at)
        await self._journal.append((flow.flow_id, version, kind, json.dumps(changes), at))
        if push:
            await flow.connection.send(msgpack.packb(flow.view))

    async def _provider_step(self, flow: _Flow, kind: str, **changes: Any) -> None:
        await asyncio.sleep(self._latency)  # the provider's answer
        await self._change(flow, kind, **changes)
        if changes.get("state") == "COMPLETED":
            del self._flows[flow.flow_id]

    def _spawn(self, step: Any) -> None:
        task = asyncio.get_running_loop().create_task(step)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _serve(db: Path, latency: float, pipe: Connection) -> None:
    journal = GroupCommit(db, asyncio.get_running_loop())
    server = CeilingServer(journal, latency)
    async with serve(server.serve, "127.0.0.1", 0, compression=None, ping_interval=None) as ws:
        pipe.send(ws.sockets[0].getsockname()[1])
        await asyncio.to_thread(pipe.recv)  # "stop"
    journal.close()


def ceiling_main(db: str, latency: float, pipe: Connection) -> None:
    """The ceiling server process: sends its port, serves until the pipe says stop."""
    asyncio.run(_serve(Path(db), latency, pipe))
