"""A SIGKILL under load, the way an operator breaks it: "persist the event, then act", end to end.

Fifty customers pay over the real websocket protocol (create_flow, attach_booking, select_method,
wait for the intent, submit, wait for the end) against the real daemon with the dummy provider,
and every frame they receive is recorded. The daemon is SIGKILLed in the middle of it, then
restarted on the same journal. Whatever the kill moment, the restarted daemon must show:

1. every `created`/`ack` version a customer was sent (a reply comes only once its event is durable);
2. every `status` a customer was sent, at its version and in its state (statuses are published
   only once durable: nothing published is lost or rewritten);
3. every flow in a state that needs no operator: terminal, or waiting for the customer (the dummy
   provider forgets its intents, so a payment in flight across the kill ends FAILED);
4. versions consecutive from 1 in every history, and no flow paid twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from adapters.ctl import ControlClient
from tests.daemon_harness import DaemonProcess, launch
from tests.waiting import wait_until

CUSTOMERS = 50
LOAD_S = 2.5  # how long the customers pay before the kill; it only moves the kill moment
RECOVERY_WAIT_S = 30.0
DAEMON_ARGS = ("--dummy-latency", "0.05")  # provider calls take time, so some are in flight
Frame = dict[str, Any]
Histories = dict[str, list[Frame]]
NEEDS_NO_OPERATOR = frozenset(
    {
        *("COMPLETED", "FAILED", "CANCELLED", "EXPIRED"),  # FAILED: terminal or retry-able
        *("PRE_BOOKING", "PAYMENT_PENDING", "PAYMENT_ACTIVE", "REQUIRES_ACTION"),
    }
)


class Lost(Exception):
    """The connection dropped (the daemon was killed) before the answer came."""


class Customer:
    """One websocket connection: records every frame received, matches replies by `ref`."""

    def __init__(self, connection: ClientConnection, received: list[Frame]) -> None:
        self._connection, self.received = connection, received
        self._refs = itertools.count(1)
        self._replies: dict[int, asyncio.Future[Frame]] = {}
        self._statuses: defaultdict[str, list[Frame]] = defaultdict(list)
        self._news = asyncio.Event()
        self._open = True

    async def read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self._connection:
                self._route(msgpack.unpackb(message))
        self._open = False
        for reply in self._replies.values():
            reply.set_exception(Lost())
            reply.exception()  # retrieved: a request whose send failed awaits no reply
        self._wake()

    def _route(self, frame: Frame) -> None:
        self.received.append(frame)
        if frame["type"] == "status":
            self._statuses[frame["flow_id"]].append(frame)
        ref = frame.get("ref")
        reply = self._replies.pop(ref, None) if isinstance(ref, int) else None
        if reply is not None:
            reply.set_result(frame)
        self._wake()

    def _wake(self) -> None:
        self._news.set()
        self._news = asyncio.Event()

    async def request(self, type_: str, **fields: Any) -> Frame:
        ref = next(self._refs)
        reply: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._replies[ref] = reply
        await self._connection.send(msgpack.packb({"type": type_, "ref": ref, **fields}))
        frame = await reply
        assert frame["type"] != "error", f"{type_} refused under load: {frame}"
        return frame

    async def status(self, flow_id: str, wanted: Callable[[Frame], bool]) -> Frame:
        """The first status of `flow_id` (already received or still to come) that is `wanted`."""
        while True:
            news = self._news
            found = next((s for s in self._statuses[flow_id] if wanted(s)), None)
            if found is not None:
                return found
            if not self._open:
                raise Lost()
            await news.wait()


# --- the load --------------------------------------------------------------------------------


def _intent_ready(status: Frame) -> bool:
    return bool(status["provider_status"] == "requires_confirmation")


def _over(status: Frame) -> bool:
    return status["state"] in ("COMPLETED", "FAILED", "CANCELLED", "EXPIRED")


async def _pay(customer: Customer, booking_id: str) -> None:
    created = await customer.request("create_flow", amount=4200, currency="eur")
    flow = {"id": created["flow_id"], "token": created["token"]}
    await customer.request("attach_booking", **flow, booking_id=booking_id)
    await customer.request("select_method", **flow, payment_method="pm_card_visa")
    await customer.status(created["flow_id"], _intent_ready)
    await customer.request("submit", **flow)
    await customer.status(created["flow_id"], _over)


async def _keep_paying(customer: Customer, name: str) -> None:
    """Flows one after the other, until the connection drops."""
    for n in itertools.count():
        await _pay(customer, f"bk_{name}_{n}")


async def _load_then_kill(daemon: DaemonProcess) -> list[Frame]:
    """Every frame the customers received, the daemon SIGKILLed after LOAD_S of paying."""
    received: list[Frame] = []
    connections = await asyncio.gather(*(connect(daemon.url) for _ in range(CUSTOMERS)))
    customers = [Customer(connection, received) for connection in connections]
    readers = [asyncio.create_task(customer.read()) for customer in customers]
    lanes = [asyncio.create_task(_keep_paying(c, f"c{i}")) for i, c in enumerate(customers)]
    await asyncio.wait(lanes, timeout=LOAD_S)  # the load's length, not a wait for a condition
    daemon.kill()  # SIGKILL
    endings = await asyncio.gather(*lanes, return_exceptions=True)
    await asyncio.gather(*readers)
    assert [e for e in endings if not isinstance(e, Lost | ConnectionClosed)] == []
    return received


# --- the restarted daemon, seen through its control socket ----------------------------------


def _settled(daemon: DaemonProcess) -> list[Frame] | None:
    """`payflowctl ps`, once every flow is in a state that needs no operator."""
    flows: list[Frame] = daemon.ctl_json("ps")
    return flows if all(f["state"] in NEEDS_NO_OPERATOR for f in flows) else None


def _histories(daemon: DaemonProcess, flows: list[Frame]) -> Histories:
    """`payflowctl history ID` of every flow, over one control connection (what it sends)."""
    with ControlClient(daemon.control) as control:
        return {f["flow_id"]: control.call("history", {"id": f["flow_id"]}) for f in flows}


def _row(histories: Histories, flow_id: str, version: int) -> Frame | None:
    rows = [row for row in histories.get(flow_id, []) if row["version"] == version]
    return rows[0] if rows else None


# --- the invariants: each returns what breaks it, so a failure shows the evidence ------------


def _replies_not_durable(received: list[Frame], histories: Histories) -> list[Frame]:
    replies = [f for f in received if f["type"] in ("created", "ack")]
    return [f for f in replies if _row(histories, f["flow_id"], f["version"]) is None]


def _statuses_not_durable(received: list[Frame], histories: Histories) -> list[Frame]:
    def durable(status: Frame) -> bool:
        row = _row(histories, status["flow_id"], status["version"])
        return row is not None and row["state"] == status["state"]

    return [f for f in received if f["type"] == "status" and not durable(f)]


def _broken_histories(histories: Histories) -> dict[str, list[tuple[int, str]]]:
    def broken(rows: list[Frame]) -> bool:
        paid = Counter(row["event"] for row in rows)["payment_succeeded"]
        return [row["version"] for row in rows] != list(range(1, len(rows) + 1)) or paid > 1

    return {
        flow_id: [(row["version"], row["event"]) for row in rows]
        for flow_id, rows in histories.items()
        if broken(rows)
    }


def _caught_mid_flow(received: list[Frame]) -> set[str]:
    """Flows a customer had created and not yet seen end when the daemon was killed."""
    created = {f["flow_id"] for f in received if f["type"] == "created"}
    return created - {f["flow_id"] for f in received if f["type"] == "status" and _over(f)}


def test_a_sigkill_under_load_loses_nothing_a_customer_was_told(tmp_path: Path) -> None:
    daemon = launch(tmp_path, DAEMON_ARGS)
    try:
        received = asyncio.run(_load_then_kill(daemon))
        daemon = daemon.restart()
        flows = wait_until(
            lambda: _settled(daemon), "every flow needing no operator", RECOVERY_WAIT_S
        )
        histories = _histories(daemon, flows)
        one = min(histories)
        assert daemon.ctl_json("history", one) == histories[one]  # what payflowctl shows
    finally:
        daemon.kill()
    assert _caught_mid_flow(received), "the kill came when no flow was under way"
    assert _replies_not_durable(received, histories) == []
    assert _statuses_not_durable(received, histories) == []
    assert _broken_histories(histories) == {}
