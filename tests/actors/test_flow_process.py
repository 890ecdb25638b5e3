"""flow_process: decisions as data, checked without any actor, journal or provider."""

from __future__ import annotations

import dataclasses

import pytest

from actors import flow_process as fp
from actors.commands import AttachBooking, Cancel, CreateFlow, Join, Retry, SelectMethod, Submit
from actors.flow_core import Flow, FlowState, Submitted, apply
from actors.messages import (
    ProviderCall,
    ProviderObservation,
    ProviderOp,
    ProviderResult,
    StopTracking,
    TrackIntent,
)
from actors.provider import Intent, PaymentError
from actors.tokens import flow_token, verify_token
from runtime.errors import (
    Internal,
    InvalidTransition,
    ProviderRejected,
    ProviderUnavailable,
    VersionConflict,
)

CTX = fp.Context(now=1000.0)
T = "pft_x"


def _run(flow: Flow, decision: fp.Decision) -> Flow:
    assert decision.error is None, decision.error
    return fp.versions(flow, decision.events)[-1] if decision.events else flow


def _active(method: str = "pm_card_visa") -> Flow:
    flow = Flow.initial("f1")
    for command in (
        CreateFlow(amount=500, currency="eur", pre_id="pre1", idempotency_key="k1"),
        AttachBooking(id="f1", token=T, booking_id="b1"),
        SelectMethod(id="f1", token=T, payment_method=method),
    ):
        flow = _run(flow, fp.decide(flow, command, CTX))
    return flow


def _intent(status: str = "requires_confirmation", **extra: object) -> Intent:
    return Intent(
        intent_id="pi_1",
        status=status,
        amount=500,
        currency="eur",
        client_secret="pi_1_secret_z",
        **extra,  # type: ignore[arg-type]
    )


def _with_intent() -> Flow:
    flow = _active()
    (call,) = fp.pending_calls(flow)
    return _run(flow, fp.on_provider_result(flow, ProviderResult(call=call, intent=_intent()), CTX))


def test_create_binds_ids_and_idempotency_key() -> None:
    command = CreateFlow(amount=500, currency="eur", pre_id="pre1", idempotency_key="k1")
    decision = fp.decide(Flow.initial("f1"), command, CTX)
    assert decision.reply is fp.ReplyKind.CREATED
    assert decision.aliases == (("f1", "id"), ("pre1", "id"), ("k1", "idempotency"))
    assert _run(Flow.initial("f1"), decision).state is FlowState.PRE_BOOKING


def test_version_is_checked_before_the_transition() -> None:
    flow = _active()
    decision = fp.decide(flow, Retry(id="f1", token=T, expect_version=1), CTX)
    assert isinstance(decision.error, VersionConflict)
    assert decision.events == ()
    refused = fp.decide(flow, Retry(id="f1", token=T), CTX)
    assert isinstance(refused.error, InvalidTransition)


def test_select_method_persists_then_creates_an_intent_with_a_stable_key() -> None:
    flow = _active()
    (call,) = fp.pending_calls(flow)
    assert call.op is ProviderOp.CREATE_INTENT
    assert call.idempotency_key == "f1:create_intent:1:3"
    assert call.payment_method == "pm_card_visa"
    assert fp.resume(flow, CTX)[0] == call  # after a crash: the same call, the same key


def test_intent_created_binds_the_intent_and_starts_tracking() -> None:
    flow = _active()
    (call,) = fp.pending_calls(flow)
    decision = fp.on_provider_result(flow, ProviderResult(call=call, intent=_intent()), CTX)
    assert decision.aliases == (("pi_1", "intent"),)
    assert TrackIntent(intent_id="pi_1", status="requires_confirmation") in decision.effects
    assert _run(flow, decision).client_secret == "pi_1_secret_z"


def test_a_stale_create_result_is_ignored() -> None:
    flow = _active()
    (old,) = fp.pending_calls(flow)
    switched = _run(
        flow, fp.decide(flow, SelectMethod(id="f1", token=T, payment_method="pm_x"), CTX)
    )
    assert fp.on_provider_result(switched, ProviderResult(call=old, intent=_intent()), CTX) == (
        fp.Decision()
    )


def test_submit_confirms_with_a_key_per_attempt() -> None:
    flow = _with_intent()
    decision = fp.decide(flow, Submit(id="f1", token=T), CTX)
    after = _run(flow, decision)
    (call,) = fp.pending_calls(after)
    assert call == ProviderCall(
        op=ProviderOp.CONFIRM_INTENT,
        flow_id="f1",
        intent_id="pi_1",
        idempotency_key="f1:confirm_intent:1",
    )
    assert call in decision.effects


def test_decline_fails_recoverably_then_finally() -> None:
    flow = _run(_with_intent(), fp.decide(_with_intent(), Submit(id="f1", token=T), CTX))
    (call,) = fp.pending_calls(flow)
    declined = _intent(
        "requires_payment_method", last_error=PaymentError(code="card_declined", message="no")
    )
    failed = _run(
        flow, fp.on_provider_result(flow, ProviderResult(call=call, intent=declined), CTX)
    )
    assert failed.state is FlowState.FAILED
    assert failed.error is not None
    assert failed.error.recoverable
    strict = fp.Context(now=1.0, retry_limit=0)
    final = _run(
        flow, fp.on_provider_result(flow, ProviderResult(call=call, intent=declined), strict)
    )
    assert final.error is not None
    assert not final.error.recoverable
    assert final.is_terminal


def test_unavailable_is_retried_later_with_the_same_call() -> None:
    flow = _active()
    (call,) = fp.pending_calls(flow)
    decision = fp.on_provider_result(
        flow, ProviderResult(call=call, error=ProviderUnavailable("x")), CTX
    )
    assert decision.effects == (fp.CallLater(call=call, delay=CTX.call_retry_delay),)
    assert decision.events == ()


def test_rejected_create_fails_for_good() -> None:
    flow = _active()
    (call,) = fp.pending_calls(flow)
    decision = fp.on_provider_result(
        flow, ProviderResult(call=call, error=ProviderRejected("bad")), CTX
    )
    failed = _run(flow, decision)
    assert failed.error is not None
    assert failed.error.code == "provider_rejected"
    assert failed.is_terminal
    assert fp.NotifyTerminal() in decision.effects


def test_cancel_cancels_the_intent_and_notifies() -> None:
    flow = _with_intent()
    decision = fp.decide(flow, Cancel(id="f1", token=T), CTX)
    kinds = [type(e) for e in decision.effects]
    assert StopTracking in kinds
    assert fp.NotifyTerminal in kinds
    cancel = [e for e in decision.effects if isinstance(e, ProviderCall)]
    assert [c.op for c in cancel] == [ProviderOp.CANCEL_INTENT]


def test_observation_moves_the_flow_forward() -> None:
    flow = _run(_with_intent(), fp.decide(_with_intent(), Submit(id="f1", token=T), CTX))
    seen = ProviderObservation(intent_id="pi_1", status="succeeded")
    done = _run(flow, fp.on_observation(flow, seen, CTX))
    assert done.state is FlowState.COMPLETED
    assert fp.on_observation(done, seen, CTX) == fp.Decision()


def test_presence_and_expiry() -> None:
    flow = _with_intent()
    assert fp.on_presence(flow, False, CTX).effects == (fp.ScheduleExpiry(delay=300.0),)
    assert fp.on_presence(flow, True, CTX).effects == (fp.CancelExpiry(),)
    expired = _run(flow, fp.on_expiry(flow, CTX))
    assert expired.state is FlowState.EXPIRED
    assert [c.op for c in fp.pending_calls(expired)] == [ProviderOp.CANCEL_INTENT]
    paying = _run(flow, fp.decide(flow, Submit(id="f1", token=T), CTX))
    assert fp.on_expiry(paying, CTX).events == ()  # still tracked to its end


def test_resume_tracks_and_starts_the_window() -> None:
    flow = apply(_with_intent(), _submitted())
    effects = fp.resume(flow, CTX)
    assert isinstance(effects[0], ProviderCall)
    assert effects[0].op is ProviderOp.CONFIRM_INTENT
    assert TrackIntent(intent_id="pi_1", status="requires_confirmation") in effects
    assert fp.ScheduleExpiry(delay=300.0) in effects


def test_join_is_not_a_flow_command() -> None:
    with pytest.raises(Internal):
        fp.decide(_active(), Join(id="f1", token=T), CTX)


def test_tokens_verify_only_their_flow() -> None:
    token = flow_token("secret", "f1")
    assert token.startswith("pft_")
    assert verify_token("secret", "f1", token)
    assert not verify_token("secret", "f2", token)
    assert not verify_token("other", "f1", token)


def _submitted() -> Submitted:
    return Submitted(at=1.0)


def _confirming() -> tuple[Flow, ProviderCall]:
    flow = _run(_with_intent(), fp.decide(_with_intent(), Submit(id="f1", token=T), CTX))
    (confirm,) = fp.pending_calls(flow)
    return flow, confirm


def _refused_confirm_rereads(flow: Flow, confirm: ProviderCall) -> ProviderCall:
    refused = ProviderResult(call=confirm, error=ProviderRejected("unexpected state"))
    decision = fp.on_provider_result(flow, refused, CTX)
    assert decision.events == ()  # nothing is decided on a refusal alone
    (reread,) = decision.effects
    assert isinstance(reread, ProviderCall)
    assert (reread.op, reread.intent_id) == (ProviderOp.RETRIEVE_INTENT, "pi_1")
    return reread


def test_a_refused_confirm_on_an_intent_the_client_already_paid_completes_the_flow() -> None:
    flow, confirm = _confirming()
    reread = _refused_confirm_rereads(flow, confirm)
    paid = ProviderResult(call=reread, intent=_intent("succeeded"))
    done = _run(flow, fp.on_provider_result(flow, paid, CTX))
    assert done.state is FlowState.COMPLETED
    assert done.provider_status == "succeeded"


def test_a_refused_confirm_on_an_intent_still_unconfirmed_fails_for_good() -> None:
    flow, confirm = _confirming()
    reread = _refused_confirm_rereads(flow, confirm)
    unchanged = ProviderResult(call=reread, intent=_intent("requires_confirmation"))
    failed = _run(flow, fp.on_provider_result(flow, unchanged, CTX))
    assert failed.state is FlowState.FAILED
    assert failed.error is not None
    assert (failed.error.code, failed.is_terminal) == ("provider_rejected", True)


def test_an_unanswered_reread_is_asked_again_and_a_stale_one_is_ignored() -> None:
    flow, confirm = _confirming()
    reread = _refused_confirm_rereads(flow, confirm)
    down = ProviderResult(call=reread, error=ProviderUnavailable("x"))
    assert fp.on_provider_result(flow, down, CTX).effects == (
        fp.CallLater(call=reread, delay=CTX.call_retry_delay),
    )
    paid = _run(
        flow,
        fp.on_provider_result(flow, ProviderResult(call=reread, intent=_intent("succeeded")), CTX),
    )
    late = ProviderResult(call=reread, intent=_intent("requires_confirmation"))
    assert fp.on_provider_result(paid, late, CTX) == fp.Decision()


def test_a_decision_carries_the_flow_after_each_of_its_events() -> None:
    # The shell takes the new versions from `steps` instead of applying the events again.
    flow = _with_intent()
    submitted = fp.decide(flow, Submit(id="f1", token=T), CTX)
    assert submitted.steps == tuple(fp.versions(flow, submitted.events))
    assert [step.version for step in submitted.steps] == [flow.version + 1]
    (call,) = fp.pending_calls(submitted.steps[-1])
    paid = _intent("succeeded")
    outside = fp.on_observation(  # success seen from outside: processing, then succeeded
        flow, ProviderObservation(intent_id="pi_1", status="succeeded"), CTX
    )
    assert [step.state for step in outside.steps] == [
        FlowState.PAYMENT_PROCESSING,
        FlowState.COMPLETED,
    ]
    assert outside.steps == tuple(fp.versions(flow, outside.events))
    done = fp.on_provider_result(submitted.steps[-1], ProviderResult(call=call, intent=paid), CTX)
    assert done.steps[-1].state is FlowState.COMPLETED
    refused = fp.decide(flow, Submit(id="f1", token=T, expect_version=1), CTX)
    assert (refused.events, refused.steps) == ((), ())


def test_the_payment_policy_follows_the_configured_retry_limit() -> None:
    limits = [fp.Context(now=1.0, retry_limit=n).payment_policy.retries for n in (0, 3, 0, 1)]
    assert limits == [0, 3, 0, 1]


def test_answers_are_matched_on_the_pending_key_without_building_calls() -> None:
    flow = _with_intent()
    submitted = fp.decide(flow, Submit(id="f1", token=T), CTX).steps[-1]
    (confirm,) = fp.pending_calls(submitted)
    assert fp.is_pending(submitted, confirm)
    older = dataclasses.replace(confirm, idempotency_key="f1:confirm_intent:0")
    assert not fp.is_pending(submitted, older)
    assert fp.on_provider_result(submitted, ProviderResult(call=older, intent=None), CTX) == (
        fp.Decision()
    )
    reread = dataclasses.replace(
        confirm, op=ProviderOp.RETRIEVE_INTENT, idempotency_key="f1:retrieve_intent:1"
    )
    other_intent = dataclasses.replace(reread, intent_id="pi_9")
    paid = _intent("succeeded")
    assert fp.on_provider_result(
        submitted, ProviderResult(call=other_intent, intent=paid), CTX
    ) == (fp.Decision())
    followed = fp.on_provider_result(submitted, ProviderResult(call=reread, intent=paid), CTX)
    assert followed.steps[-1].state is FlowState.COMPLETED
