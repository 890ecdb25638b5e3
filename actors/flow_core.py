"""The pure core of a payment flow: states, events, transitions, views, journal codec, recovery.

No I/O and no pykka, websockets, stripe, msgpack or structlog (tests/actors/test_purity.py
checks). The flow actor owns one `Flow` value and changes it only through `apply`:

    event = MethodSelected(at=now, payment_method="pm_card_visa",
                           attempt=attempt_for_selection(flow))
    new_flow = apply(flow, event)            # InvalidTransition if not allowed; flow unchanged
    kind, payload, at = event_to_record(event)   # persist at new_flow.version first ...
    ...                                          # ... then act: status_view(new_flow), effects

The pieces live in small modules, all re-exported here:
- `actors.flow_states`: FlowState, EventType, the TRANSITIONS and GUARDS tables, MODAL/STEP
- `actors.flow_events`: one dataclass per event, `event_to_record` / `event_from_record`
- `actors.flow_model`: Flow, apply, replay, snapshots
- `actors.flow_view`: `status_view`, `modal`, `step`
- `actors.flow_provider_map`: provider status -> events (`events_for_provider_status`)
- `actors.recovery`: the recovery policy table, retry decisions, backoff delays
"""

from __future__ import annotations

from actors.flow_events import (
    EVENT_CLASSES,
    ActionRequired,
    BookingAttached,
    Cancelled,
    CancelRequested,
    Expired,
    FlowCreated,
    FlowEvent,
    IntentCreated,
    MethodSelected,
    PaymentFailed,
    PaymentSucceeded,
    Processing,
    ProviderStatusChanged,
    Record,
    Retried,
    Submitted,
    event_from_record,
    event_to_record,
)
from actors.flow_model import (
    Flow,
    FlowError,
    allowed_events,
    apply,
    attempt_for_selection,
    flow_from_snapshot,
    flow_to_snapshot,
    next_state,
    replay,
    replay_records,
)
from actors.flow_provider_map import DECLINED, PROVIDER_STATUS_EVENTS, events_for_provider_status
from actors.flow_states import (
    CANCEL_REQUEST_STATES,
    CANCELLABLE,
    GUARDS,
    MODAL,
    STEP,
    TERMINAL_STATES,
    TRANSITIONS,
    EventType,
    FlowState,
    Guard,
    Modal,
    Step,
)
from actors.flow_view import STATUS_KEYS, modal, status_view, step
from actors.recovery import (
    DEFAULT_POLICIES,
    PAYMENT_FAILURE_POLICY,
    Backoff,
    Failure,
    Recovery,
    RecoveryPolicy,
    delay,
    may_retry,
    payment_failure_recoverable,
)

__all__ = [
    "CANCELLABLE",
    "CANCEL_REQUEST_STATES",
    "DECLINED",
    "DEFAULT_POLICIES",
    "EVENT_CLASSES",
    "GUARDS",
    "MODAL",
    "PAYMENT_FAILURE_POLICY",
    "PROVIDER_STATUS_EVENTS",
    "STATUS_KEYS",
    "STEP",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "ActionRequired",
    "Backoff",
    "BookingAttached",
    "CancelRequested",
    "Cancelled",
    "EventType",
    "Expired",
    "Failure",
    "Flow",
    "FlowCreated",
    "FlowError",
    "FlowEvent",
    "FlowState",
    "Guard",
    "IntentCreated",
    "MethodSelected",
    "Modal",
    "PaymentFailed",
    "PaymentSucceeded",
    "Processing",
    "ProviderStatusChanged",
    "Record",
    "Recovery",
    "RecoveryPolicy",
    "Retried",
    "Step",
    "Submitted",
    "allowed_events",
    "apply",
    "attempt_for_selection",
    "delay",
    "event_from_record",
    "event_to_record",
    "events_for_provider_status",
    "flow_from_snapshot",
    "flow_to_snapshot",
    "may_retry",
    "modal",
    "next_state",
    "payment_failure_recoverable",
    "replay",
    "replay_records",
    "status_view",
    "step",
]
