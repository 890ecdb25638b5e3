"""DummyProvider: what it adds over the shared contract (idempotency, pushes, latency, table)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs

from actors.provider import Intent, IntentStatus, ProviderEvent
from adapters import dummy_provider
from adapters.dummy_provider import TEST_PAYMENT_METHODS, DummyProvider, Outcome
from runtime.errors import Internal, ProviderRejected

EXPECTED_AFTER_CONFIRM = {
    Outcome.SUCCEED: IntentStatus.SUCCEEDED,
    Outcome.DECLINE: IntentStatus.REQUIRES_PAYMENT_METHOD,
    Outcome.AUTHENTICATE: IntentStatus.REQUIRES_ACTION,
}


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


@asynccontextmanager
async def dummy(**options: Any) -> AsyncIterator[DummyProvider]:
    provider = DummyProvider(**options)
    try:
        yield provider
    finally:
        await provider.close()


async def create(
    provider: DummyProvider, key: str, payment_method: str = "pm_card_visa", amount: int = 1000
) -> Intent:
    return await provider.create_intent(
        amount=amount,
        currency="eur",
        payment_method=payment_method,
        metadata={"flow_id": "f"},
        idempotency_key=key,
    )


class Collector:
    """An event sink that lets a test wait (bounded) for a number of pushed events."""

    def __init__(self) -> None:
        self.events: list[ProviderEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: ProviderEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, count: int) -> list[ProviderEvent]:
        async with asyncio.timeout(5):
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.events


@pytest.mark.parametrize(("payment_method", "outcome"), sorted(TEST_PAYMENT_METHODS.items()))
def test_each_test_payment_method_confirms_as_stripe_documents(
    payment_method: str, outcome: Outcome
) -> None:
    async def scenario() -> None:
        async with dummy(push_delay=None) as provider:
            created = await create(provider, "k:create", payment_method)
            confirmed = await provider.confirm_intent(created.intent_id, idempotency_key="k:c")
        assert confirmed.status == EXPECTED_AFTER_CONFIRM[outcome]
        assert (confirmed.last_error is not None) == (outcome is Outcome.DECLINE)
        assert (confirmed.next_action is not None) == (outcome is Outcome.AUTHENTICATE)

    run(scenario())


@pytest.mark.parametrize("latency", [0.0, 0.01])  # 0: the answer itself is saved, no future
def test_a_repeated_key_returns_the_same_intent_and_charges_once(latency: float) -> None:
    async def scenario() -> None:
        async with dummy(latency=latency, push_delay=None) as provider:
            first = await create(provider, "flow-1:create:1")
            again = await create(provider, "flow-1:create:1")
            assert again == first
            confirmed = await provider.confirm_intent(first.intent_id, idempotency_key="flow-1:c:1")
            replayed = await provider.confirm_intent(first.intent_id, idempotency_key="flow-1:c:1")
            assert replayed == confirmed
            assert confirmed.status == IntentStatus.SUCCEEDED
            assert provider.calls == [
                ("create_intent", "flow-1:create:1"),
                ("create_intent", "flow-1:create:1"),
                ("confirm_intent", "flow-1:c:1"),
                ("confirm_intent", "flow-1:c:1"),
            ]

    run(scenario())


@pytest.mark.parametrize("latency", [0.0, 0.05])  # 0: answered without leaving the loop pass
def test_concurrent_repeats_of_a_key_share_one_answer(latency: float) -> None:
    async def scenario() -> None:
        async with dummy(latency=latency, push_delay=None) as provider:
            answers = await asyncio.gather(*(create(provider, "same-key") for _ in range(3)))
            other = await create(provider, "other-key")
        assert answers[0] == answers[1] == answers[2]
        assert other.intent_id != answers[0].intent_id

    run(scenario())


def test_a_key_reused_with_other_parameters_is_rejected() -> None:
    async def scenario() -> None:
        async with dummy(push_delay=None) as provider:
            await create(provider, "flow-2:create:1", amount=1000)
            with pytest.raises(ProviderRejected, match="idempotency key"):
                await create(provider, "flow-2:create:1", amount=2000)

    run(scenario())


@pytest.mark.parametrize("latency", [0.0, 0.01])
def test_a_refused_request_does_not_use_up_its_key(latency: float) -> None:
    async def scenario() -> None:
        async with dummy(latency=latency, push_delay=None) as provider:
            with pytest.raises(ProviderRejected, match="pm_card_unknown"):
                await create(provider, "flow-3:create:1", "pm_card_unknown")
            corrected = await create(provider, "flow-3:create:1", "pm_card_visa")
        assert corrected.status == IntentStatus.REQUIRES_CONFIRMATION

    run(scenario())


def test_a_post_without_a_key_is_a_bug() -> None:
    async def scenario() -> None:
        async with dummy(push_delay=None) as provider:
            with pytest.raises(Internal):
                await create(provider, "")

    run(scenario())


@pytest.mark.parametrize(("amount", "currency"), [(0, "eur"), (-5, "eur"), (100, "EUR"), (1, "")])
def test_invalid_amounts_and_currencies_are_rejected(amount: int, currency: str) -> None:
    async def scenario() -> None:
        async with dummy(push_delay=None) as provider:
            with pytest.raises(ProviderRejected):
                await provider.create_intent(
                    amount=amount,
                    currency=currency,
                    payment_method="pm_card_visa",
                    metadata={},
                    idempotency_key="k",
                )

    run(scenario())


def test_authenticate_outside_requires_action_is_rejected_and_changes_nothing() -> None:
    async def scenario() -> None:
        async with dummy(push_delay=None) as provider:
            created = await create(provider, "k")
            with pytest.raises(ProviderRejected, match="authenticate"):
                await provider.authenticate(created.intent_id, True)
            assert await provider.retrieve_intent(created.intent_id) == created

    run(scenario())


@pytest.mark.parametrize("push_delay", [0.0, 0.01])  # 0: every event is due at once
def test_status_changes_are_pushed_to_the_sink_in_order(push_delay: float) -> None:
    async def scenario() -> None:
        sink = Collector()
        async with dummy(push_delay=push_delay) as provider:
            provider.set_event_sink(sink)
            created = await create(provider, "k", "pm_card_threeDSecure2Required")
            await provider.confirm_intent(created.intent_id, idempotency_key="k:c")
            await provider.authenticate(created.intent_id, True)
            events = await sink.wait_for(3)
        assert [event.status for event in events] == [
            "requires_confirmation",
            "requires_action",
            "succeeded",
        ]
        assert {(event.intent_id, event.source) for event in events} == {
            (created.intent_id, "dummy")
        }
        assert len({event.event_id for event in events}) == 3

    run(scenario())


def test_an_event_after_the_outbox_ran_dry_is_still_pushed() -> None:
    async def scenario() -> None:
        sink = Collector()
        async with dummy(push_delay=0.0) as provider:
            provider.set_event_sink(sink)
            created = await create(provider, "k")
            await sink.wait_for(1)  # everything sent: the pusher waits for the next event
            await asyncio.sleep(0.01)
            await provider.confirm_intent(created.intent_id, idempotency_key="k:c")
            events = await sink.wait_for(2)
        assert [event.status for event in events] == ["requires_confirmation", "succeeded"]

    run(scenario())


def test_a_failing_sink_is_logged_and_later_events_still_arrive() -> None:
    async def scenario() -> None:
        delivered = Collector()

        async def flaky(event: ProviderEvent) -> None:
            if not delivered.events and event.status == "requires_confirmation":
                delivered.events.append(event)
                raise RuntimeError("sink broke")
            await delivered(event)

        with capture_logs() as logs:
            async with dummy(push_delay=0.0) as provider:
                provider.set_event_sink(flaky)
                created = await create(provider, "k")
                await provider.confirm_intent(created.intent_id, idempotency_key="k:c")
                events = await delivered.wait_for(2)
        assert events[-1].status == "succeeded"
        assert [entry["event"] for entry in logs] == ["dummy_push_failed"]

    run(scenario())


def test_without_push_delay_nothing_is_pushed() -> None:
    async def scenario() -> None:
        silent_sink, loud_sink = Collector(), Collector()
        async with dummy(push_delay=None) as silent, dummy(push_delay=0.01) as loud:
            silent.set_event_sink(silent_sink)
            loud.set_event_sink(loud_sink)
            await create(silent, "k")
            await create(loud, "k")
            await loud_sink.wait_for(1)
        assert silent_sink.events == []

    run(scenario())


def test_latency_does_not_block_the_loop() -> None:
    async def scenario() -> None:
        async with dummy(latency=0.3, push_delay=None) as provider:
            first = asyncio.create_task(create(provider, "a"))
            second = asyncio.create_task(create(provider, "b"))
            # One turn of the loop runs both tasks up to their first suspension. A blocking
            # delay would have finished each call inside that turn; a sleeping one leaves both
            # started and unanswered, overlapping on the one loop.
            await asyncio.sleep(0)
            assert provider.calls == [("create_intent", "a"), ("create_intent", "b")]
            assert not first.done()
            assert not second.done()
            assert (await first).intent_id != (await second).intent_id

    run(scenario())


def test_the_same_seed_gives_the_same_ids() -> None:
    async def ids(seed: int) -> tuple[str, str | None]:
        async with dummy(rng_seed=seed, push_delay=None) as provider:
            intent = await create(provider, "k")
        return intent.intent_id, intent.client_secret

    async def scenario() -> None:
        assert await ids(7) == await ids(7)
        assert await ids(7) != await ids(8)

    run(scenario())


def test_ids_and_secrets_look_like_stripes_and_do_not_repeat() -> None:
    async def scenario() -> None:
        sink = Collector()
        async with dummy(push_delay=0.0) as provider:
            provider.set_event_sink(sink)
            intents = [await create(provider, f"k{n}") for n in range(50)]
            events = await sink.wait_for(50)
        token = "[A-Za-z0-9]{24}"
        for intent in intents:
            assert re.fullmatch(f"pi_{token}", intent.intent_id)
            assert re.fullmatch(f"{intent.intent_id}_secret_{token}", str(intent.client_secret))
        assert all(re.fullmatch(f"evt_{token}", event.event_id) for event in events)
        assert len({intent.intent_id for intent in intents}) == 50
        assert len({event.event_id for event in events}) == 50

    run(scenario())


def test_memory_stays_bounded_the_oldest_intents_and_calls_are_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dummy is the embedded default: a daemon left running must not grow without end."""
    monkeypatch.setattr(dummy_provider, "REMEMBERED", 5)
    monkeypatch.setattr(dummy_provider, "CALLS_KEPT", 4)

    async def scenario() -> None:
        async with dummy(push_delay=None) as provider:
            intents = [await create(provider, f"k{n}") for n in range(12)]
            assert len(provider.calls) <= 2 * 4
            assert provider.calls[-1] == ("create_intent", "k11")
            latest = await provider.retrieve_intent(intents[-1].intent_id)
            assert latest.intent_id == intents[-1].intent_id
            with pytest.raises(ProviderRejected):
                await provider.retrieve_intent(intents[0].intent_id)
            again = await create(provider, "k11")  # a recent key still answers the same
            assert again.intent_id == intents[-1].intent_id

    run(scenario())
