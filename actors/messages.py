"""Messages between the payment actors and the adapters, and the ports the domain needs.

The domain defines what it needs from the edges (`EffectRunner`, `StatusPublisher`,
`TerminalNotifier`); adapters implement them. Pure: no pykka, websockets, stripe or msgpack here.

Flow of a client command:
  bridge -> application (shape, not_found, forbidden checks) -> flow actor `ClientCommand`
  -> flow actor (version check, transition check, persist, then act) -> `reply(Ack | error)`
  -> `StatusPublisher.publish(status_view)` -> socket manager -> every session in the flow's room.
Flow of provider news:
  webhook / feed / dummy push -> application (intent id -> flow id via the journal's "intent"
  alias namespace) -> tracker actor `PushedStatus`; tracker polls via `EffectRunner` too;
  tracker merges and tells the flow actor only forward changes as `ProviderObservation`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from actors.commands import Command
from actors.provider import Intent, PaymentError, ProviderEvent
from runtime.errors import PayflowError

# Journal alias namespaces (runtime.journal.Alias.namespace) used by the domain.
ID_NAMESPACE = "id"  # flow_id, pre_id, booking_id: one namespace, per CONTRACT.md
IDEMPOTENCY_NAMESPACE = "idempotency"  # create_flow idempotency keys
INTENT_NAMESPACE = "intent"  # provider intent id -> flow id, to route webhooks and feed events

Reply = Callable[[object], None]
"""Called exactly once with the reply frame (actors.commands Created / Ack) or a PayflowError.
May be called from any thread; the adapter hops to its loop itself."""


class Tellable(Protocol):
    def tell(self, message: object) -> None: ...


# --- into a flow actor (entity id = flow_id) ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCommand:
    """A validated, authorised client request for one flow (CreateFlow included)."""

    command: Command
    reply: Reply


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientPresence:
    """The socket manager's word that the flow's room gained its first / lost its last client."""

    attached: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderObservation:
    """A real, forward change the tracker saw for the flow's current intent."""

    intent_id: str
    status: str
    next_action: Mapping[str, Any] | None = None
    error: PaymentError | None = None
    source: str = "poll"


class ProviderOp(StrEnum):
    CREATE_INTENT = "create_intent"
    CONFIRM_INTENT = "confirm_intent"
    CANCEL_INTENT = "cancel_intent"
    RETRIEVE_INTENT = "retrieve_intent"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderCall:
    """One provider call as data. `idempotency_key` is deterministic: (flow id, step, attempt)."""

    op: ProviderOp
    flow_id: str
    intent_id: str | None = None
    idempotency_key: str | None = None
    amount: int | None = None
    currency: str | None = None
    payment_method: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderResult:
    """What came back from a `ProviderCall`: an intent, or the error (ProviderUnavailable,
    ProviderRejected, ...)."""

    call: ProviderCall
    intent: Intent | None = None
    error: PayflowError | None = None


# --- into a tracker actor (entity id = flow_id) ------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackIntent:
    """Start (or switch to) tracking this intent; `push_healthy` says whether push channels work."""

    intent_id: str
    status: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StopTracking:
    """The flow reached a terminal state (or dropped its intent): stop polling."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PushedStatus:
    """A pushed provider event (webhook, feed, dummy push) routed to this flow's tracker."""

    event: ProviderEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class PushHealth:
    """Whether push channels (feeds) are currently healthy; trackers poll faster when not."""

    healthy: bool


# --- ports the adapters implement --------------------------------------------------------------


class EffectRunner(Protocol):
    """Runs provider calls on the I/O loop; never blocks the caller.

    When the call finishes, `reply_to.tell(ProviderResult(...))` delivers the outcome.
    """

    def provider_call(self, call: ProviderCall, reply_to: Tellable) -> None: ...


class StatusPublisher(Protocol):
    """Fans a flow's status out to the sessions joined to it (the socket manager)."""

    def publish(self, flow_id: str, view: Mapping[str, Any]) -> None: ...


class TerminalNotifier(Protocol):
    """Delivers terminal-state events to the booking backend, at least once."""

    def flow_terminal(self, view: Mapping[str, Any], *, intent_id: str | None) -> None: ...
