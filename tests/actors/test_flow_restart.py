"""A flow survives the whole system stopping mid-call: rebuilt from the same journal file, it
re-sends the call it had persisted the cause of, with the SAME idempotency key, and goes on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.commands import Ack, AttachBooking, Cancel, SelectMethod, Submit
from actors.messages import ClientPresence
from adapters.domain import DomainSettings
from adapters.dummy_provider import DummyProvider
from adapters.effects import LoopThread
from tests.domain_harness import NEEDS_3DS, PAYS, Backend, Harness, start
from tests.localstripe import HttpServer, LocalStripe, recording_proxy
from tests.waiting import wait_until

SLOW_S = 0.4  # how long the provider takes to answer a create: the window to stop the system in


class Upstream:
    """What the provider saw: the idempotency keys of intent creations, in order."""

    def __init__(self, backend: Backend, proxy: HttpServer | None) -> None:
        self.backend = backend
        self.proxy = proxy

    def create_keys(self) -> list[str]:
        if self.proxy is None:
            assert self.backend.dummy is not None
            return [key or "" for op, key in self.backend.dummy.calls if op == "create_intent"]
        return [
            seen.headers.get("Idempotency-Key", "")
            for seen in self.proxy.seen
            if seen.method == "POST" and seen.path == "/v1/payment_intents"
        ]


@pytest.fixture(params=["dummy", "localstripe"])
def upstream(request: pytest.FixtureRequest) -> Iterator[tuple[Upstream, LoopThread]]:
    loop = LoopThread()
    if request.param == "dummy":
        backend = Backend(name="dummy", dummy=DummyProvider(latency=SLOW_S, push_delay=0.05))
        yield Upstream(backend, None), loop
        loop.stop()
        return
    server: LocalStripe = request.getfixturevalue("localstripe")
    proxying = recording_proxy(server.base_url, create_delay=SLOW_S)
    proxy = loop.run(proxying.__aenter__())
    backend = Backend(name="localstripe", localstripe=server, api_base=proxy.url)
    yield Upstream(backend, proxy), loop
    loop.run(proxying.__aexit__(None, None, None))
    loop.stop()


def _stop(h: Harness) -> None:
    h.stop()
    h.loop.run(h.provider.close())


def test_restart_resends_the_pending_create_with_the_same_key(
    tmp_path: Path, upstream: tuple[Upstream, LoopThread]
) -> None:
    seen, loop = upstream
    db = tmp_path / "journal.db"
    first = start(db, seen.backend, loop=loop)
    created = first.create()
    flow_id, token = created.flow_id, created.token
    first.command(AttachBooking(id=flow_id, token=token, booking_id="bk-restart"))
    first.command(SelectMethod(id=flow_id, token=token, payment_method=first.method(PAYS)))
    wait_until(seen.create_keys, what="the create request sent")
    _stop(first)  # the provider's answer finds no one to tell

    second = start(db, seen.backend, loop=loop)
    try:
        assert second.domain.recover() == 1
        second.wait_state(flow_id, "PAYMENT_ACTIVE", intent=True)
        second.command(Submit(id=flow_id, token=token))
        second.wait_state(flow_id, "COMPLETED")
        assert second.kinds(flow_id).count("intent_created") == 1
    finally:
        _stop(second)
    keys = seen.create_keys()
    assert len(keys) == 2
    assert keys[0] == keys[1] == f"{flow_id}:create_intent:1:3"


def test_restart_after_a_cancel_request_sends_the_same_cancel_again(tmp_path: Path) -> None:
    """Stopped after `cancel_requested` was persisted, with the cancel in flight: the flow
    rebuilt from the journal sends exactly that cancel again, and ends CANCELLED on its answer."""
    loop = LoopThread()
    dummy = DummyProvider(latency=SLOW_S, push_delay=0.05)
    backend = Backend(name="dummy", dummy=dummy)
    db = tmp_path / "journal.db"

    def cancel_keys() -> list[str]:
        return [key or "" for op, key in dummy.calls if op == "cancel_intent"]

    first = start(db, backend, loop=loop)
    created = first.create()
    flow_id, token = created.flow_id, created.token
    first.command(AttachBooking(id=flow_id, token=token, booking_id="bk-cancel"))
    first.command(SelectMethod(id=flow_id, token=token, payment_method=first.method(NEEDS_3DS)))
    first.wait_state(flow_id, "PAYMENT_ACTIVE", intent=True)
    first.command(Submit(id=flow_id, token=token))
    first.wait_state(flow_id, "REQUIRES_ACTION")
    assert isinstance(first.command(Cancel(id=flow_id, token=token)), Ack)
    wait_until(cancel_keys, what="the cancel sent")
    _stop(first)  # the provider's answer finds no one to tell

    second = start(db, backend, loop=loop)
    try:
        assert second.domain.recover() == 1
        done = second.wait_state(flow_id, "CANCELLED")
        assert done["provider_status"] == "canceled"
        assert second.kinds(flow_id)[-2:] == ["cancel_requested", "cancelled"]
        requested = second.kinds(flow_id).index("cancel_requested") + 1  # its version
    finally:
        _stop(second)
        loop.stop()
    assert cancel_keys() == [f"{flow_id}:cancel_intent:1:{requested}"] * 2


def test_an_expired_flow_whose_cancel_was_lost_in_a_stop_cancels_its_intent_after_restart(
    tmp_path: Path,
) -> None:
    """The flow expired with an intent the provider could still charge, and the system stopped
    before the cancel reached the provider: recovery loads the recently ended flow again and the
    cancel goes out, with the same key."""
    loop = LoopThread()
    dummy = DummyProvider(latency=SLOW_S, push_delay=None)
    backend = Backend(name="dummy", dummy=dummy)
    db = tmp_path / "journal.db"

    def cancel_keys() -> list[str]:
        return [key or "" for op, key in dummy.calls if op == "cancel_intent"]

    first = start(db, backend, DomainSettings(preserve_window=0.2), loop=loop)
    created = first.create()
    flow_id, token = created.flow_id, created.token
    first.command(AttachBooking(id=flow_id, token=token, booking_id="bk-expire"))
    first.command(SelectMethod(id=flow_id, token=token, payment_method=first.method(PAYS)))
    secret = str(first.wait_state(flow_id, "PAYMENT_ACTIVE", intent=True)["client_secret"])
    intent_id = secret.partition("_secret_")[0]
    first.domain.send(flow_id, ClientPresence(attached=True))
    first.domain.send(flow_id, ClientPresence(attached=False))
    first.wait_state(flow_id, "EXPIRED")
    wait_until(cancel_keys, what="the cancel sent")
    _stop(first)  # the provider's answer finds no one to tell
    (key,) = cancel_keys()

    second = start(db, backend, loop=loop)
    try:
        assert second.domain.recover() == 0  # nothing unfinished; the expired flow is rechecked
        wait_until(lambda: len(cancel_keys()) == 2, what="the cancel sent again")
        canceled = wait_until(
            lambda: second.loop.run(dummy.retrieve_intent(intent_id)).status == "canceled",
            what="the intent canceled",
        )
    finally:
        _stop(second)
        loop.stop()
    assert canceled
    assert cancel_keys() == [key, key] == [f"{flow_id}:cancel_intent:1"] * 2
