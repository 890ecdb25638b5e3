"""The transition table, pair by pair: every (situation, event type) either lands where the contract
says, one version up, or is refused with the flow left exactly as it was."""

from __future__ import annotations

import itertools

import pytest

from actors import flow_core
from actors.flow_core import (
    EventType,
    Flow,
    FlowState,
    allowed_events,
    apply,
    flow_to_snapshot,
)
from runtime.errors import InvalidTransition
from tests.actors.flows import SITUATIONS, some_event

S = FlowState
E = EventType

# Written out from CONTRACT.md "Flow states" and the design brief, independently of the module's
# own TRANSITIONS table, so a slip in either shows up here.
EXPECTED: dict[str, dict[EventType, FlowState]] = {
    "INITIAL": {E.FLOW_CREATED: S.PRE_BOOKING},
    "PRE_BOOKING": {
        E.BOOKING_ATTACHED: S.PAYMENT_PENDING,
        E.CANCELLED: S.CANCELLED,
        E.EXPIRED: S.EXPIRED,
    },
    "PAYMENT_PENDING": {
        E.METHOD_SELECTED: S.PAYMENT_ACTIVE,
        E.CANCELLED: S.CANCELLED,
        E.EXPIRED: S.EXPIRED,
    },
    "PAYMENT_ACTIVE(no intent)": {
        E.METHOD_SELECTED: S.PAYMENT_ACTIVE,
        E.INTENT_CREATED: S.PAYMENT_ACTIVE,
        E.PAYMENT_FAILED: S.FAILED,  # e.g. the provider refused to create the intent
        E.CANCELLED: S.CANCELLED,
        E.EXPIRED: S.EXPIRED,
    },
    "PAYMENT_ACTIVE(intent)": {
        E.METHOD_SELECTED: S.PAYMENT_ACTIVE,
        E.INTENT_CREATED: S.PAYMENT_ACTIVE,
        E.SUBMITTED: S.PAYMENT_PROCESSING,
        E.PROCESSING: S.PAYMENT_PROCESSING,
        E.ACTION_REQUIRED: S.REQUIRES_ACTION,
        E.PROVIDER_STATUS_CHANGED: S.PAYMENT_ACTIVE,
        E.PAYMENT_FAILED: S.FAILED,
        E.CANCEL_REQUESTED: S.PAYMENT_ACTIVE,  # the intent could still be paid: ask first
        E.CANCELLED: S.CANCELLED,
        E.EXPIRED: S.EXPIRED,
    },
    # While a cancel is on its way the customer starts nothing new; the provider's news still
    # moves the flow (a payment that got through first completes it).
    "PAYMENT_ACTIVE(cancel requested)": {
        E.INTENT_CREATED: S.PAYMENT_ACTIVE,
        E.PROCESSING: S.PAYMENT_PROCESSING,
        E.ACTION_REQUIRED: S.REQUIRES_ACTION,
        E.PROVIDER_STATUS_CHANGED: S.PAYMENT_ACTIVE,
        E.PAYMENT_FAILED: S.FAILED,
        E.CANCELLED: S.CANCELLED,
        E.EXPIRED: S.EXPIRED,
    },
    "PAYMENT_PROCESSING": {
        E.ACTION_REQUIRED: S.REQUIRES_ACTION,
        E.PROVIDER_STATUS_CHANGED: S.PAYMENT_PROCESSING,
        E.PAYMENT_SUCCEEDED: S.COMPLETED,
        E.PAYMENT_FAILED: S.FAILED,
    },
    "REQUIRES_ACTION": {
        E.PROCESSING: S.PAYMENT_PROCESSING,
        E.PROVIDER_STATUS_CHANGED: S.REQUIRES_ACTION,
        E.PAYMENT_FAILED: S.FAILED,
        E.CANCEL_REQUESTED: S.REQUIRES_ACTION,
        E.CANCELLED: S.CANCELLED,
    },
    "REQUIRES_ACTION(cancel requested)": {
        E.PROCESSING: S.PAYMENT_PROCESSING,
        E.PROVIDER_STATUS_CHANGED: S.REQUIRES_ACTION,
        E.PAYMENT_FAILED: S.FAILED,
        E.CANCELLED: S.CANCELLED,
    },
    "COMPLETED": {},
    "FAILED(recoverable)": {
        E.RETRIED: S.PAYMENT_PENDING,
        E.PROCESSING: S.PAYMENT_PROCESSING,  # the customer paid the declined intent from outside
        E.CANCEL_REQUESTED: S.FAILED,  # the declined intent could still be paid with Stripe.js
        E.CANCELLED: S.CANCELLED,
        E.EXPIRED: S.EXPIRED,
    },
    "FAILED(terminal)": {},
    "FAILED(cancel requested)": {
        E.PROCESSING: S.PAYMENT_PROCESSING,  # paid before the cancel arrived
        E.CANCELLED: S.CANCELLED,
        E.EXPIRED: S.EXPIRED,
    },
    "CANCELLED": {},
    "EXPIRED": {},
}

TERMINAL = {"COMPLETED", "FAILED(terminal)", "CANCELLED", "EXPIRED"}
PAIRS = list(itertools.product(SITUATIONS, EventType))


def test_situations_cover_every_state() -> None:
    assert {SITUATIONS[name]().state for name in SITUATIONS} == set(FlowState)
    assert set(EXPECTED) == set(SITUATIONS)


@pytest.mark.parametrize(("situation", "event_type"), PAIRS, ids=[f"{s}-{e}" for s, e in PAIRS])
def test_every_state_event_pair(situation: str, event_type: EventType) -> None:
    flow = SITUATIONS[situation]()
    before = flow_to_snapshot(flow)
    event = some_event(event_type, flow)
    target = EXPECTED[situation].get(event_type)
    if target is None:
        with pytest.raises(InvalidTransition, match=rf"{flow.state}\b.*\b{event_type}\b"):
            apply(flow, event)
    else:
        after = apply(flow, event)
        assert (after.state, after.version, after.updated_at) == (
            target,
            flow.version + 1,
            event.at,
        )
    # apply never touches the flow it was given, refused or not
    assert flow_to_snapshot(flow) == before


@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_allowed_events_and_terminality_match_the_contract(situation: str) -> None:
    flow = SITUATIONS[situation]()
    assert allowed_events(flow) == set(EXPECTED[situation])
    assert flow.is_terminal is (situation in TERMINAL)


def test_refusal_explains_a_guard() -> None:
    with pytest.raises(InvalidTransition, match="not recoverable"):
        apply(SITUATIONS["FAILED(terminal)"](), some_event(E.RETRIED, Flow.initial("x")))
    no_intent = SITUATIONS["PAYMENT_ACTIVE(no intent)"]()
    with pytest.raises(InvalidTransition, match="no payment intent"):
        apply(no_intent, some_event(E.SUBMITTED, no_intent))
    asked = SITUATIONS["PAYMENT_ACTIVE(cancel requested)"]()
    with pytest.raises(InvalidTransition, match="a cancel is on its way"):
        apply(asked, some_event(E.SUBMITTED, asked))
    with pytest.raises(InvalidTransition, match="could still cancel"):
        apply(no_intent, some_event(E.CANCEL_REQUESTED, no_intent))


def test_refusal_carries_the_wire_code() -> None:
    with pytest.raises(InvalidTransition) as refused:
        apply(Flow.initial("x"), some_event(E.SUBMITTED, Flow.initial("x")))
    assert refused.value.code == "invalid_transition"


def test_terminal_states_constant_matches_the_contract() -> None:
    assert {S.COMPLETED, S.CANCELLED, S.EXPIRED} == flow_core.TERMINAL_STATES


def test_transitions_table_cannot_be_edited_at_run_time() -> None:
    with pytest.raises(TypeError):
        flow_core.TRANSITIONS[S.COMPLETED][E.RETRIED] = S.PAYMENT_PENDING  # type: ignore[index]
