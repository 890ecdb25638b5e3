"""StripeProvider against a real localstripe process, real sockets and real signed webhooks."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from actors.provider import IntentStatus
from adapters.provider_errors import with_retries
from adapters.stripe_provider import StripeProvider
from runtime.backoff import Backoff
from runtime.errors import (
    ConfigError,
    Internal,
    ProviderRejected,
    ProviderUnavailable,
)
from tests.localstripe import (
    CARD_DECLINES,
    CARD_NEEDS_3DS,
    LocalStripe,
    free_port,
    recording_proxy,
    serve,
)

SECRET = "whsec_payflowdtest"


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


@asynccontextmanager
async def stripe_at(api_base: str, *, request_timeout: float = 10) -> AsyncIterator[StripeProvider]:
    provider = StripeProvider(
        "sk_test_payflowd_secretkey", api_base=api_base, timeout=request_timeout
    )
    try:
        yield provider
    finally:
        await provider.close()


async def create(provider: StripeProvider, payment_method: str, key: str) -> str:
    created = await provider.create_intent(
        amount=2500,
        currency="eur",
        payment_method=payment_method,
        metadata={"flow_id": key},
        idempotency_key=f"{key}:create:1",
    )
    return created.intent_id


# --- idempotency keys on the wire ---------------------------------------------------------------


def test_every_post_carries_the_callers_idempotency_key(localstripe: LocalStripe) -> None:
    async def scenario() -> None:
        async with (
            recording_proxy(localstripe.base_url) as proxy,
            stripe_at(proxy.url) as provider,
        ):
            paid = await create(provider, "pm_card_visa", "flow-a")
            await provider.confirm_intent(paid, idempotency_key="flow-a:confirm:1")
            await provider.retrieve_intent(paid)
            other = await create(provider, "pm_card_visa", "flow-b")
            await provider.cancel_intent(other, idempotency_key="flow-b:cancel:1")

        sent = [(r.method, r.path, r.headers.get("Idempotency-Key")) for r in proxy.seen]
        assert sent == [
            ("POST", "/v1/payment_intents", "flow-a:create:1"),
            ("POST", f"/v1/payment_intents/{paid}/confirm", "flow-a:confirm:1"),
            ("GET", f"/v1/payment_intents/{paid}", None),
            ("POST", "/v1/payment_intents", "flow-b:create:1"),
            ("POST", f"/v1/payment_intents/{other}/cancel", "flow-b:cancel:1"),
        ]

    run(scenario())


def test_a_post_without_a_key_is_refused_before_anything_is_sent(localstripe: LocalStripe) -> None:
    async def scenario() -> None:
        async with (
            recording_proxy(localstripe.base_url) as proxy,
            stripe_at(proxy.url) as provider,
        ):
            with pytest.raises(Internal):
                await provider.create_intent(
                    amount=100,
                    currency="eur",
                    payment_method="pm_card_visa",
                    metadata={},
                    idempotency_key="",
                )
            with pytest.raises(Internal):
                await provider.confirm_intent("pi_x", idempotency_key="")
        assert proxy.seen == []

    run(scenario())


def test_retrying_an_unavailable_provider_resends_the_same_key(localstripe: LocalStripe) -> None:
    async def scenario() -> None:
        async with (
            recording_proxy(localstripe.base_url, fail_first=2) as proxy,
            stripe_at(proxy.url) as provider,
        ):
            created = await with_retries(
                lambda: provider.create_intent(
                    amount=700,
                    currency="eur",
                    payment_method="pm_card_visa",
                    metadata={},
                    idempotency_key="flow-r:create:1",
                    confirm=True,
                ),
                attempts=3,
                backoff=Backoff(base=0.01, cap=0.05, strategy="exponential"),
                rng=random.Random(1),
            )
        assert created.status == IntentStatus.SUCCEEDED
        keys = [request.headers.get("Idempotency-Key") for request in proxy.seen]
        assert keys == ["flow-r:create:1"] * 3

    run(scenario())


def test_the_sdk_own_retries_resend_the_same_key(localstripe: LocalStripe) -> None:
    async def scenario() -> None:
        async with recording_proxy(localstripe.base_url, fail_first=1) as proxy:
            provider = StripeProvider(
                localstripe.api_key, api_base=proxy.url, max_network_retries=1
            )
            try:
                intent_id = await create(provider, "pm_card_visa", "flow-sdk")
                created = await provider.retrieve_intent(intent_id)
            finally:
                await provider.close()
        assert created.status == IntentStatus.REQUIRES_CONFIRMATION
        keys = [
            request.headers.get("Idempotency-Key")
            for request in proxy.seen
            if request.method == "POST"
        ]
        assert keys == ["flow-sdk:create:1", "flow-sdk:create:1"]

    run(scenario())


# --- outcomes localstripe reaches only through this adapter ---------------------------------------


def test_decline_on_create_with_confirm_returns_the_declined_intent(
    localstripe: LocalStripe,
) -> None:
    async def scenario() -> None:
        async with stripe_at(localstripe.base_url) as provider:
            card = await localstripe.create_card(CARD_DECLINES)
            declined = await provider.create_intent(
                amount=900,
                currency="eur",
                payment_method=card,
                metadata={},
                idempotency_key="flow-d:create:1",
                confirm=True,
            )
            assert declined.status == IntentStatus.REQUIRES_PAYMENT_METHOD
            assert declined.last_error is not None
            assert declined.last_error.code == "card_declined"
            assert (await provider.retrieve_intent(declined.intent_id)).amount == 900

    run(scenario())


def test_a_decline_carrying_its_intent_needs_no_second_request() -> None:
    declined_intent = {
        "id": "pi_embedded",
        "object": "payment_intent",
        "status": "requires_payment_method",
        "amount": 300,
        "currency": "eur",
        "last_payment_error": {"code": "card_declined", "message": "Your card was declined."},
    }

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        error = {
            "type": "card_error",
            "code": "card_declined",
            "message": "Your card was declined.",
            "payment_intent": declined_intent,
        }
        return web.json_response({"error": error}, status=402)

    async def scenario() -> None:
        async with serve(answer) as stub, stripe_at(stub.url) as provider:
            declined = await provider.confirm_intent("pi_embedded", idempotency_key="k:c:1")
            assert [request.method for request in stub.seen] == ["POST"]
        assert declined.intent_id == "pi_embedded"
        assert declined.status == IntentStatus.REQUIRES_PAYMENT_METHOD
        assert declined.last_error is not None
        assert declined.last_error.code == "card_declined"

    run(scenario())


def test_pm_card_charge_customer_fail_declines(localstripe: LocalStripe) -> None:
    async def scenario() -> None:
        async with stripe_at(localstripe.base_url) as provider:
            intent_id = await create(provider, "pm_card_chargeCustomerFail", "flow-f")
            declined = await provider.confirm_intent(intent_id, idempotency_key="flow-f:c:1")
        assert declined.status == IntentStatus.REQUIRES_PAYMENT_METHOD
        assert declined.last_error is not None
        assert declined.last_error.code == "card_declined"

    run(scenario())


def test_three_d_secure_next_action_is_a_plain_mapping(localstripe: LocalStripe) -> None:
    async def scenario() -> None:
        async with stripe_at(localstripe.base_url) as provider:
            card = await localstripe.create_card(CARD_NEEDS_3DS)
            intent_id = await create(provider, card, "flow-3")
            challenged = await provider.confirm_intent(intent_id, idempotency_key="flow-3:c:1")
        assert challenged.status == IntentStatus.REQUIRES_ACTION
        assert challenged.next_action is not None
        assert json.loads(json.dumps(challenged.next_action))["type"] == "use_stripe_sdk"

    run(scenario())


def test_extra_create_params_reach_stripe(localstripe: LocalStripe) -> None:
    async def scenario() -> None:
        provider = StripeProvider(
            localstripe.api_key,
            api_base=localstripe.base_url,
            extra_create_params={"capture_method": "manual"},
        )
        try:
            intent_id = await create(provider, "pm_card_visa", "flow-m")
            held = await provider.confirm_intent(intent_id, idempotency_key="flow-m:c:1")
        finally:
            await provider.close()
        assert held.status == IntentStatus.REQUIRES_CAPTURE

    run(scenario())


# --- errors: what the caller does next ---------------------------------------------------------


def test_unknown_intent_is_rejected(localstripe: LocalStripe) -> None:
    async def scenario() -> None:
        async with stripe_at(localstripe.base_url) as provider:
            with pytest.raises(ProviderRejected, match="404"):
                await provider.retrieve_intent("pi_unknown")

    run(scenario())


def test_wrong_api_key_is_rejected_without_showing_the_key(localstripe: LocalStripe) -> None:
    async def scenario() -> None:
        provider = StripeProvider("pk_test_notasecretkey42", api_base=localstripe.base_url)
        try:
            with pytest.raises(ProviderRejected) as raised:
                await provider.retrieve_intent("pi_any")
        finally:
            await provider.close()
        assert "401" in str(raised.value)
        assert "pk_test_notasecretkey42" not in str(raised.value)
        assert raised.value.__cause__ is None
        assert "notasecretkey" not in repr(provider)

    run(scenario())


def test_provider_down_is_unavailable() -> None:
    async def scenario() -> None:
        async with stripe_at(f"http://127.0.0.1:{free_port()}") as provider:
            with pytest.raises(ProviderUnavailable) as raised:
                await create(provider, "pm_card_visa", "flow-down")
        assert "secretkey" not in str(raised.value)

    run(scenario())


@pytest.mark.parametrize("status", [429, 500, 503, 409])
def test_rate_limits_conflicts_and_server_errors_are_unavailable(status: int) -> None:
    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        error = {"error": {"type": "api_error", "message": "busy"}}
        return web.json_response(error, status=status)

    async def scenario() -> None:
        async with serve(answer) as stub, stripe_at(stub.url) as provider:
            with pytest.raises(ProviderUnavailable, match=str(status)):
                await provider.retrieve_intent("pi_x")

    run(scenario())


def test_a_provider_that_never_answers_times_out_as_unavailable() -> None:
    never = asyncio.Event()

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        await never.wait()
        return web.Response()

    async def scenario() -> None:
        async with serve(answer) as stub, stripe_at(stub.url, request_timeout=0.2) as provider:
            with pytest.raises(ProviderUnavailable):
                await provider.retrieve_intent("pi_slow")
            never.set()

    run(scenario())


def test_an_unreadable_answer_is_unavailable() -> None:
    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.json_response({"id": "pi_x", "status": "wandering", "amount": 1})

    async def scenario() -> None:
        async with serve(answer) as stub, stripe_at(stub.url) as provider:
            with pytest.raises(ProviderUnavailable, match="wandering"):
                await provider.retrieve_intent("pi_x")

    run(scenario())


def test_a_missing_api_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="STRIPE_API_KEY"):
        StripeProvider("")
