"""What the answers to a flow's provider calls change. Pure (no I/O, no pykka).

An answer counts only while the flow still waits for it (`answers_awaited`, from the flow's
persisted state): a stale one changes nothing. `ProviderUnavailable` sends the same call again
later. A refused confirm or cancel is never taken at its word: the intent is re-read first,
because the customer may have confirmed it with Stripe.js (or passed 3-D Secure) meanwhile.

The answer to a cancel the customer asked for (`cancel_requested`, see actors/flow_process.py):
- `canceled`: the flow ends CANCELLED, with that status;
- paid first (processing, succeeded, requires_capture): the usual status events follow it, so
  the booking stands and the flow ends COMPLETED;
- still cancellable (the provider refused for another reason): the flow ends CANCELLED as the
  customer asked, with the intent's status, and an operator is warned (`intent_not_cancelled`).
A flow that ended before its cancel was answered (EXPIRED) cannot move; if its intent was paid,
an operator is told to refund it (`payment_taken_after_flow_ended`, an error).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from actors.flow_calls import CANCELLABLE, answers_awaited, awaited_op, intent_call
from actors.flow_core import (
    Cancelled,
    Flow,
    IntentCreated,
    PaymentFailed,
    payment_failure_recoverable,
)
from actors.flow_decisions import (
    NOTHING,
    Alert,
    AlertLevel,
    AlertName,
    CallLater,
    Context,
    Decision,
    persist,
    status_events,
)
from actors.messages import INTENT_NAMESPACE, ProviderOp, ProviderResult
from actors.provider import Intent, IntentStatus
from runtime.errors import PayflowError, ProviderRejected, ProviderUnavailable

_I = IntentStatus
# Intent statuses that mean the customer's money is taken (or held for capture).
PAID: frozenset[str] = frozenset({_I.PROCESSING, _I.REQUIRES_CAPTURE, _I.SUCCEEDED})


def on_provider_result(flow: Flow, result: ProviderResult, ctx: Context) -> Decision:
    """What the answer to one of this flow's provider calls changes."""
    call = result.call
    awaited = answers_awaited(flow, call)
    if isinstance(result.error, ProviderUnavailable):
        retry = CallLater(call=call, delay=ctx.call_retry_delay)
        return Decision(effects=(retry,)) if awaited else NOTHING
    if call.op is ProviderOp.CONFIRM_INTENT:
        # For a confirm `awaited` means "still pending": a late answer is still news.
        return _confirmed(flow, result, ctx, pending=awaited)
    if not awaited:
        return NOTHING  # a stale create, cancel or re-read
    return _ANSWERS[call.op](flow, result, ctx)


def _intent_created(flow: Flow, result: ProviderResult, ctx: Context) -> Decision:
    intent = result.intent
    if intent is None:
        # The provider refused the payment method itself (a mistyped id, say): like a decline,
        # the customer may pick another one, within the payment-failure policy.
        recoverable = payment_failure_recoverable(flow.attempts, ctx.payment_policy)
        return persist(flow, [_rejected(result.error, ctx, recoverable=recoverable)])
    created = IntentCreated(
        at=ctx.now,
        intent_id=intent.intent_id,
        client_secret=intent.client_secret,
        provider_status=intent.status,
    )
    return persist(flow, [created], ((intent.intent_id, INTENT_NAMESPACE),))


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
    return persist(flow, status_events(flow, intent.status, intent=intent, ctx=ctx))


def _reread_after_refused_confirm(flow: Flow, result: ProviderResult, ctx: Context) -> Decision:
    """The intent as it stands after the provider refused our confirm: if it moved on (the
    client confirmed it), follow it; if it still waits for a confirm, the refusal was real."""
    intent = result.intent
    events = [] if intent is None else status_events(flow, intent.status, intent=intent, ctx=ctx)
    if events:
        return persist(flow, events)
    # Nothing was charged (the intent did not move): the customer may try again within the
    # payment-failure policy, with a new intent, and this one is cancelled (let go of).
    refusal = result.error or ProviderRejected("the provider refused to confirm the payment")
    recoverable = payment_failure_recoverable(flow.attempts, ctx.payment_policy)
    return persist(flow, [_rejected(refusal, ctx, recoverable=recoverable)])


def _rejected(error: PayflowError | None, ctx: Context, *, recoverable: bool) -> PaymentFailed:
    message = str(error) if error is not None else "the provider gave no answer"
    return PaymentFailed(
        at=ctx.now,
        code="provider_rejected",
        message=message,
        recoverable=recoverable,
        provider_status=None,
    )


# --- the answer to a cancel -----------------------------------------------------------------------


def _cancel_answered(flow: Flow, result: ProviderResult, ctx: Context) -> Decision:
    if result.intent is None:
        # Refused: the intent has moved on (the customer paid it, say). Re-read it first.
        return Decision(
            effects=(intent_call(flow, ProviderOp.RETRIEVE_INTENT, str(flow.intent_id)),)
        )
    return _after_cancel(flow, result.intent, ctx)


def _reread(flow: Flow, result: ProviderResult, ctx: Context) -> Decision:
    """The intent re-read after the provider refused the flow's confirm or cancel."""
    if awaited_op(flow) is ProviderOp.CONFIRM_INTENT:
        return _reread_after_refused_confirm(flow, result, ctx)
    if result.intent is not None:
        return _after_cancel(flow, result.intent, ctx)
    # Not even readable: the flow's last word on it is all there is.
    return NOTHING if flow.is_terminal else _cancelled_anyway(flow, flow.provider_status, ctx)


def _after_cancel(flow: Flow, intent: Intent, ctx: Context) -> Decision:
    """The flow's intent as the provider shows it after the flow's cancel: follow it."""
    status = intent.status
    if flow.is_terminal:  # ended before the answer: nothing moves it, but it may have been paid
        return _taken_after_the_end(flow, status)
    if status in CANCELLABLE:  # refused for another reason: the flow ends as the customer asked
        return _cancelled_anyway(flow, status, ctx)
    # Canceled, or paid first: every state a cancel is asked in follows either (a payment too,
    # in a recoverable FAILED), so the flow ends as the provider says.
    return persist(flow, status_events(flow, status, intent=intent, ctx=ctx))


def _cancelled_anyway(flow: Flow, status: str | None, ctx: Context) -> Decision:
    alert = Alert(
        name=AlertName.INTENT_NOT_CANCELLED,
        level=AlertLevel.WARNING,
        intent_id=flow.intent_id,
        provider_status=status,
    )
    return persist(flow, [Cancelled(at=ctx.now, provider_status=status)], alerts=(alert,))


def _taken_after_the_end(flow: Flow, status: str) -> Decision:
    """An operator must refund when the intent was paid; anything else is no news."""
    if status not in PAID:
        return NOTHING
    alert = Alert(
        name=AlertName.PAYMENT_TAKEN_AFTER_FLOW_ENDED,
        level=AlertLevel.ERROR,
        intent_id=flow.intent_id,
        provider_status=status,
    )
    return Decision(effects=(alert,))


_Answer = Callable[[Flow, ProviderResult, Context], Decision]
_ANSWERS: Mapping[ProviderOp, _Answer] = {
    ProviderOp.CREATE_INTENT: _intent_created,
    ProviderOp.CANCEL_INTENT: _cancel_answered,
    ProviderOp.RETRIEVE_INTENT: _reread,
}
