"""The effect runner: provider calls on the loop thread, bounded retries under one key, results
told back as messages, latency recorded."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

from actors.messages import ProviderCall, ProviderOp, ProviderResult
from actors.provider import Intent
from adapters.dummy_provider import DummyProvider
from adapters.effects import LoopThread, ProviderEffects
from adapters.stripe_provider import StripeProvider
from runtime.backoff import Backoff
from runtime.errors import Internal, ProviderRejected, ProviderUnavailable
from tests.localstripe import LocalStripe, recording_proxy

FAST = Backoff(base=0.01, cap=0.02, max_retries=3)


class Inbox:
    """Stands where an actor ref would: what `tell` delivers, in order."""

    def __init__(self) -> None:
        self.messages: queue.Queue[object] = queue.Queue()

    def tell(self, message: object) -> None:
        self.messages.put(message)

    def result(self) -> ProviderResult:
        message = self.messages.get(timeout=10)
        assert isinstance(message, ProviderResult)
        return message


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


def _create(key: str, method: str = "pm_card_visa") -> ProviderCall:
    return ProviderCall(
        op=ProviderOp.CREATE_INTENT,
        flow_id="f1",
        idempotency_key=key,
        amount=4200,
        currency="eur",
        payment_method=method,
    )


@pytest.mark.parametrize(("fail_first", "succeeds"), [(2, True), (10, False)])
def test_unavailable_is_retried_with_the_same_key_a_bounded_number_of_times(
    loop: LoopThread, localstripe: LocalStripe, fail_first: int, succeeds: bool
) -> None:
    proxying = recording_proxy(localstripe.base_url, fail_first=fail_first)
    proxy = loop.run(proxying.__aenter__())
    provider = loop.run(_stripe(localstripe.api_key, proxy.url))
    latencies: list[tuple[str, str]] = []
    effects = ProviderEffects(
        provider, loop.loop, backoff=FAST, on_latency=lambda op, _, out: latencies.append((op, out))
    )
    inbox = Inbox()
    effects.provider_call(_create("f1:create_intent:1:3"), inbox)
    result = inbox.result()
    loop.run(provider.close())
    loop.run(proxying.__aexit__(None, None, None))
    keys = {seen.headers.get("Idempotency-Key") for seen in proxy.seen}
    assert keys == {"f1:create_intent:1:3"}
    if succeeds:
        assert result.intent is not None
        assert len(proxy.seen) == 3
        assert latencies[-1] == ("create_intent", "ok")
    else:
        assert isinstance(result.error, ProviderUnavailable)
        assert len(proxy.seen) == 1 + FAST.max_retries  # type: ignore[operator]
        assert [out for _, out in latencies] == ["unavailable"] * 4


async def _stripe(api_key: str, base: str) -> StripeProvider:
    return StripeProvider(api_key, api_base=base)


def test_rejected_comes_back_at_once_and_retrieve_needs_no_key(loop: LoopThread) -> None:
    dummy = DummyProvider(push_delay=None)
    effects = ProviderEffects(dummy, loop.loop, backoff=FAST)
    inbox = Inbox()
    effects.provider_call(_create("k-bad", method="pm_unknown"), inbox)
    assert isinstance(inbox.result().error, ProviderRejected)
    assert dummy.calls == [("create_intent", "k-bad")]
    effects.provider_call(_create("k-good"), inbox)
    created = inbox.result().intent
    assert created is not None
    retrieve = ProviderCall(
        op=ProviderOp.RETRIEVE_INTENT, flow_id="f1", intent_id=created.intent_id
    )
    effects.provider_call(retrieve, inbox)
    found = inbox.result().intent
    assert found is not None
    assert found.status == "requires_confirmation"


def test_a_post_without_a_key_is_refused_before_the_provider(loop: LoopThread) -> None:
    dummy = DummyProvider(push_delay=None)
    inbox = Inbox()
    call = ProviderCall(op=ProviderOp.CONFIRM_INTENT, flow_id="f1", intent_id="pi_1")
    ProviderEffects(dummy, loop.loop).provider_call(call, inbox)
    assert inbox.result().error is not None
    assert dummy.calls == []


class _Crashing(DummyProvider):
    async def confirm_intent(self, intent_id: str, *, idempotency_key: str) -> Intent:
        raise RuntimeError("provider bug")


def test_answered_calls_leave_nothing_running(loop: LoopThread) -> None:
    dummy = _Crashing(push_delay=None)
    effects = ProviderEffects(dummy, loop.loop, backoff=FAST)
    inbox = Inbox()
    calls = [_create(f"k{n}") for n in range(5)] + [_create("k-bad", method="pm_unknown")]
    calls.append(ProviderCall(op=ProviderOp.CONFIRM_INTENT, flow_id="f1", intent_id="pi_1"))
    calls.append(
        ProviderCall(
            op=ProviderOp.CONFIRM_INTENT, flow_id="f1", intent_id="pi_1", idempotency_key="c"
        )
    )
    for call in calls:
        effects.provider_call(call, inbox)
    results = [inbox.result() for _ in calls]
    assert sum(result.intent is not None for result in results) == 5
    crashed = [result for result in results if result.call.idempotency_key == "c"]
    assert isinstance(crashed[0].error, Internal)  # the crash reached the flow as data
    assert effects.in_flight == 0  # every task took itself out before telling its result
