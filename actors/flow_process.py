"""What a payment flow decides, as data: events to persist, aliases to bind, effects to run.

Pure (no I/O, no pykka): the flow actor (actors/flow_actor.py) feeds it what arrives and carries
the `Decision` out. "Persist the event, then act": a decision's effects run only after its events
are durable, and a decision without events acts at once (it changes nothing that could be lost).

Checks for a client command come in the contract's order, after the application has done shape,
`not_found` and `forbidden`: `expect_version` (`version_conflict`), then the transition table
(`invalid_transition`). A refused command is a decision with `error` and nothing else.

Provider calls are derived from the flow alone (`pending_calls`, in actors/flow_calls.py, with
their idempotency keys); actors/flow_answers.py decides what their answers change
(`on_provider_result`, re-exported here).

A cancel cannot end a flow whose intent the provider could still charge before the provider has
answered: the customer may have confirmed it with Stripe.js, or passed 3-D Secure, a moment
before. Such a cancel persists `cancel_requested` and cancels the intent; the answer ends the
flow CANCELLED (`canceled`) or, when the payment got through first, follows it to COMPLETED.
"""

from __future__ import annotations

from collections.abc import Mapping

from actors.commands import AttachBooking, Cancel, Command, CreateFlow, Retry, SelectMethod, Submit
from actors.flow_answers import on_provider_result
from actors.flow_calls import CANCELLABLE, cancelling, is_pending, pending_calls
from actors.flow_core import (
    BookingAttached,
    Cancelled,
    CancelRequested,
    EventType,
    Expired,
    Flow,
    FlowCreated,
    FlowEvent,
    FlowState,
    MethodSelected,
    Retried,
    Submitted,
    attempt_for_selection,
    next_state,
)
from actors.flow_decisions import (
    KEEP,
    NOTHING,
    Alert,
    AlertLevel,
    AlertName,
    CallLater,
    CancelExpiry,
    Context,
    Decision,
    Effect,
    NotifyTerminal,
    Publish,
    ReplyKind,
    ScheduleExpiry,
    persist,
    status_events,
    versions,
    watching,
)
from actors.messages import ID_NAMESPACE, IDEMPOTENCY_NAMESPACE, ProviderObservation, TrackIntent
from runtime.errors import Conflict, Internal, Rejected, VersionConflict

# The decision vocabulary and the pending calls are part of this module's interface: the flow
# actor reads them as `fp.*`.
__all__ = [
    "CANCELLABLE",
    "EXPIRABLE",
    "Alert",
    "AlertLevel",
    "AlertName",
    "CallLater",
    "CancelExpiry",
    "Context",
    "Decision",
    "Effect",
    "NotifyTerminal",
    "Publish",
    "ReplyKind",
    "ScheduleExpiry",
    "decide",
    "is_pending",
    "on_expiry",
    "on_observation",
    "on_presence",
    "on_provider_result",
    "pending_calls",
    "resume",
    "versions",
]

_S = FlowState
# States a flow may expire from: payment has not started (a recoverable FAILED may start again).
EXPIRABLE: frozenset[FlowState] = frozenset(
    {_S.PRE_BOOKING, _S.PAYMENT_PENDING, _S.PAYMENT_ACTIVE, _S.FAILED}
)


# --- client commands ----------------------------------------------------------------------------


def decide(flow: Flow, command: Command, ctx: Context) -> Decision:
    """The decision for a validated, authorised client command (see the module docstring)."""
    kind = ReplyKind.CREATED if isinstance(command, CreateFlow) else ReplyKind.ACK
    try:
        _check_version(flow, command)
        events, aliases = _command_events(flow, command, ctx)
        return persist(flow, events, aliases, reply=kind)
    except (Rejected, Conflict) as error:
        return Decision(error=error)


def _check_version(flow: Flow, command: Command) -> None:
    expected = command.expect_version
    if expected is not None and expected != flow.version:
        raise VersionConflict(
            f"flow is at version {flow.version}, not {expected}",
            expected=expected,
            actual=flow.version,
        )


_Aliases = tuple[tuple[str, str], ...]


# The event each command persists, where it is always the same one: the table is asked before
# the event is built, so a command the state refuses is `invalid_transition` even when the event
# could not be built for that state (a selection's attempt number exists in PAYMENT_PENDING
# and PAYMENT_ACTIVE only).
_EVENT_OF: Mapping[type[Command], EventType] = {
    CreateFlow: EventType.FLOW_CREATED,
    AttachBooking: EventType.BOOKING_ATTACHED,
    SelectMethod: EventType.METHOD_SELECTED,
    Submit: EventType.SUBMITTED,
    Retry: EventType.RETRIED,
}


def _command_events(flow: Flow, command: Command, ctx: Context) -> tuple[list[FlowEvent], _Aliases]:
    at = ctx.now
    kind = _EVENT_OF.get(type(command))
    if kind is not None:
        next_state(flow, kind)  # InvalidTransition before anything is built
    match command:
        case CreateFlow():
            return [_created(flow, command, at)], _create_aliases(flow.flow_id, command)
        case AttachBooking():
            return [BookingAttached(at=at, booking_id=command.booking_id)], (
                (command.booking_id, ID_NAMESPACE),
            )
        case SelectMethod():
            method, attempt = command.payment_method, attempt_for_selection(flow)
            return [MethodSelected(at=at, payment_method=method, attempt=attempt)], ()
        case Submit():
            return [Submitted(at=at)], ()
        case Retry():
            return [Retried(at=at)], ()
        case Cancel():
            return _cancel_events(flow, at), ()
        case _:
            raise Internal(f"{command.TYPE} is not a flow command")


def _cancel_events(flow: Flow, at: float) -> list[FlowEvent]:
    """A flow whose intent could still be paid asks the provider first (see the module
    docstring); any other ends at once. A repeated request is acked again and changes nothing:
    its call is on its way, with its one key."""
    if cancelling(flow):
        return []
    if flow.intent_id is not None and flow.provider_status in CANCELLABLE:
        return [CancelRequested(at=at)]
    return [Cancelled(at=at)]


def _created(flow: Flow, command: CreateFlow, at: float) -> FlowCreated:
    return FlowCreated(
        at=at,
        flow_id=flow.flow_id,
        amount=command.amount,
        currency=command.currency,
        pre_id=command.pre_id,
        metadata=dict(command.metadata),
    )


def _create_aliases(flow_id: str, command: CreateFlow) -> _Aliases:
    aliases = [(flow_id, ID_NAMESPACE)]
    if command.pre_id is not None:
        aliases.append((command.pre_id, ID_NAMESPACE))
    if command.idempotency_key is not None:
        aliases.append((command.idempotency_key, IDEMPOTENCY_NAMESPACE))
    return tuple(aliases)


# --- provider news, presence, expiry, resume ------------------------------------------------------


def on_observation(flow: Flow, observation: ProviderObservation, ctx: Context) -> Decision:
    """A forward change the tracker saw for the flow's intent."""
    return persist(flow, status_events(flow, observation.status, intent=observation, ctx=ctx))


def on_presence(flow: Flow, attached: bool, ctx: Context) -> Decision:
    """The first client joined (keep the flow) or the last one left (start the window)."""
    if attached:
        return KEEP
    if flow.is_terminal or flow.state is _S.INITIAL:
        return NOTHING
    return Decision(effects=(ScheduleExpiry(delay=ctx.preserve_window),))


def on_expiry(flow: Flow, ctx: Context) -> Decision:
    """The preservation window ran out with no client: expire a flow that has not started paying;
    one that is paying keeps being tracked, and is looked at again one window later."""
    if flow.is_terminal or flow.state is _S.INITIAL:
        return NOTHING
    if flow.state not in EXPIRABLE or cancelling(flow):
        # A cancel on its way ends the flow as the customer asked, once the provider answers.
        return Decision(effects=(ScheduleExpiry(delay=ctx.preserve_window),))
    return persist(flow, [Expired(at=ctx.now)])


def resume(flow: Flow, ctx: Context) -> tuple[Effect, ...]:
    """What a flow loaded from the journal (restart, crash, passivation) must set going again.

    Nobody is attached to a freshly loaded flow (attached flows are never passivated), so a
    flow that could expire gets its preservation window; a rejoin cancels it.
    """
    effects: list[Effect] = list(pending_calls(flow))
    terminal = flow.is_terminal
    if watching(flow, terminal):
        effects.append(TrackIntent(intent_id=str(flow.intent_id), status=flow.provider_status))
    if not terminal and flow.state is not _S.INITIAL:
        effects.append(ScheduleExpiry(delay=ctx.preserve_window))
    return tuple(effects)
