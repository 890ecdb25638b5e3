"""One contract, two providers: the dummy must answer as Stripe does (here: localstripe).

Every test runs twice, against `DummyProvider` and against `StripeProvider` talking to a real
localstripe process. Each backend names its own payment methods for "pays", "declines" and
"needs 3-D Secure" (localstripe only knows a few `pm_card_*` ids, so it gets PaymentMethods built
from test card numbers) and its own way for the customer to pass 3-D Secure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import pytest

from actors.provider import Intent, IntentStatus, Provider
from adapters.dummy_provider import DummyProvider
from adapters.stripe_provider import StripeProvider
from runtime.errors import ProviderRejected
from tests.localstripe import CARD_DECLINES, CARD_NEEDS_3DS, CARD_PAYS, LocalStripe

PAYS, DECLINES, NEEDS_3DS = "pays", "declines", "needs_3ds"


@dataclass
class Backend:
    """A provider under test plus the backend-specific ways to drive it."""

    provider: Provider
    payment_method: Callable[[str], Awaitable[str]]
    authenticate: Callable[[Intent, bool], Awaitable[None]]

    async def create(self, kind: str, key: str) -> Intent:
        return await self.provider.create_intent(
            amount=4200,
            currency="eur",
            payment_method=await self.payment_method(kind),
            metadata={"flow_id": key},
            idempotency_key=f"{key}:create:1",
        )

    async def create_and_confirm(self, kind: str, key: str) -> Intent:
        created = await self.create(kind, key)
        return await self.provider.confirm_intent(
            created.intent_id, idempotency_key=f"{key}:confirm:1"
        )


@asynccontextmanager
async def dummy_backend() -> AsyncIterator[Backend]:
    dummy = DummyProvider(push_delay=None)
    methods = {
        PAYS: "pm_card_visa",
        DECLINES: "pm_card_chargeDeclined",
        NEEDS_3DS: "pm_card_threeDSecure2Required",
    }

    async def payment_method(kind: str) -> str:
        return methods[kind]

    async def authenticate(intent: Intent, success: bool) -> None:
        await dummy.authenticate(intent.intent_id, success)

    try:
        yield Backend(provider=dummy, payment_method=payment_method, authenticate=authenticate)
    finally:
        await dummy.close()


def localstripe_backend(localstripe: LocalStripe) -> AbstractAsyncContextManager[Backend]:
    cards = {PAYS: CARD_PAYS, DECLINES: CARD_DECLINES, NEEDS_3DS: CARD_NEEDS_3DS}

    async def payment_method(kind: str) -> str:
        return await localstripe.create_card(cards[kind])

    async def authenticate(intent: Intent, success: bool) -> None:
        assert intent.client_secret is not None
        await localstripe.authenticate(intent.intent_id, intent.client_secret, success)

    @asynccontextmanager
    async def opened() -> AsyncIterator[Backend]:
        stripe = StripeProvider(localstripe.api_key, api_base=localstripe.base_url)
        try:
            yield Backend(provider=stripe, payment_method=payment_method, authenticate=authenticate)
        finally:
            await stripe.close()

    return opened()


Scenario = Callable[[Backend], Awaitable[None]]


@pytest.fixture(params=["dummy", "localstripe"])
def run_against(request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    """Runs a scenario on a fresh event loop against the parametrized backend."""

    def run(scenario: Scenario) -> None:
        async def main() -> None:
            opened: AbstractAsyncContextManager[Backend]
            if request.param == "dummy":
                opened = dummy_backend()
            else:
                opened = localstripe_backend(request.getfixturevalue("localstripe"))
            async with opened as backend:
                await scenario(backend)

        asyncio.run(main())

    return run


def test_card_that_pays_goes_from_requires_confirmation_to_succeeded(
    run_against: Callable[[Scenario], None],
) -> None:
    async def scenario(backend: Backend) -> None:
        card = await backend.payment_method(PAYS)
        created = await backend.provider.create_intent(
            amount=1999,
            currency="usd",
            payment_method=card,
            metadata={"flow_id": "flow-pays"},
            idempotency_key="flow-pays:create:1",
        )
        assert created.status == IntentStatus.REQUIRES_CONFIRMATION
        assert (created.amount, created.currency, created.payment_method) == (1999, "usd", card)
        assert created.client_secret is not None
        assert created.client_secret.startswith(f"{created.intent_id}_secret_")

        confirmed = await backend.provider.confirm_intent(
            created.intent_id, idempotency_key="flow-pays:confirm:1"
        )
        assert confirmed.status == IntentStatus.SUCCEEDED
        assert confirmed.last_error is None
        assert (await backend.provider.retrieve_intent(created.intent_id)).status == "succeeded"

    run_against(scenario)


def test_decline_is_an_answer_not_an_exception(run_against: Callable[[Scenario], None]) -> None:
    async def scenario(backend: Backend) -> None:
        declined = await backend.create_and_confirm(DECLINES, "flow-declined")
        assert declined.status == IntentStatus.REQUIRES_PAYMENT_METHOD
        assert declined.last_error is not None
        assert declined.last_error.code == "card_declined"
        assert declined.last_error.message
        again = await backend.provider.retrieve_intent(declined.intent_id)
        assert (again.status, again.last_error) == (declined.status, declined.last_error)

    run_against(scenario)


def test_a_new_intent_after_a_decline_can_succeed(run_against: Callable[[Scenario], None]) -> None:
    async def scenario(backend: Backend) -> None:
        declined = await backend.create_and_confirm(DECLINES, "flow-retry-1")
        paid = await backend.create_and_confirm(PAYS, "flow-retry-2")
        assert declined.intent_id != paid.intent_id
        assert paid.status == IntentStatus.SUCCEEDED

    run_against(scenario)


def test_three_d_secure_requires_action_then_succeeds(
    run_against: Callable[[Scenario], None],
) -> None:
    async def scenario(backend: Backend) -> None:
        challenged = await backend.create_and_confirm(NEEDS_3DS, "flow-3ds")
        assert challenged.status == IntentStatus.REQUIRES_ACTION
        assert challenged.next_action is not None
        assert challenged.next_action["type"] == "use_stripe_sdk"

        await backend.authenticate(challenged, True)
        done = await backend.provider.retrieve_intent(challenged.intent_id)
        assert done.status == IntentStatus.SUCCEEDED
        assert done.next_action is None

    run_against(scenario)


def test_failed_three_d_secure_asks_for_another_payment_method(
    run_against: Callable[[Scenario], None],
) -> None:
    async def scenario(backend: Backend) -> None:
        challenged = await backend.create_and_confirm(NEEDS_3DS, "flow-3ds-fail")
        await backend.authenticate(challenged, False)
        failed = await backend.provider.retrieve_intent(challenged.intent_id)
        assert failed.status == IntentStatus.REQUIRES_PAYMENT_METHOD
        assert failed.last_error is not None
        assert failed.last_error.code == "payment_intent_authentication_failure"
        assert failed.payment_method is None
        assert failed.next_action is None

    run_against(scenario)


def test_cancel_before_confirm_and_cancel_after_success_is_refused(
    run_against: Callable[[Scenario], None],
) -> None:
    async def scenario(backend: Backend) -> None:
        created = await backend.create(PAYS, "flow-cancel")
        cancelled = await backend.provider.cancel_intent(
            created.intent_id, idempotency_key="flow-cancel:cancel:1"
        )
        assert cancelled.status == IntentStatus.CANCELED
        assert (await backend.provider.retrieve_intent(created.intent_id)).status == "canceled"

        paid = await backend.create_and_confirm(PAYS, "flow-paid")
        with pytest.raises(ProviderRejected):
            await backend.provider.cancel_intent(
                paid.intent_id, idempotency_key="flow-paid:cancel:1"
            )
        assert (await backend.provider.retrieve_intent(paid.intent_id)).status == "succeeded"

    run_against(scenario)


def test_cancel_while_waiting_for_three_d_secure(run_against: Callable[[Scenario], None]) -> None:
    async def scenario(backend: Backend) -> None:
        challenged = await backend.create_and_confirm(NEEDS_3DS, "flow-3ds-cancel")
        cancelled = await backend.provider.cancel_intent(
            challenged.intent_id, idempotency_key="flow-3ds-cancel:cancel:1"
        )
        assert cancelled.status == IntentStatus.CANCELED
        assert cancelled.next_action is None

    run_against(scenario)


def test_confirming_twice_is_refused(run_against: Callable[[Scenario], None]) -> None:
    async def scenario(backend: Backend) -> None:
        paid = await backend.create_and_confirm(PAYS, "flow-twice")
        with pytest.raises(ProviderRejected):
            await backend.provider.confirm_intent(
                paid.intent_id, idempotency_key="flow-twice:confirm:2"
            )

    run_against(scenario)


def test_unknown_intent_and_unknown_payment_method_are_rejected(
    run_against: Callable[[Scenario], None],
) -> None:
    async def scenario(backend: Backend) -> None:
        with pytest.raises(ProviderRejected):
            await backend.provider.retrieve_intent("pi_doesnotexist")
        with pytest.raises(ProviderRejected):
            await backend.provider.create_intent(
                amount=100,
                currency="eur",
                payment_method="pm_no_such_method",
                metadata={},
                idempotency_key="flow-unknown:create:1",
            )

    run_against(scenario)
