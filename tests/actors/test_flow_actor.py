"""The flow actor end to end: real journal file, real actor system, real loop thread, on the dummy
provider and on Stripe's SDK against a real localstripe."""

from __future__ import annotations

import dataclasses
import queue
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog

from actors.commands import (
    Ack,
    AttachBooking,
    Cancel,
    Created,
    CreateFlow,
    ErrorFrame,
    Retry,
    SelectMethod,
    Submit,
)
from actors.flow_journal import load_flow
from actors.flow_view import status_view
from actors.messages import ClientCommand, ClientPresence
from actors.provider import ProviderEvent
from actors.tracker_core import PollPolicy
from adapters.domain import DomainSettings
from adapters.dummy_provider import DummyProvider
from runtime.errors import AliasConflict, InvalidTransition, VersionConflict
from runtime.journal import LoadedStream
from tests.domain_harness import DECLINES, NEEDS_3DS, PAYS, Backend, Harness, running
from tests.localstripe import LocalStripe
from tests.waiting import wait_until


@pytest.fixture(params=["dummy", "localstripe"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "dummy":
        return Backend(name="dummy")
    server: LocalStripe = request.getfixturevalue("localstripe")
    return Backend(name="localstripe", localstripe=server)


@pytest.fixture
def harness(tmp_path: Path, backend: Backend) -> Iterator[Harness]:
    with running(tmp_path / "journal.db", backend) as h:
        yield h


def _booked(h: Harness) -> tuple[str, str]:
    created = h.create()
    assert isinstance(created, Created)
    booking = f"bk_{created.flow_id}"
    ack = h.command(AttachBooking(id=created.flow_id, token=created.token, booking_id=booking))
    assert isinstance(ack, Ack)
    return created.flow_id, created.token


def _paying(h: Harness, kind: str) -> tuple[str, str]:
    flow_id, token = _booked(h)
    h.command(SelectMethod(id=flow_id, token=token, payment_method=h.method(kind)))
    h.wait_state(flow_id, "PAYMENT_ACTIVE", intent=True)
    return flow_id, token


def test_happy_path_reaches_completed_publishing_every_version(harness: Harness) -> None:
    flow_id, token = _paying(harness, PAYS)
    ack = harness.command(Submit(id=flow_id, token=token))
    assert isinstance(ack, Ack)
    harness.wait_state(flow_id, "COMPLETED")
    views = harness.publisher.views(flow_id)
    assert [v["version"] for v in views] == list(range(1, len(views) + 1))
    states = [v["state"] for v in views]
    assert states[:3] == ["PRE_BOOKING", "PAYMENT_PENDING", "PAYMENT_ACTIVE"]
    assert states[-2:] == ["PAYMENT_PROCESSING", "COMPLETED"]
    assert views[-1]["provider_status"] == "succeeded"
    assert harness.kinds(flow_id)[-1] == "payment_succeeded"


def test_three_d_secure_goes_through_requires_action(harness: Harness) -> None:
    flow_id, token = _paying(harness, NEEDS_3DS)
    harness.command(Submit(id=flow_id, token=token))
    challenge = harness.wait_state(flow_id, "REQUIRES_ACTION")
    assert challenge["next_action"] is not None
    harness.backend.authenticate(harness.loop, challenge, success=True)
    done = harness.wait_state(flow_id, "COMPLETED")
    assert done["next_action"] is None
    assert "action_required" in harness.kinds(flow_id)


def _provider_status(h: Harness, intent_id: str) -> str:
    return h.loop.run(h.provider.retrieve_intent(intent_id)).status


def test_decline_is_recoverable_and_retry_pays(harness: Harness) -> None:
    flow_id, token = _paying(harness, DECLINES)
    harness.command(Submit(id=flow_id, token=token))
    failed = harness.wait_state(flow_id, "FAILED")
    assert failed["error"]["recoverable"] is True
    assert isinstance(harness.command(Retry(id=flow_id, token=token)), Ack)
    # The declined intent is let go of: cancelled, so Stripe.js can no longer charge it.
    declined = _intent_id(failed)
    wait_until(lambda: _provider_status(harness, declined) == "canceled", what="old intent gone")
    pending = harness.wait_state(flow_id, "PAYMENT_PENDING")
    assert pending["error"] is None
    harness.command(SelectMethod(id=flow_id, token=token, payment_method=harness.method(PAYS)))
    harness.wait_state(flow_id, "PAYMENT_ACTIVE", intent=True)
    harness.command(Submit(id=flow_id, token=token))
    done = harness.wait_state(flow_id, "COMPLETED")
    assert done["attempts"] == 2


def test_retry_limit_makes_the_second_decline_final(harness: Harness) -> None:
    flow_id, token = _paying(harness, DECLINES)
    harness.command(Submit(id=flow_id, token=token))
    harness.wait_state(flow_id, "FAILED")
    harness.command(Retry(id=flow_id, token=token))
    harness.command(SelectMethod(id=flow_id, token=token, payment_method=harness.method(DECLINES)))
    harness.wait_state(flow_id, "PAYMENT_ACTIVE", intent=True)
    harness.command(Submit(id=flow_id, token=token))
    final = harness.wait_state(flow_id, "FAILED")
    assert final["error"]["recoverable"] is False
    last = _intent_id(final)  # failed for good: its intent is cancelled at the provider
    wait_until(lambda: _provider_status(harness, last) == "canceled", what="intent cancelled")
    version = final["version"]
    refused = harness.command(Retry(id=flow_id, token=token))
    assert isinstance(refused, InvalidTransition)
    assert isinstance(harness.command(Cancel(id=flow_id, token=token)), InvalidTransition)
    assert harness.journal.head(flow_id).version == version  # type: ignore[union-attr]


def _intent_id(view: Mapping[str, Any]) -> str:
    return str(view["client_secret"]).split("_secret_")[0]


def test_cancel_cancels_the_intent_at_the_provider(harness: Harness) -> None:
    flow_id, token = _paying(harness, PAYS)
    intent_id = _intent_id(harness.publisher.views(flow_id)[-1])
    assert isinstance(harness.command(Cancel(id=flow_id, token=token)), Ack)
    done = harness.wait_state(flow_id, "CANCELLED")
    assert done["provider_status"] == "canceled"
    # The flow ends on the provider's answer, so the intent is canceled by the time it does.
    assert harness.loop.run(harness.provider.retrieve_intent(intent_id)).status == "canceled"


def test_cancel_during_three_d_secure_ends_the_flow_once_the_intent_is_canceled(
    harness: Harness,
) -> None:
    flow_id, token = _paying(harness, NEEDS_3DS)
    harness.command(Submit(id=flow_id, token=token))
    challenge = harness.wait_state(flow_id, "REQUIRES_ACTION")
    ack = harness.command(Cancel(id=flow_id, token=token))
    assert isinstance(ack, Ack)
    done = harness.wait_state(flow_id, "CANCELLED")
    assert (done["provider_status"], done["next_action"]) == ("canceled", None)
    kinds = harness.kinds(flow_id)
    assert kinds[-2:] == ["cancel_requested", "cancelled"]
    assert kinds[ack.version - 1] == "cancel_requested"  # the ack names the request's version
    requested = [v for v in harness.publisher.views(flow_id) if v["version"] == ack.version]
    assert [v["state"] for v in requested] == ["REQUIRES_ACTION"]
    intent = harness.loop.run(harness.provider.retrieve_intent(_intent_id(challenge)))
    assert intent.status == "canceled"
    again = harness.command(Cancel(id=flow_id, token=token))
    assert isinstance(again, InvalidTransition)  # over: nothing left to cancel


class RecordingNotifier:
    """`TerminalNotifier` that keeps the state of every terminal notification, per flow."""

    def __init__(self) -> None:
        self.states: dict[str, list[str]] = {}

    def flow_terminal(self, view: Mapping[str, Any], *, intent_id: str | None) -> None:
        self.states.setdefault(str(view["flow_id"]), []).append(str(view["state"]))


@contextmanager
def _quiet_provider(
    tmp_path: Path, backend: Backend, settings: DomainSettings, notifier: RecordingNotifier
) -> Iterator[Harness]:
    """A domain that hears of the provider's changes only from its own calls: no pushes, and
    polls too slow to matter, so a test decides which news reaches the flow first."""
    if backend.localstripe is None:
        backend.dummy = DummyProvider(push_delay=None)
    slow = dataclasses.replace(settings, poll=PollPolicy(first=60.0, cap=60.0))
    with running(tmp_path / "journal.db", backend, slow, notifier=notifier) as h:
        yield h


def test_a_cancel_racing_a_client_side_confirm_leaves_the_paid_flow_completed(
    tmp_path: Path, backend: Backend
) -> None:
    """The customer confirms with Stripe.js (here: straight at the provider) and then cancels:
    the provider refuses the cancel, and the flow follows the payment, not the cancel."""
    notifier = RecordingNotifier()
    with _quiet_provider(tmp_path, backend, DomainSettings(), notifier) as h:
        flow_id, token = _paying(h, PAYS)
        intent_id = _intent_id(h.publisher.views(flow_id)[-1])
        paid = h.loop.run(h.provider.confirm_intent(intent_id, idempotency_key="js-1"))
        assert paid.status == "succeeded"
        assert isinstance(h.command(Cancel(id=flow_id, token=token)), Ack)
        done = h.wait_state(flow_id, "COMPLETED")
        assert done["provider_status"] == "succeeded"
        wait_until(lambda: notifier.states.get(flow_id), what="the terminal notification")
        kinds = h.kinds(flow_id)
    assert "cancel_requested" in kinds
    assert "cancelled" not in kinds
    assert notifier.states[flow_id] == ["COMPLETED"]  # never flow.cancelled


def test_a_declined_intent_paid_with_another_card_from_outside_completes_the_flow(
    harness: Harness,
) -> None:
    """As Stripe suggests after a decline, the page confirms the same intent again with another
    card through Stripe.js; the daemon hears of it by webhook (here: the same event, routed as
    the webhook endpoint routes it) and follows the payment to COMPLETED."""
    flow_id, token = _paying(harness, DECLINES)
    harness.command(Submit(id=flow_id, token=token))
    failed = harness.wait_state(flow_id, "FAILED")
    assert failed["error"]["recoverable"] is True
    paid = ProviderEvent(
        event_id="evt_paid_outside", intent_id=_intent_id(failed), status="succeeded", created=1.0
    )
    assert harness.domain.route_provider_event(paid)
    done = harness.wait_state(flow_id, "COMPLETED")
    assert (done["error"], done["provider_status"], done["attempts"]) == (None, "succeeded", 1)
    assert harness.kinds(flow_id)[-2:] == ["processing", "payment_succeeded"]


def test_an_expired_flow_whose_intent_was_paid_meanwhile_is_logged_for_a_refund(
    tmp_path: Path,
) -> None:
    notifier = RecordingNotifier()
    settings = DomainSettings(preserve_window=0.3)
    with (
        structlog.testing.capture_logs() as logs,
        _quiet_provider(tmp_path, Backend(name="dummy"), settings, notifier) as h,
    ):
        flow_id, _ = _paying(h, PAYS)
        view = h.publisher.views(flow_id)[-1]
        h.loop.run(h.provider.confirm_intent(_intent_id(view), idempotency_key="js-1"))
        h.domain.send(flow_id, ClientPresence(attached=True))
        h.domain.send(flow_id, ClientPresence(attached=False))
        h.wait_state(flow_id, "EXPIRED")
        alert = wait_until(
            lambda: [e for e in logs if e["event"] == "payment_taken_after_flow_ended"],
            what="the refund alert",
        )
    assert alert == [
        {
            "event": "payment_taken_after_flow_ended",
            "log_level": "error",
            "flow_id": flow_id,
            "intent_id": _intent_id(view),
            "provider_status": "succeeded",
        }
    ]
    assert notifier.states[flow_id] == ["EXPIRED"]


def test_select_method_before_the_booking_is_an_invalid_transition(tmp_path: Path) -> None:
    with running(tmp_path / "j.db", Backend(name="dummy")) as h:
        created = h.create()
        refused = h.command(
            SelectMethod(id=created.flow_id, token=created.token, payment_method="pm_card_visa")
        )
        assert isinstance(refused, InvalidTransition)
        assert ErrorFrame.from_error(refused).code == "invalid_transition"
        assert h.kinds(created.flow_id) == ["flow_created"]
        assert [v["version"] for v in h.publisher.views(created.flow_id)] == [1]


def test_taken_booking_id_is_a_conflict_and_changes_nothing(harness: Harness) -> None:
    first, _ = _booked(harness)
    other = harness.create()
    refused = harness.command(
        AttachBooking(id=other.flow_id, token=other.token, booking_id=f"bk_{first}")
    )
    assert isinstance(refused, AliasConflict)
    assert refused.code == "conflict"
    assert harness.kinds(other.flow_id) == ["flow_created"]
    assert harness.journal.head(other.flow_id).tag == "PRE_BOOKING"  # type: ignore[union-attr]


def test_expect_version_mismatch_is_refused_and_changes_nothing(harness: Harness) -> None:
    flow_id, token = _booked(harness)
    refused = harness.command(
        SelectMethod(id=flow_id, token=token, payment_method="pm_card_visa", expect_version=1)
    )
    assert isinstance(refused, VersionConflict)
    assert ErrorFrame.from_error(refused).code == "version_conflict"
    assert harness.kinds(flow_id) == ["flow_created", "booking_attached"]


def test_second_create_with_the_same_idempotency_key_writes_nothing(harness: Harness) -> None:
    harness.create(idempotency_key="idem-1")
    refused = harness.create(flow_id="flow_second", idempotency_key="idem-1")
    assert isinstance(refused, AliasConflict)
    assert harness.journal.head("flow_second") is None
    assert harness.journal.resolve("flow_second") is None


def test_a_mistyped_payment_method_can_be_corrected_with_retry(harness: Harness) -> None:
    flow_id, token = _booked(harness)
    ack = harness.command(SelectMethod(id=flow_id, token=token, payment_method="pm_does_not_exist"))
    assert isinstance(ack, Ack)
    failed = harness.wait_state(flow_id, "FAILED")
    assert failed["error"]["code"] == "provider_rejected"
    assert failed["error"]["recoverable"] is True
    assert isinstance(harness.command(Retry(id=flow_id, token=token)), Ack)
    harness.command(SelectMethod(id=flow_id, token=token, payment_method=harness.method(PAYS)))
    harness.wait_state(flow_id, "PAYMENT_ACTIVE", intent=True)
    harness.command(Submit(id=flow_id, token=token))
    assert harness.wait_state(flow_id, "COMPLETED")["attempts"] == 2


def test_calls_carry_deterministic_keys(tmp_path: Path) -> None:
    with running(tmp_path / "j.db", Backend(name="dummy")) as h:
        flow_id, token = _paying(h, PAYS)
        h.command(Submit(id=flow_id, token=token))
        h.wait_state(flow_id, "COMPLETED")
        dummy = h.backend.dummy
        assert dummy is not None
        keys = [key for op, key in dummy.calls if op != "retrieve_intent"]
        assert keys == [f"{flow_id}:create_intent:1:3", f"{flow_id}:confirm_intent:1"]


def test_retry_limit_comes_from_settings(tmp_path: Path) -> None:
    settings = DomainSettings(retry_limit=0)
    with running(tmp_path / "j.db", Backend(name="dummy"), settings) as h:
        flow_id, token = _paying(h, DECLINES)
        h.command(Submit(id=flow_id, token=token))
        assert h.wait_state(flow_id, "FAILED")["error"]["recoverable"] is False


def test_presence_messages_before_payment_do_not_change_the_flow(tmp_path: Path) -> None:
    with running(tmp_path / "j.db", Backend(name="dummy")) as h:
        flow_id, _ = _booked(h)
        h.domain.send(flow_id, ClientPresence(attached=True))
        h.domain.send(flow_id, ClientPresence(attached=False))
        h.domain.send(flow_id, ClientPresence(attached=True))
        ref = wait_until(lambda: h.domain.flows.get(flow_id))
        wait_until(ref.cell.empty, what="presence handled")
        assert h.kinds(flow_id) == ["flow_created", "booking_attached"]


def test_expiry_cancels_an_unpaid_flow_while_a_paying_one_is_tracked_to_its_end(
    tmp_path: Path, backend: Backend
) -> None:
    settings = DomainSettings(preserve_window=0.3)
    with running(tmp_path / "j.db", backend, settings) as h:
        idle, _ = _paying(h, PAYS)
        paying, token = _paying(h, NEEDS_3DS)
        h.command(Submit(id=paying, token=token))
        challenge = h.wait_state(paying, "REQUIRES_ACTION")
        for flow_id in (idle, paying):
            h.domain.send(flow_id, ClientPresence(attached=True))
            h.domain.send(flow_id, ClientPresence(attached=False))
        expired = h.wait_state(idle, "EXPIRED")
        intent_id = str(expired["client_secret"]).split("_secret_")[0]

        def canceled_upstream() -> bool:
            return h.loop.run(h.provider.retrieve_intent(intent_id)).status == "canceled"

        wait_until(canceled_upstream, what="the expired flow's intent canceled")
        assert h.publisher.views(paying)[-1]["state"] == "REQUIRES_ACTION"
        h.backend.authenticate(h.loop, challenge, success=True)
        h.wait_state(paying, "COMPLETED")
        assert "expired" not in h.kinds(paying)


def test_a_client_side_confirm_racing_submit_still_completes(harness: Harness) -> None:
    """The customer confirms with Stripe.js (here: straight at the provider) and the front end
    also sends `submit`; whichever the daemon sees first, the paid flow ends COMPLETED."""
    flow_id, token = _paying(harness, PAYS)
    intent_id = str(harness.publisher.views(flow_id)[-1]["client_secret"]).split("_secret_")[0]
    paid = harness.loop.run(harness.provider.confirm_intent(intent_id, idempotency_key="js-1"))
    assert paid.status == "succeeded"
    harness.command(Submit(id=flow_id, token=token))  # ack, or invalid_transition if it is over
    harness.wait_state(flow_id, "COMPLETED")
    assert "payment_failed" not in harness.kinds(flow_id)


def test_snapshots_ride_on_appends_and_a_reload_equals_the_live_flow(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    with running(db, Backend(name="dummy"), DomainSettings(snapshot_every=2)) as h:
        flow_id, token = _paying(h, PAYS)
        h.command(Submit(id=flow_id, token=token))
        done = h.wait_state(flow_id, "COMPLETED")
        loaded = h.journal.load(flow_id)
        assert loaded is not None
        assert loaded.snapshot is not None
        assert loaded.version - loaded.snapshot.version < 2  # at most one event to replay
        assert load_flow(h.journal, flow_id).version == done["version"]
    with running(db, Backend(name="dummy")) as again:
        reloaded = load_flow(again.journal, flow_id)
        assert status_view(reloaded) == done


def _create_new(h: Harness, flow_id: str, **fields: Any) -> object:
    """A create as the application sends it: to the actor of a flow_id just made up."""
    replies: queue.SimpleQueue[object] = queue.SimpleQueue()
    command = CreateFlow(amount=4200, currency="eur", **fields)
    h.domain.create(flow_id, ClientCommand(command=command, reply=replies.put))
    return replies.get(timeout=10)


def test_a_created_flow_reads_nothing_and_a_refused_create_leaves_no_actor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running(tmp_path / "journal.db", Backend(name="dummy")) as h:
        loads: list[str] = []
        load = h.journal.load

        def counted_load(stream_id: str) -> LoadedStream | None:
            loads.append(stream_id)
            return load(stream_id)

        monkeypatch.setattr(h.journal, "load", counted_load)
        created = _create_new(h, "flow_new", pre_id="pre_new", idempotency_key="idem-new")
        assert isinstance(created, Created)
        assert (created.flow_id, created.version, created.state) == ("flow_new", 1, "PRE_BOOKING")
        refused = _create_new(h, "flow_lost", idempotency_key="idem-new")
        assert isinstance(refused, AliasConflict)
        assert loads == []
        wait_until(lambda: h.domain.flows.live_ids() == ["flow_new"], what="flow_lost gone")
        assert h.journal.head("flow_lost") is None
        ack = h.command(AttachBooking(id="flow_new", token=created.token, booking_id="bk_new"))
        assert isinstance(ack, Ack)
        assert ack.version == 2
