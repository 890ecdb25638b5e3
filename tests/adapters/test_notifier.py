"""Notifications: signed, at least once, retried with backoff, surviving a restart; and sent by
a real flow reaching a terminal state."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from actors.commands import AttachBooking, Cancel
from adapters.effects import LoopThread
from adapters.notifier import SIGNATURE_HEADER, Notifier, Outbox
from runtime.backoff import Backoff
from runtime.sqlite_journal import SQLiteJournal
from tests.domain_harness import Backend, start
from tests.localstripe import HttpServer, SeenRequest, serve
from tests.waiting import wait_until

SECRET = "whsec_notify_test"
FAST = Backoff(base=0.01, cap=0.05)
VIEW = {
    "flow_id": "f1",
    "booking_id": "b1",
    "pre_id": None,
    "state": "COMPLETED",
    "version": 7,
    "amount": 4200,
    "currency": "eur",
    "updated_at": 1700000000.5,
}


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


def _backend(loop: LoopThread, fail_first: int) -> tuple[HttpServer, object]:
    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        status = 503 if len(server.seen) <= fail_first else 204
        return web.Response(status=status)

    serving = serve(answer)
    server: HttpServer = loop.run(serving.__aenter__())
    return server, serving


def _verified(seen: SeenRequest) -> dict[str, object]:
    stamp, v1 = (part.split("=", 1)[1] for part in seen.headers[SIGNATURE_HEADER].split(","))
    expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + seen.body, hashlib.sha256)
    assert hmac.compare_digest(expected.hexdigest(), v1)
    body: dict[str, object] = json.loads(seen.body)
    return body


def test_delivery_is_signed_and_retried_until_2xx(tmp_path: Path, loop: LoopThread) -> None:
    server, serving = _backend(loop, fail_first=2)
    outbox = Outbox(tmp_path / "j.db")
    notifier = Notifier(server.url, SECRET, outbox, loop.loop, backoff=FAST)
    notifier.flow_terminal(VIEW, intent_id="pi_1")
    wait_until(lambda: len(server.seen) >= 3 and outbox.pending() == [], what="delivered")
    bodies = [_verified(seen) for seen in server.seen]
    assert {b["event_id"] for b in bodies} == {"f1:7"}
    assert bodies[0]["type"] == "flow.completed"
    assert bodies[0]["intent_id"] == "pi_1"
    loop.run(notifier.close())
    loop.run(serving.__aexit__(None, None, None))  # type: ignore[attr-defined]
    outbox.close()


def test_undelivered_events_survive_a_restart(tmp_path: Path, loop: LoopThread) -> None:
    down, down_serving = _backend(loop, fail_first=10_000)
    first = Notifier(down.url, SECRET, Outbox(tmp_path / "j.db"), loop.loop, backoff=FAST)
    first.flow_terminal({**VIEW, "state": "EXPIRED"}, intent_id=None)
    wait_until(lambda: len(down.seen) >= 2, what="failed attempts")
    loop.run(first.close())

    up, up_serving = _backend(loop, fail_first=0)
    outbox = Outbox(tmp_path / "j.db")
    second = Notifier(up.url, SECRET, outbox, loop.loop, backoff=FAST)
    second.start()
    wait_until(lambda: outbox.pending() == [], what="redelivered after restart")
    assert _verified(up.seen[0])["type"] == "flow.expired"
    second.flow_terminal({**VIEW, "state": "EXPIRED"}, intent_id=None)  # same event id: no resend
    assert len(up.seen) == 1
    loop.run(second.close())
    for serving in (down_serving, up_serving):
        loop.run(serving.__aexit__(None, None, None))  # type: ignore[attr-defined]


def test_a_cancelled_flow_notifies_the_backend(tmp_path: Path, loop: LoopThread) -> None:
    server, serving = _backend(loop, fail_first=0)
    outbox = Outbox(tmp_path / "j.db")
    notifier = Notifier(server.url, SECRET, outbox, loop.loop, backoff=FAST)
    h = start(tmp_path / "j.db", Backend(name="dummy"), loop=loop, notifier=notifier)
    try:
        created = h.create()
        h.command(AttachBooking(id=created.flow_id, token=created.token, booking_id="bk-n"))
        h.command(Cancel(id=created.flow_id, token=created.token))
        seen = wait_until(lambda: server.seen, what="the notification")
    finally:
        h.stop()
        loop.run(h.provider.close())
        loop.run(notifier.close())
        loop.run(serving.__aexit__(None, None, None))  # type: ignore[attr-defined]
    body = _verified(seen[0])
    assert body["type"] == "flow.cancelled"
    assert body["event_id"] == f"{created.flow_id}:3"
    assert body["booking_id"] == "bk-n"


def test_flows_that_finished_without_reaching_the_outbox_are_reconciled(
    tmp_path: Path, loop: LoopThread
) -> None:
    """A crash between the terminal event and its outbox row: the next start sends it."""
    db = tmp_path / "j.db"
    h = start(db, Backend(name="dummy"), loop=loop)  # no notifier: the rows never get written
    try:
        flows = [h.create() for _ in range(2)]
        for created in flows:
            h.command(Cancel(id=created.flow_id, token=created.token))
            h.wait_state(created.flow_id, "CANCELLED")
        open_flow = h.create()
    finally:
        h.stop()
        loop.run(h.provider.close())
    server, serving = _backend(loop, fail_first=0)
    outbox = Outbox(db)
    notifier = Notifier(server.url, SECRET, outbox, loop.loop, backoff=FAST)
    journal = SQLiteJournal(db)
    try:
        assert notifier.reconcile(journal, since=0.0) == 2
        wait_until(lambda: len(server.seen) == 2 and outbox.pending() == [], what="both sent")
        assert notifier.reconcile(journal, since=0.0) == 0  # known now: never queued twice
        assert notifier.reconcile(journal, since=time.time() + 60) == 0
    finally:
        journal.close()
        loop.run(notifier.close())
        loop.run(serving.__aexit__(None, None, None))  # type: ignore[attr-defined]
    bodies = sorted((_verified(seen) for seen in server.seen), key=lambda b: str(b["flow_id"]))
    expected = sorted(f"{created.flow_id}:2" for created in flows)
    assert [b["event_id"] for b in bodies] == expected
    assert {b["type"] for b in bodies} == {"flow.cancelled"}
    assert open_flow.flow_id not in {b["flow_id"] for b in bodies}
