"""The facts that change a payment flow, and their journal representation.

Each event is a frozen, slotted, keyword-only dataclass carrying `at` (epoch seconds, when it
happened) and the data the transition needs. An event is what the journal stores: it goes in as
a record `(kind, payload, at)` where `kind` is the `EventType` value and `payload` holds the other
fields as JSON-safe values, and comes back out unchanged.

Events check their own invariants (amount > 0, lower-case currency, attempt >= 1) when built, so
an invalid one never reaches the journal; the failure is `InvalidField`, the wire's own code.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from actors.flow_states import EventType
from runtime.errors import Internal, InvalidField

# The shape of a lower-case ISO 4217 code. Requests are checked against the current list
# (actors.currencies); events only check the shape, so a journal written before ISO withdrew a
# code still replays.
_CURRENCY = re.compile(r"[a-z]{3}")

Record = tuple[str, dict[str, Any], float]
"""A journal record: (kind, JSON-safe payload, at)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidField(message)


def _set(event: object, name: str, value: object) -> None:
    # Frozen dataclasses refuse attribute assignment; __post_init__ may still normalise a field.
    object.__setattr__(event, name, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowCreated:
    event_type: ClassVar[EventType] = EventType.FLOW_CREATED
    at: float
    flow_id: str
    amount: int
    currency: str
    pre_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(bool(self.flow_id), "flow_id must not be empty")
        _require(
            isinstance(self.amount, int) and not isinstance(self.amount, bool) and self.amount > 0,
            "amount must be a positive integer in minor units",
        )
        _require(bool(_CURRENCY.fullmatch(self.currency)), "currency must be lower-case ISO 4217")
        _require(
            all(isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()),
            "metadata must map strings to strings",
        )
        _set(self, "metadata", dict(self.metadata))  # our own copy: the caller keeps theirs


@dataclass(frozen=True, slots=True, kw_only=True)
class BookingAttached:
    event_type: ClassVar[EventType] = EventType.BOOKING_ATTACHED
    at: float
    booking_id: str

    def __post_init__(self) -> None:
        _require(bool(self.booking_id), "booking_id must not be empty")


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodSelected:
    """The customer chose a payment method; a new payment intent will be created for it.

    `attempt` is the payment attempt this selection belongs to (see `Flow.attempts`); build it
    with `attempt_for_selection(flow)`.
    """

    event_type: ClassVar[EventType] = EventType.METHOD_SELECTED
    at: float
    payment_method: str
    attempt: int

    def __post_init__(self) -> None:
        _require(bool(self.payment_method), "payment_method must not be empty")
        _require(self.attempt >= 1, "attempt counts from 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class IntentCreated:
    event_type: ClassVar[EventType] = EventType.INTENT_CREATED
    at: float
    intent_id: str
    client_secret: str | None
    provider_status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Submitted:
    """The daemon is about to confirm the intent (persisted before the provider call)."""

    event_type: ClassVar[EventType] = EventType.SUBMITTED
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Processing:
    event_type: ClassVar[EventType] = EventType.PROCESSING
    at: float
    provider_status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionRequired:
    event_type: ClassVar[EventType] = EventType.ACTION_REQUIRED
    at: float
    next_action: Mapping[str, Any]
    provider_status: str

    def __post_init__(self) -> None:
        _set(self, "next_action", copy.deepcopy(dict(self.next_action)))


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderStatusChanged:
    """The provider's status string moved without changing the flow's state."""

    event_type: ClassVar[EventType] = EventType.PROVIDER_STATUS_CHANGED
    at: float
    provider_status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentSucceeded:
    event_type: ClassVar[EventType] = EventType.PAYMENT_SUCCEEDED
    at: float
    provider_status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentFailed:
    """The attempt failed. `recoverable` is decided once, by the recovery policy, and recorded,
    so a replay reaches the same verdict even if the configured retry limit changed since."""

    event_type: ClassVar[EventType] = EventType.PAYMENT_FAILED
    at: float
    code: str
    message: str
    recoverable: bool
    provider_status: str | None  # None when no intent was ever created for the attempt


@dataclass(frozen=True, slots=True, kw_only=True)
class Retried:
    event_type: ClassVar[EventType] = EventType.RETRIED
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequested:
    """The customer asked to cancel while the intent could still be paid: the flow cancels it at
    the provider and ends only on the answer (persisted before the provider call)."""

    event_type: ClassVar[EventType] = EventType.CANCEL_REQUESTED
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    """The flow is cancelled. `provider_status` is the intent's status the provider reported
    with it (`canceled` once the cancel went through); None when no intent was asked, as in
    records written before the field existed."""

    event_type: ClassVar[EventType] = EventType.CANCELLED
    at: float
    provider_status: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Expired:
    event_type: ClassVar[EventType] = EventType.EXPIRED
    at: float


FlowEvent = (
    FlowCreated
    | BookingAttached
    | MethodSelected
    | IntentCreated
    | Submitted
    | Processing
    | ActionRequired
    | ProviderStatusChanged
    | PaymentSucceeded
    | PaymentFailed
    | Retried
    | CancelRequested
    | Cancelled
    | Expired
)

EVENT_CLASSES: Mapping[EventType, type[FlowEvent]] = {
    cls.event_type: cls
    for cls in (
        FlowCreated,
        BookingAttached,
        MethodSelected,
        IntentCreated,
        Submitted,
        Processing,
        ActionRequired,
        ProviderStatusChanged,
        PaymentSucceeded,
        PaymentFailed,
        Retried,
        CancelRequested,
        Cancelled,
        Expired,
    )
}


# Per event class, its record `kind` and its payload field names in order. Built once: taken
# from `fields` and the enum on every append they were a visible cost of a flow (profiled under
# payflow-bench).
_RECORD_SHAPES: Mapping[type[FlowEvent], tuple[str, tuple[str, ...]]] = {
    cls: (kind.value, tuple(sorted(f.name for f in fields(cls) if f.name != "at")))
    for kind, cls in EVENT_CLASSES.items()
}

# Values that are JSON-safe as they are (bool is an int); anything else may need a copy.
_PLAIN = (str, int, float, type(None))


def _payload_names(cls: type[FlowEvent]) -> frozenset[str]:
    return frozenset(_RECORD_SHAPES[cls][1])


def _json_copy(value: object) -> object:
    return copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value


def event_to_record(event: FlowEvent) -> Record:
    """The journal form of `event`: (kind, payload, at); payload values are JSON-safe copies."""
    kind, names = _RECORD_SHAPES[type(event)]
    payload: dict[str, Any] = {}
    for name in names:
        value = getattr(event, name)
        payload[name] = value if isinstance(value, _PLAIN) else _json_copy(value)
    return kind, payload, event.at


def event_from_record(kind: str, payload: Mapping[str, Any], at: float) -> FlowEvent:
    """Rebuild the event a record stores; a record we cannot read is our bug, so `Internal`."""
    try:
        cls = EVENT_CLASSES[EventType(kind)]
    except ValueError:
        raise Internal(f"journal record of unknown kind {kind!r}") from None
    unknown = set(payload) - _payload_names(cls)
    if unknown:
        raise Internal(f"journal record {kind!r} has unknown fields {sorted(unknown)}")
    try:
        return cls(at=at, **payload)
    except (TypeError, InvalidField) as exc:
        raise Internal(f"journal record {kind!r} does not decode: {exc}") from exc
