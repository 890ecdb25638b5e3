"""The vocabulary of a flow decision: the context it is made in, the effects the actor runs
once the decision's events are durable, and the decision itself. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache

from actors.flow_core import PAYMENT_FAILURE_POLICY, Flow, FlowEvent, RecoveryPolicy, apply
from actors.messages import ProviderCall, StopTracking, TrackIntent
from runtime.errors import PayflowError


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What a decision needs besides the flow: the clock and the configured limits."""

    now: float
    retry_limit: int = 1  # payment attempts that may follow a failed one
    preserve_window: float = 300.0  # seconds a flow without clients is kept before expiring
    call_retry_delay: float = 2.0  # seconds before re-sending a call the provider did not answer

    @property
    def payment_policy(self) -> RecoveryPolicy:
        return _payment_policy(self.retry_limit)

    def at(self, now: float) -> Context:
        """These limits at `now` (the flow actor's context for one message)."""
        return replace(self, now=now)


@lru_cache(maxsize=8)
def _payment_policy(retries: int) -> RecoveryPolicy:
    # A new Context comes with every message; the policy it implies is an immutable value
    # that depends on the configured limit alone, so it is built once per limit.
    return replace(PAYMENT_FAILURE_POLICY, retries=retries)


# --- effects: what the shell does once the decision's events are durable ----------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
    """Publish the status of every version the decision persisted, in order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleExpiry:
    """(Re)arm the preservation timer: `ExpiryDue` in `delay` seconds."""

    delay: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelExpiry:
    """A client is back (or the flow ended): disarm the preservation timer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyTerminal:
    """Tell the booking backend that the flow reached a terminal state."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallLater:
    """Send `call` again after `delay` seconds: the provider stayed unavailable."""

    call: ProviderCall
    delay: float


Effect = (
    ProviderCall
    | CallLater
    | Publish
    | TrackIntent
    | StopTracking
    | ScheduleExpiry
    | CancelExpiry
    | NotifyTerminal
)


class ReplyKind(StrEnum):
    ACK = "ack"
    CREATED = "created"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """Events to append (one atomic write, with `aliases` as (name, namespace)), effects to run
    after it, and the reply owed to a client command (`error` replaces all of it).

    `steps` is the flow after each of `events`, from the flow the decision was made for: what
    `versions(flow, events)` returns, computed once while deciding, so the shell can take the
    new versions from here instead of applying the events again."""

    events: tuple[FlowEvent, ...] = ()
    steps: tuple[Flow, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()
    effects: tuple[Effect, ...] = ()
    reply: ReplyKind | None = None
    error: PayflowError | None = None


# A decision is an immutable value: the ones without fields of their own are built once.
NOTHING = Decision()
KEEP = Decision(effects=(CancelExpiry(),))  # a client joined: the flow stays


def versions(flow: Flow, events: Sequence[FlowEvent]) -> list[Flow]:
    """The flow after each of `events` in turn (one per persisted version)."""
    steps: list[Flow] = []
    for event in events:
        flow = apply(flow, event)
        steps.append(flow)
    return steps
