"""The vocabulary of a flow decision: the context it is made in, the effects the actor runs
once the decision's events are durable, and the decision itself; and the two builders every
kind of decision shares: `persist` (events -> a decision with their consequences) and
`status_events` (a provider status -> events). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache

from actors.flow_calls import let_go_intent_calls, pending_calls
from actors.flow_core import (
    PAYMENT_FAILURE_POLICY,
    Flow,
    FlowEvent,
    RecoveryPolicy,
    apply,
    events_for_provider_status,
)
from actors.messages import ProviderCall, ProviderObservation, StopTracking, TrackIntent
from actors.provider import Intent
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


class AlertLevel(StrEnum):
    WARNING = "warning"
    ERROR = "error"  # money may have moved the wrong way: an operator has to look


class AlertName(StrEnum):
    """What an operator is told; the log event's name."""

    # The provider refused to cancel an intent it should have cancelled; the flow was cancelled.
    INTENT_NOT_CANCELLED = "intent_not_cancelled"
    # The customer paid an intent whose flow had already ended: refund it.
    PAYMENT_TAKEN_AFTER_FLOW_ENDED = "payment_taken_after_flow_ended"


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """Log something an operator must act on (no secrets: the intent id and its status)."""

    name: AlertName
    level: AlertLevel
    intent_id: str | None
    provider_status: str | None


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
    | Alert
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


# --- building decisions ------------------------------------------------------------------------


def persist(
    flow: Flow,
    events: Sequence[FlowEvent],
    aliases: tuple[tuple[str, str], ...] = (),
    reply: ReplyKind | None = None,
    alerts: tuple[Alert, ...] = (),
) -> Decision:
    """Persist `events` (checked against the table now), then publish and act on the result."""
    if not events:
        return NOTHING if reply is None else Decision(reply=reply)
    steps = tuple(versions(flow, events))
    after = steps[-1]
    effects = (_PUBLISH, *_consequences(flow, after), *pending_calls(after), *alerts)
    return Decision(
        events=tuple(events), steps=steps, aliases=aliases, effects=effects, reply=reply
    )


# Effects without fields are values: one instance each serves every decision.
_PUBLISH = Publish()
_ENDED = (CancelExpiry(), NotifyTerminal())


def _consequences(before: Flow, after: Flow) -> list[Effect]:
    """Tracking, timers and notification follow from how the flow changed."""
    effects: list[Effect] = []
    was_terminal, is_terminal = before.is_terminal, after.is_terminal
    watched = watching(after, is_terminal)
    if watched and after.intent_id != before.intent_id:
        effects.append(TrackIntent(intent_id=str(after.intent_id), status=after.provider_status))
    stops = before.intent_id is not None and not watched and watching(before, was_terminal)
    if stops:
        effects.append(StopTracking())
    effects.extend(let_go_intent_calls(before, after))
    if is_terminal and not was_terminal:
        effects.extend(_ENDED)
    return effects


def watching(flow: Flow, terminal: bool) -> bool:
    """Whether the flow's intent is tracked (`terminal` is flow.is_terminal, which the callers
    need for themselves as well)."""
    return flow.intent_id is not None and not terminal


def status_events(
    flow: Flow, status: str, *, intent: Intent | ProviderObservation, ctx: Context
) -> list[FlowEvent]:
    """The forward events a provider status means for `flow` (the one mapping, with the
    intent's details and this flow's retry policy)."""
    return events_for_provider_status(
        flow,
        status,
        at=ctx.now,
        next_action=intent.next_action,
        error=intent.last_error if isinstance(intent, Intent) else intent.error,
        intent_id=intent.intent_id,
        policy=ctx.payment_policy,
    )
