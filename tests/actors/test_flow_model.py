"""What each event does to a flow's fields, and the snapshot form a restart reads back."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from actors.flow_core import (
    Cancelled,
    Flow,
    FlowCreated,
    FlowError,
    FlowEvent,
    FlowState,
    MethodSelected,
    PaymentFailed,
    Processing,
    allowed_events,
    apply,
    attempt_for_selection,
    flow_from_snapshot,
    flow_to_snapshot,
    replay,
    replay_records,
)
from actors.flow_model import _Changes
from actors.flow_states import EventType
from runtime.errors import Internal
from tests.actors.flows import (
    SITUATIONS,
    T0,
    THREE_DS,
    active,
    at,
    cancel,
    challenge,
    created,
    fail,
    intent,
    pending,
    processing,
    request_cancel,
    requires_action,
    retry,
    select,
    some_event,
    then,
)


def test_flow_starts_at_version_zero_and_is_created_at_version_one() -> None:
    initial = Flow.initial("f-9")
    assert (initial.state, initial.version, initial.flow_id) == (FlowState.INITIAL, 0, "f-9")
    flow = created("f-9")
    assert (flow.state, flow.version) == (FlowState.PRE_BOOKING, 1)
    assert (flow.amount, flow.currency, flow.pre_id, dict(flow.metadata)) == (
        4200,
        "eur",
        "pre-1",
        {"k": "v"},
    )
    assert flow.created_at == flow.updated_at == T0


def test_flow_keeps_its_own_copy_of_metadata() -> None:
    metadata = {"room": "12"}
    flow = apply(
        Flow.initial("f"),
        FlowCreated(at=T0, flow_id="f", amount=1, currency="eur", metadata=metadata),
    )
    metadata["room"] = "13"
    assert flow.metadata == {"room": "12"}


def test_flow_created_for_another_flow_is_refused() -> None:
    with pytest.raises(Internal, match="other"):
        apply(Flow.initial("f"), FlowCreated(at=T0, flow_id="other", amount=1, currency="eur"))


def test_first_selection_starts_attempt_one_and_switching_method_stays_in_it() -> None:
    first = then(pending(), select, intent)
    assert (first.attempts, first.payment_method, first.intent_id) == (1, "pm_card_visa", "pi_1_3")
    switched = apply(first, MethodSelected(at=at(first), payment_method="pm_amex", attempt=1))
    assert switched.attempts == 1
    assert switched.payment_method == "pm_amex"
    # the new method pays through a new intent: the old one is gone from the flow
    assert (switched.intent_id, switched.client_secret, switched.provider_status) == (None,) * 3


def test_method_selected_with_the_wrong_attempt_number_is_refused_unchanged() -> None:
    flow = pending()
    before = flow_to_snapshot(flow)
    with pytest.raises(Internal, match="attempt 2, expected 1"):
        apply(flow, MethodSelected(at=at(flow), payment_method="pm_card_visa", attempt=2))
    assert flow_to_snapshot(flow) == before


def test_retry_clears_error_and_intent_and_next_attempt_counts_two() -> None:
    failed = then(processing(), fail(True))
    assert failed.error == FlowError(
        code="card_declined", message="Your card was declined.", recoverable=True
    )
    again = then(failed, retry)
    assert again.state is FlowState.PAYMENT_PENDING
    assert (again.error, again.intent_id, again.client_secret, again.payment_method) == (None,) * 4
    assert again.attempts == 1
    assert attempt_for_selection(again) == 2
    assert then(again, select, intent).attempts == 2


def test_next_action_exists_only_in_requires_action() -> None:
    waiting = requires_action()
    assert waiting.next_action == THREE_DS
    passed = apply(waiting, Processing(at=at(waiting), provider_status="processing"))
    assert passed.next_action is None
    assert passed.provider_status == "processing"


def test_failure_without_a_provider_status_keeps_the_last_one_seen() -> None:
    flow = active(with_intent=True)
    failed = apply(
        flow,
        PaymentFailed(at=at(flow), code="x", message="m", recoverable=True, provider_status=None),
    )
    assert failed.provider_status == "requires_confirmation"


def test_cancel_keeps_the_intent_so_the_shell_can_cancel_it_upstream() -> None:
    flow = then(active(with_intent=True), cancel)
    assert (flow.state, flow.intent_id) == (FlowState.CANCELLED, "pi_1_3")


def test_a_cancel_request_keeps_the_state_and_ends_with_it() -> None:
    asked = then(requires_action(), request_cancel)
    assert (asked.state, asked.cancel_requested, asked.version) == (
        FlowState.REQUIRES_ACTION,
        True,
        requires_action().version + 1,
    )
    # The customer passed 3-D Secure first: the payment goes on and the request is over.
    paid = apply(asked, Processing(at=at(asked), provider_status="processing"))
    assert (paid.state, paid.cancel_requested) == (FlowState.PAYMENT_PROCESSING, False)
    cancelled = apply(asked, Cancelled(at=at(asked), provider_status="canceled"))
    assert (cancelled.state, cancelled.provider_status) == (FlowState.CANCELLED, "canceled")


def test_cancelled_without_a_provider_status_keeps_the_last_one_seen() -> None:
    flow = then(active(with_intent=True), cancel)
    assert flow.provider_status == "requires_confirmation"


def test_records_and_snapshots_written_before_cancel_requests_still_load() -> None:
    old_record = ("cancelled", {}, T0 + 9)
    flow = replay_records([old_record], start=active(with_intent=True))
    assert (flow.state, flow.provider_status) == (FlowState.CANCELLED, "requires_confirmation")
    old_snapshot = flow_to_snapshot(requires_action())
    del old_snapshot["cancel_requested"]
    assert flow_from_snapshot(old_snapshot) == requires_action()


def test_client_secret_stays_out_of_repr() -> None:
    flow = active(with_intent=True)
    assert flow.client_secret is not None
    assert flow.client_secret not in repr(flow)


def test_replay_equals_applying_one_by_one() -> None:
    start = Flow.initial("f")
    events: list[FlowEvent] = [
        FlowCreated(at=T0, flow_id="f", amount=5, currency="eur"),
        Cancelled(at=T0 + 1),
    ]
    assert replay(events, start=start) == apply(apply(start, events[0]), events[1])


@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_snapshot_round_trips_through_json(situation: str) -> None:
    flow = SITUATIONS[situation]()
    restored = flow_from_snapshot(json.loads(json.dumps(flow_to_snapshot(flow))))
    assert restored == flow
    assert type(restored.state) is FlowState


def test_snapshot_mutation_cannot_reach_the_flow() -> None:
    flow = requires_action()
    snapshot = flow_to_snapshot(flow)
    snapshot["next_action"]["use_stripe_sdk"]["type"] = "changed"
    snapshot["metadata"]["k"] = "changed"
    assert flow_to_snapshot(flow)["next_action"] == THREE_DS
    assert flow.metadata == {"k": "v"}


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s.pop("version"),
        lambda s: s.update(extra=1),
        lambda s: s.update(state="NOPE"),
        lambda s: s.update(error={"code": "x"}),
    ],
    ids=["missing-field", "unknown-field", "unknown-state", "bad-error"],
)
def test_damaged_snapshot_is_an_internal_error(damage: Callable[[dict[str, Any]], object]) -> None:
    snapshot = flow_to_snapshot(then(processing(), fail(False)))
    damage(snapshot)
    with pytest.raises(Internal, match="snapshot"):
        flow_from_snapshot(snapshot)


def test_challenge_then_failure_drops_next_action() -> None:
    flow = then(processing(), challenge, fail(True))
    assert (flow.state, flow.next_action) == (FlowState.FAILED, None)


def test_giving_up_after_a_recoverable_failure_drops_the_old_error() -> None:
    flow = then(processing(), fail(True), cancel)
    assert (flow.state, flow.error, flow.intent_id) == (FlowState.CANCELLED, None, "pi_1_3")


# What each event may set besides state, version, updated_at and the state-bound next_action and
# error: written out from the module docstring and DESIGN.md, not from the code.
_E = EventType
_MAY_SET: dict[EventType, set[str]] = {
    _E.FLOW_CREATED: {"amount", "currency", "pre_id", "metadata", "created_at"},
    _E.BOOKING_ATTACHED: {"booking_id"},
    _E.METHOD_SELECTED: {
        "payment_method",
        "attempts",
        "intent_id",
        "client_secret",
        "provider_status",
    },
    _E.INTENT_CREATED: {"intent_id", "client_secret", "provider_status"},
    _E.SUBMITTED: set(),
    _E.PROCESSING: {"provider_status"},
    _E.ACTION_REQUIRED: {"provider_status"},
    _E.PROVIDER_STATUS_CHANGED: {"provider_status"},
    _E.PAYMENT_SUCCEEDED: {"provider_status"},
    _E.PAYMENT_FAILED: {"provider_status"},
    _E.RETRIED: {"payment_method", "intent_id", "client_secret", "provider_status"},
    _E.CANCEL_REQUESTED: set(),  # cancel_requested: bound to the state, see _ALWAYS
    _E.CANCELLED: {"provider_status"},  # what the provider said the cancel did
    _E.EXPIRED: set(),
}
_ALWAYS = {"state", "version", "updated_at", "next_action", "error", "cancel_requested"}
_ACCEPTED = [
    (situation, event_type)
    for situation, make in SITUATIONS.items()
    for event_type in sorted(allowed_events(make()))
]


@pytest.mark.parametrize(
    ("situation", "event_type"), _ACCEPTED, ids=[f"{s}-{e}" for s, e in _ACCEPTED]
)
def test_an_event_sets_only_its_own_fields_and_the_new_flow_is_whole(
    situation: str, event_type: EventType
) -> None:
    # `apply` fills the new value's slots itself rather than through __init__: every field must
    # be set (reading an unset slot raises) and equal to what __init__ would hold.
    flow = SITUATIONS[situation]()
    after = apply(flow, some_event(event_type, flow))
    values = {f.name: getattr(after, f.name) for f in dataclasses.fields(Flow)}
    assert Flow(**values) == after
    untouched = set(values) - _MAY_SET[event_type] - _ALWAYS
    assert {name: values[name] for name in untouched} == {
        name: getattr(flow, name) for name in untouched
    }


def test_the_fields_an_event_can_set_are_the_flow_fields() -> None:
    # A misspelt name here would be silently skipped when the new flow is filled in.
    settable = {f.name for f in dataclasses.fields(Flow)} - {"flow_id"}
    assert set(_Changes.__annotations__) == settable
