"""Provider statuses become forward events only: never backwards, never out of a terminal state,
never twice for the same news, always through PAYMENT_PROCESSING to COMPLETED."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from actors.flow_core import (
    PAYMENT_FAILURE_POLICY,
    Cancelled,
    EventType,
    Flow,
    FlowEvent,
    FlowState,
    PaymentFailed,
    RecoveryPolicy,
    apply,
    events_for_provider_status,
    replay,
)
from actors.provider import PaymentError
from tests.actors.flows import (
    SITUATIONS,
    STATUSES,
    THREE_DS,
    at,
    fail,
    processing,
    request_cancel,
    requires_action,
    retry,
    select,
    submit,
    then,
)
from tests.actors.flows import intent as intent_created

S = FlowState
E = EventType
DECLINE = PaymentError(code="card_declined", message="Your card was declined.")
RANK = {
    S.INITIAL: 0,
    S.PRE_BOOKING: 1,
    S.PAYMENT_PENDING: 2,
    S.PAYMENT_ACTIVE: 3,
    S.PAYMENT_PROCESSING: 4,
    S.REQUIRES_ACTION: 4,  # 3-D Secure goes back and forth with PROCESSING
    S.COMPLETED: 5,
    S.FAILED: 5,
    S.CANCELLED: 5,
    S.EXPIRED: 5,
}
SUCCESS = [E.PROCESSING, E.PAYMENT_SUCCEEDED]

# (situation, status, with an error) -> event types; anything not listed must give [].
EXPECTED: dict[tuple[str, str, bool], list[EventType]] = {
    ("PAYMENT_ACTIVE(intent)", "requires_payment_method", False): [E.PROVIDER_STATUS_CHANGED],
    ("PAYMENT_ACTIVE(intent)", "requires_payment_method", True): [E.PAYMENT_FAILED],
    ("PAYMENT_ACTIVE(intent)", "requires_action", False): [E.ACTION_REQUIRED],
    ("PAYMENT_ACTIVE(intent)", "processing", False): [E.PROCESSING],
    ("PAYMENT_ACTIVE(intent)", "requires_capture", False): SUCCESS,
    ("PAYMENT_ACTIVE(intent)", "succeeded", False): SUCCESS,
    ("PAYMENT_ACTIVE(intent)", "canceled", False): [E.PAYMENT_FAILED],
    ("PAYMENT_PROCESSING", "requires_payment_method", False): [E.PAYMENT_FAILED],
    ("PAYMENT_PROCESSING", "requires_payment_method", True): [E.PAYMENT_FAILED],
    ("PAYMENT_PROCESSING", "requires_action", False): [E.ACTION_REQUIRED],
    ("PAYMENT_PROCESSING", "processing", False): [E.PROVIDER_STATUS_CHANGED],
    ("PAYMENT_PROCESSING", "requires_capture", False): [E.PAYMENT_SUCCEEDED],
    ("PAYMENT_PROCESSING", "succeeded", False): [E.PAYMENT_SUCCEEDED],
    ("PAYMENT_PROCESSING", "canceled", False): [E.PAYMENT_FAILED],
    ("REQUIRES_ACTION", "requires_payment_method", False): [E.PAYMENT_FAILED],
    ("REQUIRES_ACTION", "requires_payment_method", True): [E.PAYMENT_FAILED],
    ("REQUIRES_ACTION", "processing", False): [E.PROCESSING],
    ("REQUIRES_ACTION", "requires_capture", False): SUCCESS,
    ("REQUIRES_ACTION", "succeeded", False): SUCCESS,
    ("REQUIRES_ACTION", "canceled", False): [E.PAYMENT_FAILED],
    # A declined intent paid from outside (Stripe.js, another card) is followed to its end.
    ("FAILED(recoverable)", "processing", False): [E.PROCESSING],
    ("FAILED(recoverable)", "requires_capture", False): SUCCESS,
    ("FAILED(recoverable)", "succeeded", False): SUCCESS,
}


def _while_cancelling(situation: str, plain: str) -> dict[tuple[str, str, bool], list[EventType]]:
    """While a cancel the customer asked for is on its way, `canceled` is that cancel's outcome;
    the rest means what it means without the request (a payment that got through completes)."""
    rows = {
        (situation, status, with_error): kinds
        for (where, status, with_error), kinds in EXPECTED.items()
        if where == plain
    }
    rows[situation, "canceled", False] = [E.CANCELLED]
    return rows


EXPECTED |= _while_cancelling("PAYMENT_ACTIVE(cancel requested)", "PAYMENT_ACTIVE(intent)")
EXPECTED |= _while_cancelling("REQUIRES_ACTION(cancel requested)", "REQUIRES_ACTION")
EXPECTED |= _while_cancelling("FAILED(cancel requested)", "FAILED(recoverable)")
CASES = list(itertools.product(SITUATIONS, [*STATUSES, "mystery_status"], [False, True]))


def expected(situation: str, status: str, with_error: bool) -> list[EventType]:
    # An error changes the verdict for requires_payment_method only; elsewhere it rides along.
    if status != "requires_payment_method":
        with_error = False
    return EXPECTED.get((situation, status, with_error), [])


def report(
    flow: Flow,
    status: str,
    *,
    with_error: bool = False,
    intent_id: str | None = None,
    policy: RecoveryPolicy = PAYMENT_FAILURE_POLICY,
) -> list[FlowEvent]:
    return events_for_provider_status(
        flow,
        status,
        at=at(flow),
        next_action=THREE_DS,
        error=DECLINE if with_error else None,
        intent_id=intent_id,
        policy=policy,
    )


@pytest.mark.parametrize(("situation", "status", "with_error"), CASES, ids=str)
def test_status_maps_to_the_expected_forward_events(
    situation: str, status: str, with_error: bool
) -> None:
    flow = SITUATIONS[situation]()
    events = report(flow, status, with_error=with_error)
    assert [e.event_type for e in events] == expected(situation, status, with_error)
    visited = [flow]
    for event in events:  # the events apply in order, and none moves the flow backwards
        visited.append(apply(visited[-1], event))
        # (a recoverable failure is not an end: a payment made from outside leaves it)
        if not (visited[-2].state is S.FAILED and not visited[-2].is_terminal):
            assert RANK[visited[-1].state] >= RANK[visited[-2].state]
    if flow.is_terminal:
        assert events == []
    if events and visited[-1].state is S.COMPLETED:
        assert S.PAYMENT_PROCESSING in {f.state for f in visited}


@pytest.mark.parametrize(("situation", "status", "with_error"), CASES, ids=str)
def test_the_same_status_twice_is_news_only_once(
    situation: str, status: str, with_error: bool
) -> None:
    flow = SITUATIONS[situation]()
    after = replay(report(flow, status, with_error=with_error), start=flow)
    assert report(after, status) == []


def test_declined_first_attempt_is_recoverable_second_is_not() -> None:
    first = replay(
        report(processing(), "requires_payment_method", with_error=True), start=processing()
    )
    assert first.error is not None
    assert (first.error.code, first.error.recoverable) == ("card_declined", True)
    second_try = then(first, retry, select, intent_created, submit)
    second = replay(
        report(second_try, "requires_payment_method", with_error=True), start=second_try
    )
    assert second.error is not None
    assert (second.attempts, second.error.recoverable, second.is_terminal) == (2, False, True)


def test_configured_retry_limit_is_honoured() -> None:
    flow = then(processing(), fail(True), retry, select, intent_created, submit)
    generous = dataclasses.replace(PAYMENT_FAILURE_POLICY, retries=2)
    [event] = report(flow, "requires_payment_method", with_error=True, policy=generous)
    assert isinstance(event, PaymentFailed)
    assert event.recoverable is True
    assert event.provider_status == "requires_payment_method"


def test_failure_without_provider_error_gets_a_generic_reason() -> None:
    [canceled] = report(processing(), "canceled")
    [declined] = report(processing(), "requires_payment_method")
    assert isinstance(canceled, PaymentFailed)
    assert isinstance(declined, PaymentFailed)
    assert (canceled.code, declined.code) == ("intent_canceled", "payment_failed")


def test_canceled_ends_a_flow_whose_cancel_was_requested_and_fails_any_other() -> None:
    asked = then(requires_action(), request_cancel)
    [cancelled] = report(asked, "canceled")
    assert isinstance(cancelled, Cancelled)
    assert apply(asked, cancelled).provider_status == "canceled"
    [failed] = report(requires_action(), "canceled")  # canceled by someone else: no payment
    assert isinstance(failed, PaymentFailed)


def test_status_of_another_intent_is_ignored() -> None:
    flow = processing()
    assert report(flow, "succeeded", intent_id="pi_from_an_earlier_attempt") == []
    assert [e.event_type for e in report(flow, "succeeded", intent_id=flow.intent_id)] == [
        E.PAYMENT_SUCCEEDED
    ]


def test_action_required_carries_next_action() -> None:
    [event] = report(processing(), "requires_action")
    after = apply(processing(), event)
    assert (after.state, after.next_action) == (S.REQUIRES_ACTION, THREE_DS)
