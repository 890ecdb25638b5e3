"""The payment flow's states, event types and every allowed transition, as data.

One table, h11 `_state.py` style: `TRANSITIONS[state][event_type] -> next_state`. A pair that is
not in the table is refused before anything changes. A few edges additionally need a fact about
the flow that its state alone does not carry; `GUARDS` names those facts, again as data:

- FAILED's edges exist only while the failure is recoverable. A non-recoverable FAILED flow has
  no edge at all, which is what makes it terminal.
- In PAYMENT_ACTIVE, the events that talk about a payment intent (submit it, or the provider
  reporting on it) need one to exist. Changing the payment method clears the intent, so there is
  a window in PAYMENT_ACTIVE where no intent exists yet.
- A cancel of a flow whose intent the provider may still charge takes two steps: the request
  (`cancel_requested`, which needs such an intent and no request before it), then `cancelled`
  once the provider has answered. While the request is open the customer cannot start anything
  new (switch method, submit, retry); the provider's news still moves the flow, so a payment
  that got through first completes it.

`MODAL` and `STEP` are what the customer's screen shows; they derive from the state alone and
are never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from actors.provider import IntentStatus


class FlowState(StrEnum):
    INITIAL = "INITIAL"
    PRE_BOOKING = "PRE_BOOKING"
    PAYMENT_PENDING = "PAYMENT_PENDING"
    PAYMENT_ACTIVE = "PAYMENT_ACTIVE"
    PAYMENT_PROCESSING = "PAYMENT_PROCESSING"
    REQUIRES_ACTION = "REQUIRES_ACTION"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class EventType(StrEnum):
    """What happened to a flow; also the `kind` of its journal record and `history` entry."""

    FLOW_CREATED = "flow_created"
    BOOKING_ATTACHED = "booking_attached"
    METHOD_SELECTED = "method_selected"
    INTENT_CREATED = "intent_created"
    SUBMITTED = "submitted"
    PROCESSING = "processing"
    ACTION_REQUIRED = "action_required"
    PROVIDER_STATUS_CHANGED = "provider_status_changed"
    PAYMENT_SUCCEEDED = "payment_succeeded"
    PAYMENT_FAILED = "payment_failed"
    RETRIED = "retried"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Guard(StrEnum):
    """A fact about the flow, beyond its state, that an edge of the table requires."""

    RECOVERABLE_ERROR = "recoverable_error"  # flow.error says another attempt is allowed
    HAS_INTENT = "has_intent"  # a payment intent exists for the current attempt
    CANCELLABLE_INTENT = "cancellable_intent"  # ... and the provider still lets us cancel it
    NO_CANCEL_REQUESTED = "no_cancel_requested"  # no cancel of the intent is on its way


# Intent statuses the provider still lets us cancel: in any other, the money is on its way, or
# the intent is already over.
CANCELLABLE: frozenset[str] = frozenset(
    {
        IntentStatus.REQUIRES_PAYMENT_METHOD,
        IntentStatus.REQUIRES_CONFIRMATION,
        IntentStatus.REQUIRES_ACTION,
    }
)


_S = FlowState
_E = EventType


def _frozen(
    table: Mapping[FlowState, Mapping[EventType, FlowState]],
) -> Mapping[FlowState, Mapping[EventType, FlowState]]:
    return MappingProxyType({state: MappingProxyType(dict(row)) for state, row in table.items()})


TRANSITIONS: Mapping[FlowState, Mapping[EventType, FlowState]] = _frozen(
    {
        _S.INITIAL: {_E.FLOW_CREATED: _S.PRE_BOOKING},
        _S.PRE_BOOKING: {
            _E.BOOKING_ATTACHED: _S.PAYMENT_PENDING,
            _E.CANCELLED: _S.CANCELLED,
            _E.EXPIRED: _S.EXPIRED,
        },
        _S.PAYMENT_PENDING: {
            _E.METHOD_SELECTED: _S.PAYMENT_ACTIVE,
            _E.CANCELLED: _S.CANCELLED,
            _E.EXPIRED: _S.EXPIRED,
        },
        _S.PAYMENT_ACTIVE: {
            _E.METHOD_SELECTED: _S.PAYMENT_ACTIVE,  # the customer switches method before paying
            _E.INTENT_CREATED: _S.PAYMENT_ACTIVE,
            _E.SUBMITTED: _S.PAYMENT_PROCESSING,  # the daemon is about to confirm
            _E.PROCESSING: _S.PAYMENT_PROCESSING,  # the client confirmed with Stripe.js
            _E.ACTION_REQUIRED: _S.REQUIRES_ACTION,
            _E.PROVIDER_STATUS_CHANGED: _S.PAYMENT_ACTIVE,
            _E.PAYMENT_FAILED: _S.FAILED,
            _E.CANCEL_REQUESTED: _S.PAYMENT_ACTIVE,  # the provider answers, then `cancelled`
            _E.CANCELLED: _S.CANCELLED,
            _E.EXPIRED: _S.EXPIRED,
        },
        _S.PAYMENT_PROCESSING: {
            _E.ACTION_REQUIRED: _S.REQUIRES_ACTION,
            _E.PROVIDER_STATUS_CHANGED: _S.PAYMENT_PROCESSING,
            _E.PAYMENT_SUCCEEDED: _S.COMPLETED,
            _E.PAYMENT_FAILED: _S.FAILED,
        },
        _S.REQUIRES_ACTION: {
            _E.PROCESSING: _S.PAYMENT_PROCESSING,  # 3-D Secure passed
            _E.PROVIDER_STATUS_CHANGED: _S.REQUIRES_ACTION,
            _E.PAYMENT_FAILED: _S.FAILED,
            _E.CANCEL_REQUESTED: _S.REQUIRES_ACTION,  # the customer gives up during 3-D Secure
            _E.CANCELLED: _S.CANCELLED,
        },
        # Only while recoverable (GUARDS): a terminal failure has no way out.
        _S.FAILED: {
            _E.RETRIED: _S.PAYMENT_PENDING,
            # The customer paid the declined intent with another card through Stripe.js, as
            # Stripe suggests after a decline: the payment is followed to its end.
            _E.PROCESSING: _S.PAYMENT_PROCESSING,
            _E.CANCEL_REQUESTED: _S.FAILED,  # the declined intent may still be paid by Stripe.js
            _E.CANCELLED: _S.CANCELLED,
            _E.EXPIRED: _S.EXPIRED,
        },
        _S.COMPLETED: {},
        _S.CANCELLED: {},
        _S.EXPIRED: {},
    }
)

_G = Guard
_REQUEST_CANCEL = (_G.CANCELLABLE_INTENT, _G.NO_CANCEL_REQUESTED)

# Every guard of an edge must hold for it to exist.
GUARDS: Mapping[FlowState, Mapping[EventType, tuple[Guard, ...]]] = MappingProxyType(
    {
        _S.FAILED: MappingProxyType(
            {
                **dict.fromkeys(TRANSITIONS[_S.FAILED], (_G.RECOVERABLE_ERROR,)),
                _E.RETRIED: (_G.RECOVERABLE_ERROR, _G.NO_CANCEL_REQUESTED),
                _E.PROCESSING: (_G.RECOVERABLE_ERROR, _G.HAS_INTENT),
                _E.CANCEL_REQUESTED: (_G.RECOVERABLE_ERROR, *_REQUEST_CANCEL),
            }
        ),
        _S.PAYMENT_ACTIVE: MappingProxyType(
            {
                _E.METHOD_SELECTED: (_G.NO_CANCEL_REQUESTED,),
                _E.SUBMITTED: (_G.HAS_INTENT, _G.NO_CANCEL_REQUESTED),
                _E.PROCESSING: (_G.HAS_INTENT,),
                _E.ACTION_REQUIRED: (_G.HAS_INTENT,),
                _E.PROVIDER_STATUS_CHANGED: (_G.HAS_INTENT,),
                _E.CANCEL_REQUESTED: _REQUEST_CANCEL,
            }
        ),
        _S.REQUIRES_ACTION: MappingProxyType({_E.CANCEL_REQUESTED: _REQUEST_CANCEL}),
    }
)

# The states a cancel may be requested in; leaving them ends the request (`Flow.cancel_requested`).
CANCEL_REQUEST_STATES: frozenset[FlowState] = frozenset(
    state for state, row in TRANSITIONS.items() if EventType.CANCEL_REQUESTED in row
)

# States with no edge at all. FAILED is terminal too when its error is not recoverable; that
# depends on the flow, so `Flow.is_terminal` answers for a concrete flow.
TERMINAL_STATES: frozenset[FlowState] = frozenset(s for s, row in TRANSITIONS.items() if not row)


class Modal(StrEnum):
    """Which dialog the customer's screen shows."""

    BOOKING = "BOOKING"
    PAYMENT_PENDING = "PAYMENT_PENDING"
    PAYMENT_ACTIVE = "PAYMENT_ACTIVE"
    PAYMENT_COMPLETE = "PAYMENT_COMPLETE"
    PAYMENT_FAILED = "PAYMENT_FAILED"


class Step(StrEnum):
    """Which step of the payment dialog is current."""

    SESSION = "SESSION"
    METHOD = "METHOD"
    REVIEW = "REVIEW"
    PROCESSING = "PROCESSING"
    CONFIRMATION = "CONFIRMATION"


# The screen follows the state; a recoverable failure shows PAYMENT_FAILED with its `error`
# (and `recoverable`), from which the client offers `retry`.
MODAL: Mapping[FlowState, Modal] = MappingProxyType(
    {
        _S.INITIAL: Modal.BOOKING,
        _S.PRE_BOOKING: Modal.BOOKING,
        _S.PAYMENT_PENDING: Modal.PAYMENT_PENDING,
        _S.PAYMENT_ACTIVE: Modal.PAYMENT_ACTIVE,
        _S.PAYMENT_PROCESSING: Modal.PAYMENT_ACTIVE,
        _S.REQUIRES_ACTION: Modal.PAYMENT_ACTIVE,
        _S.COMPLETED: Modal.PAYMENT_COMPLETE,
        _S.FAILED: Modal.PAYMENT_FAILED,
        _S.CANCELLED: Modal.PAYMENT_FAILED,
        _S.EXPIRED: Modal.PAYMENT_FAILED,
    }
)

STEP: Mapping[FlowState, Step] = MappingProxyType(
    {
        _S.INITIAL: Step.SESSION,
        _S.PRE_BOOKING: Step.SESSION,
        _S.PAYMENT_PENDING: Step.METHOD,
        _S.PAYMENT_ACTIVE: Step.REVIEW,
        _S.PAYMENT_PROCESSING: Step.PROCESSING,
        _S.REQUIRES_ACTION: Step.PROCESSING,
        _S.COMPLETED: Step.CONFIRMATION,
        _S.FAILED: Step.CONFIRMATION,
        _S.CANCELLED: Step.CONFIRMATION,
        _S.EXPIRED: Step.CONFIRMATION,
    }
)
