"""The tracker actor with the flow actor: pushes and polls merged into forward changes only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.commands import AttachBooking, SelectMethod
from actors.provider import ProviderEvent
from adapters.domain import DomainSettings
from adapters.dummy_provider import DummyProvider
from tests.domain_harness import PAYS, Backend, Harness, running
from tests.localstripe import LocalStripe
from tests.waiting import wait_until


@pytest.fixture(params=["dummy", "localstripe"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "dummy":
        backend = Backend(name="dummy", dummy=DummyProvider(push_delay=None))
    else:
        server: LocalStripe = request.getfixturevalue("localstripe")
        backend = Backend(name="localstripe", localstripe=server)
    with running(tmp_path / "journal.db", backend, DomainSettings()) as h:
        yield h


def _with_intent(h: Harness) -> tuple[str, str]:
    created = h.create()
    flow_id = created.flow_id
    h.command(AttachBooking(id=flow_id, token=created.token, booking_id=f"bk_{flow_id}"))
    h.command(SelectMethod(id=flow_id, token=created.token, payment_method=h.method(PAYS)))
    view = h.wait_state(flow_id, "PAYMENT_ACTIVE", intent=True)
    return flow_id, str(view["client_secret"]).split("_secret_")[0]


def _push(h: Harness, intent_id: str, event_id: str, status: str, created: float) -> None:
    event = ProviderEvent(event_id=event_id, intent_id=intent_id, status=status, created=created)
    assert h.domain.route_provider_event(event)


def test_repeated_out_of_order_pushes_complete_the_flow_exactly_once(harness: Harness) -> None:
    flow_id, intent_id = _with_intent(harness)
    # The customer confirms with Stripe.js: the daemon hears of it only from the provider.
    harness.loop.run(harness.provider.confirm_intent(intent_id, idempotency_key="client-side"))
    now = harness.events(flow_id)[-1].at + 1
    _push(harness, intent_id, "evt_done", "succeeded", now + 2)
    _push(harness, intent_id, "evt_done", "succeeded", now + 2)
    _push(harness, intent_id, "evt_proc", "processing", now + 1)  # late and older
    _push(harness, intent_id, "evt_done", "succeeded", now + 2)
    harness.wait_state(flow_id, "COMPLETED")
    tracker = wait_until(lambda: harness.domain.trackers.get(flow_id))
    wait_until(tracker.cell.empty, what="the tracker idle")
    kinds = harness.kinds(flow_id)
    assert kinds == [
        "flow_created",
        "booking_attached",
        "method_selected",
        "intent_created",
        "processing",
        "payment_succeeded",
    ]
    states = [v["state"] for v in harness.publisher.views(flow_id)]
    assert states.count("COMPLETED") == 1


def test_polls_alone_find_a_client_side_confirmation(harness: Harness) -> None:
    flow_id, intent_id = _with_intent(harness)
    harness.domain.set_push_health(False)
    harness.loop.run(harness.provider.confirm_intent(intent_id, idempotency_key="client-side-2"))
    done = harness.wait_state(flow_id, "COMPLETED")
    assert done["provider_status"] == "succeeded"
    assert "payment_succeeded" in harness.kinds(flow_id)


def test_unknown_intents_are_not_routed(harness: Harness) -> None:
    event = ProviderEvent(event_id="evt_x", intent_id="pi_unknown", status="succeeded", created=1)
    assert not harness.domain.route_provider_event(event)
