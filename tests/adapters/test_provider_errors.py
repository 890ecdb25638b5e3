"""The one translation table from Stripe's answers to the domain, on literal payloads."""

from __future__ import annotations

import asyncio
import random

import pytest

from actors.provider import IntentStatus, PaymentError, ProviderEvent
from adapters.provider_errors import (
    event_from_payload,
    intent_from_payload,
    is_transient_status,
    redact,
    with_retries,
)
from runtime.backoff import Backoff
from runtime.errors import ProviderRejected, ProviderUnavailable

DECLINED_INTENT = {
    "id": "pi_1",
    "object": "payment_intent",
    "status": "requires_payment_method",
    "amount": 1500,
    "currency": "eur",
    "client_secret": "pi_1_secret_abc",
    "payment_method": {"id": "pm_1", "object": "payment_method"},
    "next_action": None,
    "last_payment_error": {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
    },
}


def test_a_declined_intent_maps_every_field() -> None:
    intent = intent_from_payload(DECLINED_INTENT)
    assert intent.intent_id == "pi_1"
    assert intent.status is IntentStatus.REQUIRES_PAYMENT_METHOD
    assert (intent.amount, intent.currency) == (1500, "eur")
    assert intent.client_secret == "pi_1_secret_abc"
    assert intent.payment_method == "pm_1"  # an expanded payment method becomes its id
    assert intent.next_action is None
    assert intent.last_error == PaymentError(
        code="card_declined",
        message="Your card has insufficient funds.",
        decline_code="insufficient_funds",
    )


def test_next_action_is_copied_into_a_plain_dict() -> None:
    action = {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}}
    payload = {**DECLINED_INTENT, "status": "requires_action", "next_action": action}
    intent = intent_from_payload(payload)
    assert intent.next_action == action
    assert type(intent.next_action) is dict


@pytest.mark.parametrize("status", [status.value for status in IntentStatus])
def test_every_stripe_status_is_known(status: str) -> None:
    assert intent_from_payload({**DECLINED_INTENT, "status": status}).status == status


@pytest.mark.parametrize(
    "broken",
    [
        {**DECLINED_INTENT, "status": "teleported"},
        {key: value for key, value in DECLINED_INTENT.items() if key != "amount"},
        {**DECLINED_INTENT, "amount": "lots"},
    ],
)
def test_an_unreadable_intent_is_a_failed_answer(broken: dict[str, object]) -> None:
    with pytest.raises(ProviderUnavailable):
        intent_from_payload(broken)


def test_an_error_message_never_carries_a_secret() -> None:
    payload = {
        **DECLINED_INTENT,
        "last_payment_error": {"code": "x", "message": "bad pi_1_secret_abc for sk_test_abc123"},
    }
    error = intent_from_payload(payload).last_error
    assert error is not None
    assert error.message == "bad [redacted] for [redacted]"


@pytest.mark.parametrize(
    "secret", ["sk_test_4eC39HqLyjWDarjtT1", "rk_live_abc", "whsec_xyz", "pi_3Ab_secret_Zy9"]
)
def test_redact_masks_keys_and_client_secrets(secret: str) -> None:
    assert redact(f"before {secret} after") == "before [redacted] after"


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        *[(None, True), (500, True), (502, True), (429, True), (409, True)],
        *[(400, False), (401, False), (402, False), (403, False), (404, False)],
    ],
)
def test_which_answers_are_worth_retrying(status: int | None, transient: bool) -> None:
    assert is_transient_status(status) is transient


def test_a_payment_intent_event_becomes_a_provider_event() -> None:
    payload = {
        "id": "evt_1",
        "type": "payment_intent.payment_failed",
        "created": 1700000000,
        "data": {"object": DECLINED_INTENT},
    }
    assert event_from_payload(payload) == ProviderEvent(
        event_id="evt_1",
        intent_id="pi_1",
        status="requires_payment_method",
        created=1700000000.0,
        source="webhook",
    )


def test_other_events_are_ignored() -> None:
    assert event_from_payload({"id": "evt_2", "type": "charge.refunded"}) is None


class Flaky:
    """Fails with `error` for the first `failures` calls, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "answer"


FAST = Backoff(base=0.001, cap=0.002, strategy="exponential")


def test_with_retries_retries_transient_failures_until_an_answer() -> None:
    flaky = Flaky(2, ProviderUnavailable("down"))
    assert asyncio.run(with_retries(flaky, attempts=3, backoff=FAST)) == "answer"
    assert flaky.calls == 3


def test_with_retries_gives_up_after_its_attempts() -> None:
    flaky = Flaky(5, ProviderUnavailable("down"))
    with pytest.raises(ProviderUnavailable):
        asyncio.run(with_retries(flaky, attempts=3, backoff=FAST, rng=random.Random(0)))
    assert flaky.calls == 3


def test_with_retries_stops_when_the_backoff_is_exhausted() -> None:
    flaky = Flaky(5, ProviderUnavailable("down"))
    limited = Backoff(base=0.001, cap=0.002, max_retries=1, strategy="linear")
    with pytest.raises(ProviderUnavailable):
        asyncio.run(with_retries(flaky, attempts=10, backoff=limited))
    assert flaky.calls == 2


def test_with_retries_never_retries_a_rejection() -> None:
    flaky = Flaky(1, ProviderRejected("bad request"))
    with pytest.raises(ProviderRejected):
        asyncio.run(with_retries(flaky, attempts=3, backoff=FAST))
    assert flaky.calls == 1
