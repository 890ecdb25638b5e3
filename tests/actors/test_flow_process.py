"""flow_process: decisions as data, checked without any actor, journal or provider."""

from __future__ import annotations

import dataclasses

import pytest

from actors import flow_process as fp
from actors.commands import AttachBooking, Cancel, CreateFlow, Join, Retry, SelectMethod, Submit
from actors.flow_core import Cancelled, CancelRequested, Flow, FlowState, Submitted, apply
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


_DECLINED = _intent(
    "requires_payment_method", last_error=PaymentError(code="card_declined", message="no")
)


def _declined(ctx: fp.Context = CTX) -> tuple[Flow, fp.Decision]:
    """A submitted payment declined: the flow after it, and the decision that failed it."""
    flow = _run(_with_intent(), fp.decide(_with_intent(), Submit(id="f1", token=T), CTX))
    (call,) = fp.pending_calls(flow)
    decision = fp.on_provider_result(flow, ProviderResult(call=call, intent=_DECLINED), ctx)
    return _run(flow, decision), decision


def _cancels(decision: fp.Decision) -> list[tuple[str | None, str]]:
    return [
        (e.intent_id, e.idempotency_key)
        for e in decision.effects
        if isinstance(e, ProviderCall) and e.op is ProviderOp.CANCEL_INTENT
    ]


def test_a_declined_intent_paid_from_outside_completes_the_flow() -> None:
    # Stripe's own advice after a decline: confirm the same intent again with another card.
    failed, decision = _declined()
    assert StopTracking() not in decision.effects  # still watched while recoverable
    paid = ProviderObservation(intent_id="pi_1", status="succeeded")
    done = _run(failed, fp.on_observation(failed, paid, CTX))
    assert (done.state, done.error, done.provider_status) == (
        FlowState.COMPLETED,
        None,
        "succeeded",
    )


def test_an_intent_the_flow_lets_go_of_is_cancelled_once() -> None:
    failed, _ = _declined()
    retried = fp.decide(failed, Retry(id="f1", token=T), CTX)
    assert _cancels(retried) == [("pi_1", "f1:cancel_intent:pi_1")]
    assert StopTracking() in retried.effects
    switched = fp.decide(_with_intent(), SelectMethod(id="f1", token=T, payment_method="pm_x"), CTX)
    assert _cancels(switched) == [("pi_1", "f1:cancel_intent:pi_1")]
    final, ended = _declined(fp.Context(now=1.0, retry_limit=0))
    assert final.is_terminal
    assert _cancels(ended) == [("pi_1", "f1:cancel_intent:pi_1")]
    (cancel,) = [e for e in ended.effects if isinstance(e, ProviderCall)]
    answer = ProviderResult(call=cancel, intent=_intent("canceled"))
    assert fp.on_provider_result(final, answer, CTX) == fp.Decision()  # nothing moves it


def test_unavailable_is_retried_later_with_the_same_call() -> None:
    flow = _active()
    (call,) = fp.pending_calls(flow)
    decision = fp.on_provider_result(
        flow, ProviderResult(call=call, error=ProviderUnavailable("x")), CTX
    )
    assert decision.effects == (fp.CallLater(call=call, delay=CTX.call_retry_delay),)
    assert decision.events == ()


def test_a_refused_create_fails_the_attempt_as_a_decline_would() -> None:
    # A mistyped payment method: the customer may pick another one, within the policy.
    flow = _active("pm_does_not_exist")
    (call,) = fp.pending_calls(flow)
    refused = ProviderResult(call=call, error=ProviderRejected("no such PaymentMethod"))
    failed = _run(flow, fp.on_provider_result(flow, refused, CTX))
    assert failed.error is not None
    assert (failed.error.code, failed.error.recoverable) == ("provider_rejected", True)
    assert not failed.is_terminal
    again = _run(failed, fp.decide(failed, Retry(id="f1", token=T), CTX))
    assert again.state is FlowState.PAYMENT_PENDING
    strict = fp.Context(now=1.0, retry_limit=0)
    final = _run(flow, fp.on_provider_result(flow, refused, strict))
    assert final.is_terminal
    assert fp.NotifyTerminal() in fp.on_provider_result(flow, refused, strict).effects


def test_a_command_the_state_refuses_is_invalid_transition_before_its_event_is_built() -> None:
    booking = _run(
        Flow.initial("f1"), fp.decide(Flow.initial("f1"), CreateFlow(amount=5, currency="eur"), CTX)
    )
    for command in (
        SelectMethod(id="f1", token=T, payment_method="pm_card_visa"),
        Submit(id="f1", token=T),
        Retry(id="f1", token=T),
    ):
        decision = fp.decide(booking, command, CTX)
        assert isinstance(decision.error, InvalidTransition), command
        assert (decision.events, decision.effects) == ((), ())


def test_cancel_without_an_intent_to_stop_ends_the_flow_at_once() -> None:
    flow = _active()  # the intent is not created yet
    decision = fp.decide(flow, Cancel(id="f1", token=T), CTX)
    assert [type(e) for e in decision.events] == [Cancelled]
    assert fp.NotifyTerminal() in decision.effects
    assert not [e for e in decision.effects if isinstance(e, ProviderCall)]
    assert _run(flow, decision).state is FlowState.CANCELLED


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


def test_a_refused_confirm_on_an_intent_still_unconfirmed_fails_within_the_policy() -> None:
    # Nothing was charged: like a decline, the customer may try again while the policy allows.
    flow, confirm = _confirming()
    reread = _refused_confirm_rereads(flow, confirm)
    unchanged = ProviderResult(call=reread, intent=_intent("requires_confirmation"))
    decision = fp.on_provider_result(flow, unchanged, CTX)
    failed = _run(flow, decision)
    assert failed.state is FlowState.FAILED
    assert failed.error is not None
    assert (failed.error.code, failed.error.recoverable) == ("provider_rejected", True)
    again = _run(failed, fp.decide(failed, Retry(id="f1", token=T), CTX))
    assert again.state is FlowState.PAYMENT_PENDING
    strict = fp.Context(now=1.0, retry_limit=0)
    final = _run(flow, fp.on_provider_result(flow, unchanged, strict))
    assert final.is_terminal


def test_an_unanswered_reread_isasked_again_and_a_stale_one_is_ignored() -> None:
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


# --- cancel: asked of the provider first while the intent could still be paid ------------------


def _challenged() -> Flow:
    flow, confirm = _confirming()
    challenge = _intent("requires_action", next_action={"type": "use_stripe_sdk"})
    return _run(
        flow, fp.on_provider_result(flow, ProviderResult(call=confirm, intent=challenge), CTX)
    )


def _cancel_requested(flow: Flow) -> tuple[Flow, ProviderCall]:
    decision = fp.decide(flow, Cancel(id="f1", token=T), CTX)
    assert [type(e) for e in decision.events] == [CancelRequested]
    asked = _run(flow, decision)
    assert (asked.state, asked.version, asked.cancel_requested) == (
        flow.state,
        flow.version + 1,
        True,
    )
    (call,) = [e for e in decision.effects if isinstance(e, ProviderCall)]
    assert decision.effects == (fp.Publish(), call)  # no notification, tracking goes on
    assert (call.op, call.intent_id, call.idempotency_key) == (
        ProviderOp.CANCEL_INTENT,
        "pi_1",
        f"f1:cancel_intent:1:{asked.version}",  # one key per request (see flow_calls)
    )
    return asked, call


def test_cancel_in_three_d_secure_ends_cancelled_once_the_provider_canceled() -> None:
    asked, call = _cancel_requested(_challenged())
    answer = ProviderResult(call=call, intent=_intent("canceled"))
    decision = fp.on_provider_result(asked, answer, CTX)
    done = _run(asked, decision)
    assert (done.state, done.provider_status) == (FlowState.CANCELLED, "canceled")
    assert fp.NotifyTerminal() in decision.effects
    assert StopTracking() in decision.effects


def test_a_repeated_cancel_is_acked_again_without_a_second_call() -> None:
    asked, _ = _cancel_requested(_challenged())
    again = fp.decide(asked, Cancel(id="f1", token=T), CTX)
    assert (again.error, again.events, again.effects) == (None, (), ())
    assert again.reply is fp.ReplyKind.ACK


def test_after_a_crash_the_requested_cancel_is_sent_again_with_its_key() -> None:
    asked, call = _cancel_requested(_with_intent())
    assert fp.pending_calls(asked) == (call,)
    assert call in fp.resume(asked, CTX)


def test_nothing_new_starts_while_a_cancel_is_on_its_way() -> None:
    asked, _ = _cancel_requested(_with_intent())
    for command in (Submit(id="f1", token=T), SelectMethod(id="f1", token=T, payment_method="x")):
        assert isinstance(fp.decide(asked, command, CTX).error, InvalidTransition)


def _refused(flow: Flow, call: ProviderCall) -> ProviderCall:
    decision = fp.on_provider_result(
        flow, ProviderResult(call=call, error=ProviderRejected("no")), CTX
    )
    assert decision.events == ()  # a refusal alone decides nothing
    (reread,) = decision.effects
    assert isinstance(reread, ProviderCall)
    assert (reread.op, reread.intent_id) == (ProviderOp.RETRIEVE_INTENT, "pi_1")
    return reread


def test_a_cancel_refused_because_the_customer_paid_first_completes_the_flow() -> None:
    asked, call = _cancel_requested(_with_intent())
    reread = _refused(asked, call)
    decision = fp.on_provider_result(
        asked, ProviderResult(call=reread, intent=_intent("succeeded")), CTX
    )
    assert [step.state for step in decision.steps] == [
        FlowState.PAYMENT_PROCESSING,
        FlowState.COMPLETED,
    ]
    assert decision.steps[-1].provider_status == "succeeded"
    assert not any(isinstance(e, fp.Alert) for e in decision.effects)


def test_a_cancel_refused_for_another_reason_cancels_the_flow_with_a_warning() -> None:
    asked, call = _cancel_requested(_challenged())
    reread = _refused(asked, call)
    still = ProviderResult(call=reread, intent=_intent("requires_action"))
    decision = fp.on_provider_result(asked, still, CTX)
    done = _run(asked, decision)
    assert (done.state, done.provider_status) == (FlowState.CANCELLED, "requires_action")
    assert (
        fp.Alert(
            name=fp.AlertName.INTENT_NOT_CANCELLED,
            level=fp.AlertLevel.WARNING,
            intent_id="pi_1",
            provider_status="requires_action",
        )
        in decision.effects
    )


def test_a_reread_showing_the_intent_canceled_cancels_the_flow() -> None:
    asked, call = _cancel_requested(_with_intent())
    reread = _refused(asked, call)
    gone = ProviderResult(call=reread, intent=_intent("canceled"))
    assert _run(asked, fp.on_provider_result(asked, gone, CTX)).state is FlowState.CANCELLED


def test_news_while_a_cancel_is_on_its_way() -> None:
    asked, call = _cancel_requested(_challenged())
    canceled = ProviderObservation(intent_id="pi_1", status="canceled")
    ended = _run(asked, fp.on_observation(asked, canceled, CTX))
    assert (ended.state, ended.provider_status, ended.error) == (
        FlowState.CANCELLED,
        "canceled",
        None,
    )
    passed = ProviderObservation(intent_id="pi_1", status="succeeded")
    paid = _run(asked, fp.on_observation(asked, passed, CTX))
    assert paid.state is FlowState.COMPLETED
    late_refusal = ProviderResult(call=call, error=ProviderRejected("already succeeded"))
    assert fp.on_provider_result(paid, late_refusal, CTX) == fp.Decision()


def test_a_cancelasked_again_after_a_voided_one_carries_a_key_of_its_own() -> None:
    # A payment that got through first voids the request; if the intent comes back to 3-D
    # Secure and the customer cancels again, the provider must not replay the first refusal.
    asked, first = _cancel_requested(_challenged())
    moving = ProviderObservation(intent_id="pi_1", status="processing")
    voided = _run(asked, fp.on_observation(asked, moving, CTX))
    assert (voided.state, voided.cancel_requested) == (FlowState.PAYMENT_PROCESSING, False)
    again = ProviderObservation(intent_id="pi_1", status="requires_action", next_action={})
    challenged = _run(voided, fp.on_observation(voided, again, CTX))
    assert challenged.state is FlowState.REQUIRES_ACTION
    asked_again, second = _cancel_requested(challenged)
    assert second.idempotency_key != first.idempotency_key
    late = ProviderResult(call=first, error=ProviderRejected("replayed refusal"))
    assert not fp.is_pending(asked_again, first)
    assert fp.on_provider_result(asked_again, late, CTX) == fp.Decision()


def test_an_unanswered_cancel_and_its_reread_are_sent_again_later() -> None:
    asked, call = _cancel_requested(_with_intent())
    down = ProviderResult(call=call, error=ProviderUnavailable("x"))
    assert fp.on_provider_result(asked, down, CTX).effects == (
        fp.CallLater(call=call, delay=CTX.call_retry_delay),
    )
    reread = _refused(asked, call)
    assert fp.is_pending(asked, reread)  # the timer's RetryCall goes out again


def test_a_flow_with_a_cancel_on_its_way_does_not_expire() -> None:
    # It ends as the customer asked once the provider answers, not as `expired`.
    asked, _call = _cancel_requested(_with_intent())
    decision = fp.on_expiry(asked, CTX)
    assert decision.events == ()
    assert decision.effects == (fp.ScheduleExpiry(delay=CTX.preserve_window),)


def test_an_expired_flow_whose_intent_was_paid_asks_an_operator_to_refund() -> None:
    expired = _run(_with_intent(), fp.on_expiry(_with_intent(), CTX))
    (call,) = fp.pending_calls(expired)
    reread = _refused(expired, call)
    paid = ProviderResult(call=reread, intent=_intent("succeeded"))
    decision = fp.on_provider_result(expired, paid, CTX)
    assert decision.events == ()
    assert decision.effects == (
        fp.Alert(
            name=fp.AlertName.PAYMENT_TAKEN_AFTER_FLOW_ENDED,
            level=fp.AlertLevel.ERROR,
            intent_id="pi_1",
            provider_status="succeeded",
        ),
    )
    unpaid = ProviderResult(call=call, intent=_intent("canceled"))
    assert fp.on_provider_result(expired, unpaid, CTX) == fp.Decision()


def test_a_failed_attempt_whose_intent_could_still_be_paid_cancels_it_first() -> None:
    flow, confirm = _confirming()
    declined = _intent(
        "requires_payment_method", last_error=PaymentError(code="card_declined", message="no")
    )
    failed = _run(
        flow, fp.on_provider_result(flow, ProviderResult(call=confirm, intent=declined), CTX)
    )
    asked, call = _cancel_requested(failed)
    assert isinstance(fp.decide(asked, Retry(id="f1", token=T), CTX).error, InvalidTransition)
    done = _run(
        asked,
        fp.on_provider_result(asked, ProviderResult(call=call, intent=_intent("canceled")), CTX),
    )
    assert (done.state, done.provider_status) == (FlowState.CANCELLED, "canceled")
