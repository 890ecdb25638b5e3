"""A payment flow as an immutable value, and the one function that moves it: `apply`.

`apply(flow, event)` looks the pair up in `TRANSITIONS` (plus `GUARDS`), refuses with
`InvalidTransition` before anything changes, and otherwise returns a new `Flow` at version + 1.
Replaying a flow's journal is `apply` folded over its events, from `Flow.initial(flow_id)` or
from a snapshot; there is no other way to change a flow, so live and replayed flows agree.

`attempts` counts payment attempts. An attempt starts when a payment method is selected in
PAYMENT_PENDING (the first selection, or the first one after a `retry`), and each attempt pays
through payment intents of its own. Switching the method in PAYMENT_ACTIVE before paying gets a
new intent too but stays in the same attempt, so trying another card before submitting does not
use up the customer's retry. `MethodSelected.attempt` must say which attempt it belongs to
(`attempt_for_selection(flow)`), which keeps that number in the journal record as well.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import reduce
from typing import Any, TypedDict, assert_never

from actors.flow_events import (
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
    Retried,
    Submitted,
    event_from_record,
)
from actors.flow_states import (
    CANCEL_REQUEST_STATES,
    CANCELLABLE,
    GUARDS,
    TRANSITIONS,
    EventType,
    FlowState,
    Guard,
)
from runtime.errors import Internal, InvalidTransition


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowError:
    """Why the current attempt failed; `recoverable` means `retry` is allowed."""

    code: str
    message: str
    recoverable: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """One payment flow. Before `flow_created` (INITIAL, version 0) amount is 0 and currency ''."""

    flow_id: str
    state: FlowState = FlowState.INITIAL
    version: int = 0
    amount: int = 0
    currency: str = ""
    pre_id: str | None = None
    booking_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    payment_method: str | None = None
    intent_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)  # a secret: never in logs
    provider_status: str | None = None
    next_action: Mapping[str, Any] | None = None  # only in REQUIRES_ACTION
    error: FlowError | None = None  # only in FAILED
    attempts: int = 0
    # The customer asked to cancel and the provider has not answered yet; only in the states a
    # cancel may be requested in (CANCEL_REQUEST_STATES).
    cancel_requested: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    @classmethod
    def initial(cls, flow_id: str) -> Flow:
        """The flow before its first event: INITIAL, version 0."""
        return cls(flow_id=flow_id)

    @property
    def is_terminal(self) -> bool:
        """True when no event can change this flow any more (COMPLETED, CANCELLED, EXPIRED,
        non-recoverable FAILED): it has no edge left in the table."""
        return not allowed_events(self)


_GUARD_HOLDS: Mapping[Guard, Callable[[Flow], bool]] = {
    Guard.RECOVERABLE_ERROR: lambda flow: flow.error is not None and flow.error.recoverable,
    Guard.HAS_INTENT: lambda flow: flow.intent_id is not None,
    Guard.CANCELLABLE_INTENT: lambda flow: (
        flow.intent_id is not None and flow.provider_status in CANCELLABLE
    ),
    Guard.NO_CANCEL_REQUESTED: lambda flow: not flow.cancel_requested,
}

_GUARD_REFUSAL: Mapping[Guard, str] = {
    Guard.RECOVERABLE_ERROR: "the failure is not recoverable",
    Guard.HAS_INTENT: "no payment intent exists yet",
    Guard.CANCELLABLE_INTENT: "no payment intent the provider could still cancel",
    Guard.NO_CANCEL_REQUESTED: "a cancel is on its way",
}

_Guards = tuple[Guard, ...]
# The two tables joined once, per state: event type -> (target, guards). `apply` runs for every
# event a flow persists and `allowed_events` for every terminality check, so each looks up one
# row instead of walking both tables per call.
_EDGES: Mapping[FlowState, Mapping[EventType, tuple[FlowState, _Guards]]] = {
    state: {event: (target, GUARDS.get(state, {}).get(event, ())) for event, target in row.items()}
    for state, row in TRANSITIONS.items()
}
# Per state: the event types no guard restricts, then each set of guards with the event types
# it opens.
_FREE_EVENTS: Mapping[FlowState, frozenset[EventType]] = {
    state: frozenset(event for event, (_, guards) in row.items() if not guards)
    for state, row in _EDGES.items()
}
_GUARDED_EVENTS: Mapping[FlowState, tuple[tuple[_Guards, frozenset[EventType]], ...]] = {
    state: tuple(
        (guards, frozenset(event for event, (_, g) in row.items() if g == guards))
        for guards in dict.fromkeys(g for _, g in row.values() if g)
    )
    for state, row in _EDGES.items()
}


def allowed_events(flow: Flow) -> frozenset[EventType]:
    """The event types `apply` accepts for this flow right now."""
    allowed = _FREE_EVENTS[flow.state]
    for guards, events in _GUARDED_EVENTS[flow.state]:
        if all(_GUARD_HOLDS[guard](flow) for guard in guards):
            allowed |= events
    return allowed


def next_state(flow: Flow, event_type: EventType) -> FlowState:
    """Where `event_type` takes `flow`; `InvalidTransition` (naming both) if it may not."""
    edge = _EDGES[flow.state].get(event_type)
    if edge is None:
        raise InvalidTransition(f"flow in {flow.state} does not accept {event_type}")
    target, guards = edge
    for guard in guards:
        if not _GUARD_HOLDS[guard](flow):
            raise InvalidTransition(
                f"flow in {flow.state} does not accept {event_type}: {_GUARD_REFUSAL[guard]}"
            )
    return target


def attempt_for_selection(flow: Flow) -> int:
    """The `attempt` a `MethodSelected` for this flow must carry (see the module docstring)."""
    return flow.attempts + 1 if flow.state is FlowState.PAYMENT_PENDING else flow.attempts


def apply(flow: Flow, event: FlowEvent) -> Flow:
    """The flow after `event`: a new value at version + 1; `flow` itself never changes."""
    target = next_state(flow, event.event_type)
    _check_belongs(flow, event)
    changes = _changes(flow, event)
    changes["state"] = target
    changes["version"] = flow.version + 1
    changes["updated_at"] = event.at
    # next_action is an instruction for REQUIRES_ACTION, error the verdict of FAILED; leaving
    # the state voids them, so a cancelled flow does not show an old decline.
    if target is not FlowState.REQUIRES_ACTION:
        changes["next_action"] = None
    if target is not FlowState.FAILED:
        changes["error"] = None
    # A cancel request is answered in the state it was made in; once the flow moves on (the
    # payment got through first), the request is over.
    if target not in CANCEL_REQUEST_STATES:
        changes["cancel_requested"] = False
    return _evolve(flow, changes)


class _Changes(TypedDict, total=False):
    """The fields an event sets (`flow_id` never changes); typed so mypy checks every name."""

    state: FlowState
    version: int
    amount: int
    currency: str
    pre_id: str | None
    booking_id: str | None
    metadata: Mapping[str, str]
    payment_method: str | None
    intent_id: str | None
    client_secret: str | None
    provider_status: str | None
    next_action: Mapping[str, Any] | None
    error: FlowError | None
    attempts: int
    cancel_requested: bool
    created_at: float
    updated_at: float


_set_field = object.__setattr__  # the way a frozen dataclass's own __init__ sets its fields


def _evolve(flow: Flow, changes: _Changes) -> Flow:
    # `dataclasses.replace` walks fields() and goes through __init__ on every call, which made
    # it the largest single cost of a flow (profiled under payflow-bench); Flow has no
    # __post_init__, so filling the slots directly builds the same value.
    values: Mapping[str, object] = changes
    new = object.__new__(Flow)
    for name in _FLOW_FIELDS:
        _set_field(new, name, values[name] if name in values else getattr(flow, name))
    return new


def _check_belongs(flow: Flow, event: FlowEvent) -> None:
    # Both are bugs of whoever built the event, not something a client can cause.
    if isinstance(event, FlowCreated) and event.flow_id != flow.flow_id:
        raise Internal(f"flow_created for {event.flow_id!r} applied to {flow.flow_id!r}")
    if isinstance(event, MethodSelected) and event.attempt != attempt_for_selection(flow):
        expected = attempt_for_selection(flow)
        raise Internal(f"method_selected for attempt {event.attempt}, expected {expected}")


def _changes(flow: Flow, event: FlowEvent) -> _Changes:  # noqa: PLR0911 (one return per event kind)
    match event:
        case FlowCreated():
            return {
                "amount": event.amount,
                "currency": event.currency,
                "pre_id": event.pre_id,
                "metadata": event.metadata,
                "created_at": event.at,
            }
        case BookingAttached():
            return {"booking_id": event.booking_id}
        case MethodSelected():
            # Each attempt and each newly selected method pays through a new intent.
            return {**_NO_INTENT, "payment_method": event.payment_method, "attempts": event.attempt}
        case IntentCreated():
            return {
                "intent_id": event.intent_id,
                "client_secret": event.client_secret,
                "provider_status": event.provider_status,
            }
        case Processing() | ProviderStatusChanged() | PaymentSucceeded():
            return {"provider_status": event.provider_status}
        case ActionRequired():
            return {"next_action": event.next_action, "provider_status": event.provider_status}
        case PaymentFailed():
            return _failed(flow, event)
        case Retried():
            return {**_NO_INTENT, "payment_method": None}
        case CancelRequested():
            return {"cancel_requested": True}
        case Cancelled():
            # Keeps the intent, with what the provider said of it. A record without a status
            # (written before cancel requests existed) leaves the last one seen, so its intent
            # is still cancelled upstream after the fact.
            status = event.provider_status
            return {} if status is None else {"provider_status": status}
        case Submitted() | Expired():
            # Expired keeps the intent: the shell still has to cancel it upstream.
            return {}
        case _:
            assert_never(event)


_NO_INTENT: _Changes = {"intent_id": None, "client_secret": None, "provider_status": None}


def _failed(flow: Flow, event: PaymentFailed) -> _Changes:
    error = FlowError(code=event.code, message=event.message, recoverable=event.recoverable)
    # A failure raised before the provider answered (no status) keeps the last one we saw.
    status = flow.provider_status if event.provider_status is None else event.provider_status
    return {"error": error, "provider_status": status}


def replay(events: Iterable[FlowEvent], *, start: Flow) -> Flow:
    """`start` (Flow.initial(flow_id), or a flow from a snapshot) with `events` applied in order."""
    return reduce(apply, events, start)


def replay_records(records: Iterable[tuple[str, Mapping[str, Any], float]], *, start: Flow) -> Flow:
    """`replay` straight from journal records (kind, payload, at)."""
    return replay((event_from_record(*record) for record in records), start=start)


_FLOW_FIELDS = tuple(f.name for f in fields(Flow))
# Fields added after snapshots were first written: a snapshot without them takes the default.
_LATER_FIELDS = frozenset({"cancel_requested"})


def flow_to_snapshot(flow: Flow) -> dict[str, Any]:
    """Every field of `flow` as JSON-safe values (copies; mutating them cannot touch the flow)."""
    snapshot = {name: getattr(flow, name) for name in _FLOW_FIELDS}
    snapshot["state"] = flow.state.value
    snapshot["metadata"] = dict(flow.metadata)
    snapshot["next_action"] = _thaw(flow.next_action)
    snapshot["error"] = None if flow.error is None else _error_dict(flow.error)
    return snapshot


def flow_from_snapshot(snapshot: Mapping[str, Any]) -> Flow:
    """The flow `flow_to_snapshot` described; an unreadable snapshot is our bug: `Internal`."""
    missing, known = set(_FLOW_FIELDS) - set(snapshot), set(_FLOW_FIELDS)
    if not set(snapshot) <= known or not missing <= _LATER_FIELDS:
        raise Internal(f"flow snapshot fields {sorted(snapshot)} are not {sorted(_FLOW_FIELDS)}")
    try:
        error = snapshot["error"]
        return Flow(
            **{
                **snapshot,
                "state": FlowState(snapshot["state"]),
                "metadata": dict(snapshot["metadata"]),
                "next_action": _thaw(snapshot["next_action"]),
                "error": None if error is None else FlowError(**error),
            }
        )
    except (TypeError, ValueError) as exc:
        raise Internal(f"flow snapshot does not decode: {exc}") from exc


def _thaw(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else copy.deepcopy(dict(value))


def _error_dict(error: FlowError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "recoverable": error.recoverable}
