"""Flows in every situation the transition table tells apart, and events to throw at them.

Shared by the flow core's tests. A situation is a state plus the facts its guards look at:
PAYMENT_ACTIVE with and without an intent, FAILED recoverable and not, and the states a cancel
may be requested in with such a request open.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import strategies as st

from actors.flow_core import (
    EVENT_CLASSES,
    ActionRequired,
    BookingAttached,
    Cancelled,
    CancelRequested,
    EventType,
    Expired,
    Flow,
    FlowCreated,
    FlowEvent,
    IntentCreated,
    MethodSelected,
    PaymentFailed,
    PaymentSucceeded,
    Processing,
    ProviderStatusChanged,
    Retried,
    Submitted,
    apply,
    attempt_for_selection,
)

T0 = 1_700_000_000.0
FLOW_ID = "flow-1"
STATUSES = (
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
    "processing",
    "requires_capture",
    "succeeded",
    "canceled",
)
THREE_DS = {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}}


def created(flow_id: str = FLOW_ID) -> Flow:
    event = FlowCreated(
        at=T0, flow_id=flow_id, amount=4200, currency="eur", pre_id="pre-1", metadata={"k": "v"}
    )
    return apply(Flow.initial(flow_id), event)


def then(flow: Flow, *makers: Callable[[Flow], FlowEvent]) -> Flow:
    """`flow` after the events the makers build, each from the flow as it is by then."""
    for make in makers:
        flow = apply(flow, make(flow))
    return flow


def at(flow: Flow) -> float:
    return flow.updated_at + 1.0


def attach(flow: Flow) -> FlowEvent:
    return BookingAttached(at=at(flow), booking_id="bk-1")


def select(flow: Flow) -> FlowEvent:
    return MethodSelected(
        at=at(flow), payment_method="pm_card_visa", attempt=attempt_for_selection(flow)
    )


def intent(flow: Flow) -> FlowEvent:
    return IntentCreated(
        at=at(flow),
        intent_id=f"pi_{flow.attempts}_{flow.version}",
        client_secret=f"pi_{flow.version}_secret_x",
        provider_status="requires_confirmation",
    )


def submit(flow: Flow) -> FlowEvent:
    return Submitted(at=at(flow))


def challenge(flow: Flow) -> FlowEvent:
    return ActionRequired(at=at(flow), next_action=THREE_DS, provider_status="requires_action")


def succeed(flow: Flow) -> FlowEvent:
    return PaymentSucceeded(at=at(flow), provider_status="succeeded")


def fail(recoverable: bool) -> Callable[[Flow], FlowEvent]:
    def make(flow: Flow) -> FlowEvent:
        return PaymentFailed(
            at=at(flow),
            code="card_declined",
            message="Your card was declined.",
            recoverable=recoverable,
            provider_status="requires_payment_method",
        )

    return make


def retry(flow: Flow) -> FlowEvent:
    return Retried(at=at(flow))


def cancel(flow: Flow) -> FlowEvent:
    return Cancelled(at=at(flow))


def request_cancel(flow: Flow) -> FlowEvent:
    return CancelRequested(at=at(flow))


def expire(flow: Flow) -> FlowEvent:
    return Expired(at=at(flow))


def pending() -> Flow:
    return then(created(), attach)


def active(*, with_intent: bool) -> Flow:
    return then(pending(), select, intent) if with_intent else then(pending(), select)


def processing() -> Flow:
    return then(active(with_intent=True), submit)


def requires_action() -> Flow:
    return then(processing(), challenge)


def failed(*, recoverable: bool) -> Flow:
    return then(processing(), fail(recoverable))


SITUATIONS: Mapping[str, Callable[[], Flow]] = {
    "INITIAL": lambda: Flow.initial(FLOW_ID),
    "PRE_BOOKING": created,
    "PAYMENT_PENDING": pending,
    "PAYMENT_ACTIVE(no intent)": lambda: active(with_intent=False),
    "PAYMENT_ACTIVE(intent)": lambda: active(with_intent=True),
    "PAYMENT_PROCESSING": processing,
    "REQUIRES_ACTION": requires_action,
    "PAYMENT_ACTIVE(cancel requested)": lambda: then(active(with_intent=True), request_cancel),
    "REQUIRES_ACTION(cancel requested)": lambda: then(requires_action(), request_cancel),
    "COMPLETED": lambda: then(processing(), succeed),
    "FAILED(recoverable)": lambda: failed(recoverable=True),
    "FAILED(terminal)": lambda: failed(recoverable=False),
    "FAILED(cancel requested)": lambda: then(failed(recoverable=True), request_cancel),
    "CANCELLED": lambda: then(pending(), cancel),
    "EXPIRED": lambda: then(created(), expire),
}


def some_event(event_type: EventType, flow: Flow) -> FlowEvent:
    """A well-formed event of `event_type` that would fit `flow` if the table allowed it."""
    later = at(flow)
    makers: Mapping[EventType, Callable[[], FlowEvent]] = {
        EventType.FLOW_CREATED: lambda: FlowCreated(
            at=later, flow_id=flow.flow_id, amount=100, currency="usd"
        ),
        EventType.BOOKING_ATTACHED: lambda: attach(flow),
        EventType.METHOD_SELECTED: lambda: MethodSelected(
            at=later, payment_method="pm_card_amex", attempt=max(1, attempt_for_selection(flow))
        ),
        EventType.INTENT_CREATED: lambda: intent(flow),
        EventType.SUBMITTED: lambda: submit(flow),
        EventType.PROCESSING: lambda: Processing(at=later, provider_status="processing"),
        EventType.ACTION_REQUIRED: lambda: challenge(flow),
        EventType.PROVIDER_STATUS_CHANGED: lambda: ProviderStatusChanged(
            at=later, provider_status="requires_payment_method"
        ),
        EventType.PAYMENT_SUCCEEDED: lambda: succeed(flow),
        EventType.PAYMENT_FAILED: lambda: fail(True)(flow),
        EventType.RETRIED: lambda: retry(flow),
        EventType.CANCEL_REQUESTED: lambda: request_cancel(flow),
        EventType.CANCELLED: lambda: cancel(flow),
        EventType.EXPIRED: lambda: expire(flow),
    }
    return makers[event_type]()


# --- Hypothesis strategies -----------------------------------------------------------------------

_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12)
_words = st.text(max_size=20)
_json_scalars = st.none() | st.booleans() | st.integers(-(2**31), 2**31) | _words
_json_maps: st.SearchStrategy[dict[str, Any]] = st.recursive(
    st.dictionaries(_words, _json_scalars, max_size=3),
    lambda children: st.dictionaries(_words, _json_scalars | children, max_size=3),
    max_leaves=8,
)
_statuses = st.sampled_from(STATUSES)


_no_fields: st.SearchStrategy[dict[str, Any]] = st.just({})

# Everything about an event that does not depend on the flow it is offered to, per event type.
EVENT_FIELDS: Mapping[EventType, st.SearchStrategy[dict[str, Any]]] = {
    EventType.FLOW_CREATED: st.fixed_dictionaries(
        {
            "amount": st.integers(1, 10**9),
            "currency": st.sampled_from(["eur", "usd", "sek", "jpy"]),
            "pre_id": st.none() | _ids,
            "metadata": st.dictionaries(_words, _words, max_size=3),
        }
    ),
    EventType.BOOKING_ATTACHED: st.fixed_dictionaries({"booking_id": _ids}),
    EventType.METHOD_SELECTED: st.fixed_dictionaries({"payment_method": _ids}),
    EventType.INTENT_CREATED: st.fixed_dictionaries(
        {
            "intent_id": _ids.map(lambda s: f"pi_{s}"),
            "client_secret": st.none() | _ids,
            "provider_status": _statuses,
        }
    ),
    EventType.SUBMITTED: _no_fields,
    EventType.PROCESSING: st.fixed_dictionaries({"provider_status": _statuses}),
    EventType.ACTION_REQUIRED: st.fixed_dictionaries(
        {"next_action": _json_maps, "provider_status": _statuses}
    ),
    EventType.PROVIDER_STATUS_CHANGED: st.fixed_dictionaries({"provider_status": _statuses}),
    EventType.PAYMENT_SUCCEEDED: st.fixed_dictionaries({"provider_status": _statuses}),
    EventType.PAYMENT_FAILED: st.fixed_dictionaries(
        {
            "code": _ids,
            "message": _words,
            "recoverable": st.booleans(),
            "provider_status": st.none() | _statuses,
        }
    ),
    EventType.RETRIED: _no_fields,
    EventType.CANCEL_REQUESTED: _no_fields,
    EventType.CANCELLED: st.fixed_dictionaries({"provider_status": st.none() | _statuses}),
    EventType.EXPIRED: _no_fields,
}


def event_strategy(event_type: EventType, flow: Flow, when: float) -> st.SearchStrategy[FlowEvent]:
    """Any well-formed event of `event_type` for `flow`, at time `when`."""
    # The two fields that must agree with the flow are fixed, so only the table decides.
    fitted: dict[EventType, dict[str, Any]] = {
        EventType.FLOW_CREATED: {"flow_id": flow.flow_id},
        EventType.METHOD_SELECTED: {"attempt": max(1, attempt_for_selection(flow))},
    }
    cls = EVENT_CLASSES[event_type]
    return EVENT_FIELDS[event_type].map(
        lambda fields: cls(at=when, **fields, **fitted.get(event_type, {}))
    )
