"""Every provider (Stripe PaymentIntent) status mapped to flow events, in one place.

Given a flow and a status the provider reported for its current intent, which events move the
flow forward? The answer is one table lookup, `PROVIDER_STATUS_EVENTS[state][seen]`, where `seen`
is the status string, except that `requires_payment_method` reported together with an error is
told apart as `declined`: on a fresh intent that status means "nothing tried yet", after a
confirm it means the attempt failed, and only the error says which.

What the table leaves out is old or irrelevant news and yields no events:
- flows without a current intent (before `intent_created`, after `retry`) and terminal flows;
- a status equal to the one the flow already has (polls, webhooks and feeds repeat themselves),
  except a decline: `requires_payment_method` with an error is a verdict even when the intent
  was already in that status;
- statuses that would move the flow backwards (`requires_confirmation` once the flow was
  submitted or reached 3-D Secure). Ordering reports in time is the tracker's job: a late
  `requires_action` arriving after 3-D Secure passed looks like a new challenge here;
- status strings the table does not know.

While a cancel the customer asked for is on its way (`Flow.cancel_requested`), `canceled` is
that cancel's outcome and ends the flow CANCELLED (`CANCEL_REQUESTED_EVENTS` overrides those
rows); any other status means what it always means, so a payment that got through first
completes the flow and the cancel's later refusal changes nothing.

Success seen before PAYMENT_PROCESSING yields `processing` first, so a flow always reaches
COMPLETED through PAYMENT_PROCESSING. `requires_capture` counts as success: the funds are held
for the booking and capturing them is the merchant's later step, not part of this flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.flow_events import (
    ActionRequired,
    Cancelled,
    FlowEvent,
    PaymentFailed,
    PaymentSucceeded,
    Processing,
    ProviderStatusChanged,
)
from actors.flow_model import Flow
from actors.flow_states import CANCEL_REQUEST_STATES, EventType, FlowState
from actors.provider import IntentStatus, PaymentError
from actors.recovery import PAYMENT_FAILURE_POLICY, RecoveryPolicy, payment_failure_recoverable

DECLINED = "declined"  # requires_payment_method reported with an error: the attempt failed

_I = IntentStatus
_E = EventType
_FAIL = (_E.PAYMENT_FAILED,)
_SUCCEED_FROM_OUTSIDE = (_E.PROCESSING, _E.PAYMENT_SUCCEEDED)  # through PAYMENT_PROCESSING

PROVIDER_STATUS_EVENTS: Mapping[FlowState, Mapping[str, tuple[EventType, ...]]] = {
    FlowState.PAYMENT_ACTIVE: {
        _I.REQUIRES_PAYMENT_METHOD: (_E.PROVIDER_STATUS_CHANGED,),
        DECLINED: _FAIL,  # the client confirmed with Stripe.js and was declined
        _I.REQUIRES_CONFIRMATION: (_E.PROVIDER_STATUS_CHANGED,),
        _I.REQUIRES_ACTION: (_E.ACTION_REQUIRED,),
        _I.PROCESSING: (_E.PROCESSING,),
        _I.REQUIRES_CAPTURE: _SUCCEED_FROM_OUTSIDE,
        _I.SUCCEEDED: _SUCCEED_FROM_OUTSIDE,
        _I.CANCELED: _FAIL,  # canceled at the provider, not by us (see below)
    },
    FlowState.PAYMENT_PROCESSING: {
        _I.REQUIRES_PAYMENT_METHOD: _FAIL,  # after a confirm this only ever means "failed"
        DECLINED: _FAIL,
        _I.REQUIRES_ACTION: (_E.ACTION_REQUIRED,),
        _I.PROCESSING: (_E.PROVIDER_STATUS_CHANGED,),
        _I.REQUIRES_CAPTURE: (_E.PAYMENT_SUCCEEDED,),
        _I.SUCCEEDED: (_E.PAYMENT_SUCCEEDED,),
        _I.CANCELED: _FAIL,
    },
    # A recoverable failure's intent is still watched: the customer may pay it from outside.
    FlowState.FAILED: {
        _I.PROCESSING: (_E.PROCESSING,),
        _I.REQUIRES_CAPTURE: _SUCCEED_FROM_OUTSIDE,
        _I.SUCCEEDED: _SUCCEED_FROM_OUTSIDE,
    },
    FlowState.REQUIRES_ACTION: {
        _I.REQUIRES_PAYMENT_METHOD: _FAIL,  # 3-D Secure failed
        DECLINED: _FAIL,
        _I.PROCESSING: (_E.PROCESSING,),
        _I.REQUIRES_CAPTURE: _SUCCEED_FROM_OUTSIDE,
        _I.SUCCEEDED: _SUCCEED_FROM_OUTSIDE,
        _I.CANCELED: _FAIL,
    },
}

# The rows that differ while a cancel the customer asked for is on its way.
CANCEL_REQUESTED_EVENTS: Mapping[FlowState, Mapping[str, tuple[EventType, ...]]] = {
    state: {_I.CANCELED: (_E.CANCELLED,)} for state in CANCEL_REQUEST_STATES
}

_NO_NEWS: Mapping[str, tuple[EventType, ...]] = {}  # a state the provider's news cannot move
# Both tables merged once per state, for flows with a cancel on its way.
_WHILE_CANCELLING: Mapping[FlowState, Mapping[str, tuple[EventType, ...]]] = {
    state: {**PROVIDER_STATUS_EVENTS.get(state, _NO_NEWS), **CANCEL_REQUESTED_EVENTS.get(state, {})}
    for state in FlowState
}

# Our words when the provider gave a failing status but no error to quote.
_FALLBACK_ERRORS: Mapping[str, tuple[str, str]] = {
    _I.CANCELED: ("intent_canceled", "the payment intent was canceled at the provider"),
    _I.REQUIRES_PAYMENT_METHOD: ("payment_failed", "the provider did not accept the payment"),
}


def events_for_provider_status(
    flow: Flow,
    status: str,
    *,
    at: float,
    next_action: Mapping[str, Any] | None = None,
    error: PaymentError | None = None,
    intent_id: str | None = None,
    policy: RecoveryPolicy = PAYMENT_FAILURE_POLICY,
) -> list[FlowEvent]:
    """The events, in order, that `status` (reported for the flow's current intent) implies.

    `intent_id`, when given, is the intent the status is about; a status of any other intent
    (an earlier attempt's) is ignored. `policy` decides whether a failure is recoverable, from
    `flow.attempts`. The result always applies cleanly to `flow` in order; [] means "no news".
    """
    if flow.intent_id is None or intent_id not in (None, flow.intent_id) or flow.is_terminal:
        return []
    seen = DECLINED if status == _I.REQUIRES_PAYMENT_METHOD and error is not None else status
    if seen == flow.provider_status:  # a repeat; `declined` never is, it is a new verdict
        return []
    kinds = _row(flow).get(seen, ())
    return [
        _event(kind, flow, status, at=at, next_action=next_action, error=error, policy=policy)
        for kind in kinds
    ]


def _row(flow: Flow) -> Mapping[str, tuple[EventType, ...]]:
    if flow.cancel_requested and not flow.is_terminal:
        return _WHILE_CANCELLING[flow.state]
    return PROVIDER_STATUS_EVENTS.get(flow.state, _NO_NEWS)


def _event(
    kind: EventType,
    flow: Flow,
    status: str,
    *,
    at: float,
    next_action: Mapping[str, Any] | None,
    error: PaymentError | None,
    policy: RecoveryPolicy,
) -> FlowEvent:
    if kind is _E.ACTION_REQUIRED:
        return ActionRequired(at=at, next_action=next_action or {}, provider_status=status)
    if kind is _E.PAYMENT_FAILED:
        return _failure(flow, status, at=at, error=error, policy=policy)
    return _STATUS_ONLY[kind](at=at, provider_status=status)


# The events that carry nothing but the provider's status.
_StatusOnly = Processing | ProviderStatusChanged | PaymentSucceeded | Cancelled
_STATUS_ONLY: Mapping[EventType, type[_StatusOnly]] = {
    _E.PROCESSING: Processing,
    _E.PROVIDER_STATUS_CHANGED: ProviderStatusChanged,
    _E.PAYMENT_SUCCEEDED: PaymentSucceeded,
    _E.CANCELLED: Cancelled,
}


def _failure(
    flow: Flow, status: str, *, at: float, error: PaymentError | None, policy: RecoveryPolicy
) -> PaymentFailed:
    code, message = (
        (error.code, error.message)
        if error is not None
        else _FALLBACK_ERRORS.get(status, _FALLBACK_ERRORS[_I.REQUIRES_PAYMENT_METHOD])
    )
    recoverable = payment_failure_recoverable(flow.attempts, policy)
    return PaymentFailed(
        at=at, code=code, message=message, recoverable=recoverable, provider_status=status
    )
