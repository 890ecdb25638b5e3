"""The provider calls a flow waits for, derived from its persisted state alone.

Pure (no I/O, no pykka). Because a call follows from the flow and nothing else, a flow loaded
after a crash re-issues exactly the call it had persisted the cause of, with the same
idempotency key:
- `{flow_id}:create_intent:{attempt}:{version}`: one intent per selected method (switching the
  method within an attempt creates a new one, hence the version of the `method_selected`);
- `{flow_id}:confirm_intent:{attempt}`: one confirm per attempt;
- `{flow_id}:cancel_intent:{attempt}:{version}`: a cancel the customer asked for, one per request
  (a request voided by a payment that got through first and a later one must not share a key:
  the provider would replay the first one's refusal);
- `{flow_id}:cancel_intent:{attempt}`: an expired flow cancels its intent once;
- `{flow_id}:cancel_intent:{intent_id}`: an intent the flow lets go of while it could still be
  charged (`let_go_intent_calls`), cancelled once as a consequence of that event rather than
  derived from the flow, which no longer names it.

A refused confirm or cancel is followed by a re-read of the intent (`retrieve_intent`, which
changes nothing at the provider); `answers_awaited` matches it to the call it follows.

`actors.flow_process` decides when these calls go out and what their answers mean.
"""

from __future__ import annotations

from actors.flow_core import CANCELLABLE, Flow, FlowState
from actors.messages import ProviderCall, ProviderOp
from actors.provider import IntentStatus

__all__ = [
    "CANCELLABLE",
    "CANCEL_AFTER_END_STATES",
    "answers_awaited",
    "awaited_op",
    "cancelling",
    "idempotency_key",
    "intent_call",
    "is_pending",
    "let_go_intent_calls",
    "pending_calls",
]

_S = FlowState
# Ended flows that cancel their intent after the fact (see `awaited_op`): the daemon reloads the
# recently ended ones at start, so a crash before that call does not lose it.
CANCEL_AFTER_END_STATES: frozenset[FlowState] = frozenset({_S.CANCELLED, _S.EXPIRED})
# The calls whose refusal is followed by a re-read of the intent.
_REREAD_AFTER: frozenset[ProviderOp] = frozenset(
    {ProviderOp.CONFIRM_INTENT, ProviderOp.CANCEL_INTENT}
)


def pending_calls(flow: Flow) -> tuple[ProviderCall, ...]:
    """The provider call this flow's persisted state is waiting for, if any."""
    op = awaited_op(flow)
    if op is None:
        return ()
    if op is ProviderOp.CREATE_INTENT:
        return (_create_call(flow, str(flow.payment_method)),)
    return (intent_call(flow, op, str(flow.intent_id)),)


def awaited_op(flow: Flow) -> ProviderOp | None:
    """The op of `pending_calls(flow)`, without building the call: an answer only needs to be
    matched against it (a create's call is on the intent-less flow, the others on its intent)."""
    if flow.state is _S.PAYMENT_ACTIVE and flow.intent_id is None and flow.payment_method:
        return ProviderOp.CREATE_INTENT
    confirming = flow.provider_status == IntentStatus.REQUIRES_CONFIRMATION
    if flow.state is _S.PAYMENT_PROCESSING and flow.intent_id is not None and confirming:
        return ProviderOp.CONFIRM_INTENT
    if cancelling(flow):
        return ProviderOp.CANCEL_INTENT
    # An expired flow (or one cancelled before cancel requests were recorded) cancels the intent
    # after the fact.
    ended = flow.state in CANCEL_AFTER_END_STATES
    if ended and flow.intent_id is not None and flow.provider_status in CANCELLABLE:
        return ProviderOp.CANCEL_INTENT
    return None


def let_go_intent_calls(before: Flow, after: Flow) -> tuple[ProviderCall, ...]:
    """A cancel, once, for an intent the provider could still charge when the flow lets go of
    it: the intent a `retry` or a switch of method leaves behind, or the intent of a flow that
    just failed for good. The browser still holds its client_secret, so Stripe.js could pay it
    and nothing here would know. Sent as a consequence of the event that lets go, keyed by the
    intent; a crash between the two leaves that intent uncancelled (the flow no longer names it,
    so nothing derives the call again)."""
    intent_id = before.intent_id
    if intent_id is not None and after.intent_id != intent_id:
        return _cancel_once(before, intent_id)
    failed_for_good = after.state is _S.FAILED and after.is_terminal and not before.is_terminal
    if failed_for_good and after.intent_id is not None:
        return _cancel_once(after, after.intent_id)
    return ()


def _cancel_once(flow: Flow, intent_id: str) -> tuple[ProviderCall, ...]:
    if flow.provider_status not in CANCELLABLE:
        return ()
    key = f"{flow.flow_id}:{ProviderOp.CANCEL_INTENT.value}:{intent_id}"
    call = ProviderCall(
        op=ProviderOp.CANCEL_INTENT, flow_id=flow.flow_id, intent_id=intent_id, idempotency_key=key
    )
    return (call,)


def cancelling(flow: Flow) -> bool:
    """Whether a cancel the customer asked for waits for the provider's answer."""
    return (
        flow.cancel_requested
        and flow.intent_id is not None
        and flow.provider_status in CANCELLABLE
        and not flow.is_terminal
    )


def idempotency_key(flow: Flow, op: ProviderOp) -> str:
    """The key `flow`'s call of `op` carries (see the module docstring)."""
    if op is ProviderOp.CREATE_INTENT or (op is ProviderOp.CANCEL_INTENT and cancelling(flow)):
        return f"{flow.flow_id}:{op.value}:{flow.attempts}:{flow.version}"
    return f"{flow.flow_id}:{op.value}:{flow.attempts}"


def _create_call(flow: Flow, payment_method: str) -> ProviderCall:
    return ProviderCall(
        op=ProviderOp.CREATE_INTENT,
        flow_id=flow.flow_id,
        idempotency_key=idempotency_key(flow, ProviderOp.CREATE_INTENT),
        amount=flow.amount,
        currency=flow.currency,
        payment_method=payment_method,
        metadata={"flow_id": flow.flow_id},
    )


def intent_call(flow: Flow, op: ProviderOp, intent_id: str) -> ProviderCall:
    """A call of `op` on an intent the flow already has (confirm, cancel, re-read)."""
    return ProviderCall(
        op=op,
        flow_id=flow.flow_id,
        intent_id=intent_id,
        idempotency_key=idempotency_key(flow, op),
    )


def answers_awaited(flow: Flow, call: ProviderCall) -> bool:
    """Whether `call` is still what the flow waits for (not superseded by a newer decision):
    the awaited call itself, or the re-read of the flow's intent that follows its refusal."""
    op = awaited_op(flow)
    if op is None:
        return False
    if call.op is ProviderOp.RETRIEVE_INTENT:
        return op in _REREAD_AFTER and call.intent_id == flow.intent_id
    return call.idempotency_key == idempotency_key(flow, op)


# A call to send again later (after `ProviderUnavailable`) goes out only while still awaited.
is_pending = answers_awaited
