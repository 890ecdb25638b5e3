"""What a payment flow decides, as data: events to persist, aliases to bind, effects to run.

Pure (no I/O, no pykka): the flow actor (actors/flow_actor.py) feeds it what arrives and carries
the `Decision` out. "Persist the event, then act": a decision's effects run only after its events
are durable, and a decision without events acts at once (it changes nothing that could be lost).

Checks for a client command come in the contract's order, after the application has done shape,
`not_found` and `forbidden`: `expect_version` (`version_conflict`), then the transition table
(`invalid_transition`). A refused command is a decision with `error` and nothing else.

Provider calls are derived from the flow alone (`pending_calls`, in actors/flow_calls.py, with
their idempotency keys); this module decides what their answers change.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors.commands import AttachBooking, Cancel, Command, CreateFlow, Retry, SelectMethod, Submit
from actors.flow_calls import (
    CANCELLABLE,
    awaited_op,
    idempotency_key,
    intent_call,
    is_pending,
    pending_calls,
)
from actors.flow_core import (
    BookingAttached,
    Cancelled,
    Expired,
    Flow,
    FlowCreated,
    FlowEvent,
    FlowState,
    IntentCreated,
    MethodSelected,
    PaymentFailed,
    Retried,
    Submitted,
    attempt_for_selection,
    events_for_provider_status,
)
from actors.flow_decisions import (
    KEEP,
    NOTHING,
    CallLater,
    CancelExpiry,
    Context,
    Decision,
    Effect,
    NotifyTerminal,
    Publish,
    ReplyKind,
    ScheduleExpiry,
    versions,
)
from actors.messages import (
    ID_NAMESPACE,
    IDEMPOTENCY_NAMESPACE,
    INTENT_NAMESPACE,
    ProviderCall,
    ProviderObservation,
    ProviderOp,
    ProviderResult,
    StopTracking,
    TrackIntent,
)
from actors.provider import Intent
from runtime.errors import (
    Conflict,
    Internal,
    PayflowError,
    ProviderRejected,
    ProviderUnavailable,
    Rejected,
    VersionConflict,
)

# The decision vocabulary and the pending calls are part of this module's interface: the flow
# actor reads them as `fp.*`.
__all__ = [
    "CANCELLABLE",
    "EXPIRABLE",
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
        return _persist(flow, events, aliases, reply=kind)
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


def _command_events(flow: Flow, command: Command, ctx: Context) -> tuple[list[FlowEvent], _Aliases]:
    at = ctx.now
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
            return [Cancelled(at=at)], ()
        case _:
            raise Internal(f"{command.TYPE} is not a flow command")


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


def _persist(
    flow: Flow,
    events: Sequence[FlowEvent],
    aliases: _Aliases = (),
    reply: ReplyKind | None = None,
) -> Decision:
    """Persist `events` (checked against the table now), then publish and act on the result."""
    if not events:
        return NOTHING if reply is None else Decision(reply=reply)
    steps = tuple(versions(flow, events))
    after = steps[-1]
    effects = (_PUBLISH, *_consequences(flow, after), *pending_calls(after))
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
    watching = _watching(after, is_terminal)
    if watching and after.intent_id != before.intent_id:
        effects.append(TrackIntent(intent_id=str(after.intent_id), status=after.provider_status))
    stops = before.intent_id is not None and not watching and _watching(before, was_terminal)
    if stops:
        effects.append(StopTracking())
    if is_terminal and not was_terminal:
        effects.extend(_ENDED)
    return effects


def _watching(flow: Flow, terminal: bool) -> bool:
    # `terminal` is flow.is_terminal, which the callers need for themselves as well.
    return flow.intent_id is not None and flow.state is not _S.FAILED and not terminal


# --- provider answers -----------------------------------------------------------------------------


def on_provider_result(flow: Flow, result: ProviderResult, ctx: Context) -> Decision:
    """What the answer to one of this flow's provider calls changes."""
    call = result.call
    op = awaited_op(flow)
    awaited = op is not None and (
        call.idempotency_key == idempotency_key(flow, op)
        or _rereads_refused_confirm(flow, op, call)
    )
    if isinstance(result.error, ProviderUnavailable):
        retry = CallLater(call=call, delay=ctx.call_retry_delay)
        return Decision(effects=(retry,)) if awaited else NOTHING
    if call.op is ProviderOp.CREATE_INTENT and awaited:
        return _intent_created(flow, result, ctx)
    if call.op is ProviderOp.CONFIRM_INTENT:
        # For a confirm `awaited` means "still pending": the re-read clause is for retrieves.
        return _confirmed(flow, result, ctx, pending=awaited)
    if call.op is ProviderOp.RETRIEVE_INTENT and awaited:
        return _reread_after_refused_confirm(flow, result, ctx)
    return NOTHING  # a stale create or re-read, a cancel (the flow already ended)


def _intent_created(flow: Flow, result: ProviderResult, ctx: Context) -> Decision:
    intent = result.intent
    if intent is None:
        return _persist(flow, [_rejected(result.error, ctx)])
    created = IntentCreated(
        at=ctx.now,
        intent_id=intent.intent_id,
        client_secret=intent.client_secret,
        provider_status=intent.status,
    )
    return _persist(flow, [created], ((intent.intent_id, INTENT_NAMESPACE),))


def _confirmed(flow: Flow, result: ProviderResult, ctx: Context, *, pending: bool) -> Decision:
    intent = result.intent
    if intent is None:
        if not pending:
            return NOTHING
        # The provider refused to confirm. When the customer already confirmed with Stripe.js
        # (as Stripe recommends for cards), the intent has moved on and the refusal is no
        # failure: the money may be taken. Re-read the intent before deciding anything.
        reread = intent_call(flow, ProviderOp.RETRIEVE_INTENT, str(flow.intent_id))
        return Decision(effects=(reread,))
    return _persist(flow, _status_events(flow, intent.status, intent=intent, ctx=ctx))


def _rereads_refused_confirm(flow: Flow, awaited: ProviderOp, call: ProviderCall) -> bool:
    """Whether `call` is the re-read `_confirmed` asked for and the confirm is still awaited
    (`awaited`: the op of the flow's `pending_calls`)."""
    return (
        call.op is ProviderOp.RETRIEVE_INTENT
        and awaited is ProviderOp.CONFIRM_INTENT
        and flow.intent_id == call.intent_id
    )


def _reread_after_refused_confirm(flow: Flow, result: ProviderResult, ctx: Context) -> Decision:
    """The intent as it stands after the provider refused our confirm: if it moved on (the
    client confirmed it), follow it; if it still waits for a confirm, the refusal was real."""
    intent = result.intent
    events = [] if intent is None else _status_events(flow, intent.status, intent=intent, ctx=ctx)
    if events:
        return _persist(flow, events)
    refusal = result.error or ProviderRejected("the provider refused to confirm the payment")
    return _persist(flow, [_rejected(refusal, ctx)])


def _status_events(
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


def _rejected(error: PayflowError | None, ctx: Context) -> PaymentFailed:
    # The provider refused the request itself: the same request can never pass, so no retry.
    message = str(error) if error is not None else "the provider gave no answer"
    return PaymentFailed(
        at=ctx.now,
        code="provider_rejected",
        message=message,
        recoverable=False,
        provider_status=None,
    )


# --- provider news, presence, expiry, resume ------------------------------------------------------


def on_observation(flow: Flow, observation: ProviderObservation, ctx: Context) -> Decision:
    """A forward change the tracker saw for the flow's intent."""
    return _persist(flow, _status_events(flow, observation.status, intent=observation, ctx=ctx))


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
    if flow.state not in EXPIRABLE:
        return Decision(effects=(ScheduleExpiry(delay=ctx.preserve_window),))
    return _persist(flow, [Expired(at=ctx.now)])


def resume(flow: Flow, ctx: Context) -> tuple[Effect, ...]:
    """What a flow loaded from the journal (restart, crash, passivation) must set going again.

    Nobody is attached to a freshly loaded flow (attached flows are never passivated), so a
    flow that could expire gets its preservation window; a rejoin cancels it.
    """
    effects: list[Effect] = list(pending_calls(flow))
    terminal = flow.is_terminal
    if _watching(flow, terminal):
        effects.append(TrackIntent(intent_id=str(flow.intent_id), status=flow.provider_status))
    if not terminal and flow.state is not _S.INITIAL:
        effects.append(ScheduleExpiry(delay=ctx.preserve_window))
    return tuple(effects)
