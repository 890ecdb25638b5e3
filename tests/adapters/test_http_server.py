"""The HTTP server over real sockets: webhook verification, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from actors.provider import ProviderEvent
from adapters.dummy_provider import DummyProvider
from adapters.http_server import MAX_WEBHOOK_BYTES, HttpServer
from adapters.metrics import Metrics
from adapters.stripe_provider import parse_webhook
from runtime.errors import Overloaded
from tests.adapters.test_metrics import MONITORING_POINTS

SECRET = "whsec_testsecret"


class StripeWebhook:
    """The real Stripe verification (`parse_webhook`); delivered events are kept for asserts."""

    def __init__(self, secret: str = SECRET, *, overloaded: bool = False) -> None:
        self.secret = secret
        self.overloaded = overloaded
        self.delivered: list[ProviderEvent] = []

    def verify(self, body: bytes, signature: str | None) -> ProviderEvent | None:
        return parse_webhook(body, signature, self.secret)

    async def deliver(self, event: ProviderEvent) -> None:
        if self.overloaded:
            raise Overloaded("tracker mailbox full")
        self.delivered.append(event)


def event_body(
    *, event_type: str = "payment_intent.succeeded", intent: str = "pi_123", marker: str = ""
) -> bytes:
    event = {
        "id": "evt_1",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": {"id": intent, "object": "payment_intent", "status": "succeeded"}},
        "livemode": False,
        "metadata_marker": marker,
    }
    return json.dumps(event).encode()


def sign(body: bytes, *, secret: str = SECRET, at: int | None = None) -> str:
    stamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


@asynccontextmanager
async def running(
    webhook: StripeWebhook | None = None,
    ready: Callable[[], bool] = lambda: True,
    metrics: Metrics | None = None,
) -> AsyncIterator[tuple[HttpServer, aiohttp.ClientSession, str]]:
    server = HttpServer("127.0.0.1", 0, webhook=webhook, ready=ready, metrics=metrics or Metrics())
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield server, session, f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def post_webhook(
    session: aiohttp.ClientSession, base: str, body: bytes, signature: str | None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    async with session.post(f"{base}/webhooks/stripe", data=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_a_validly_signed_event_is_delivered_and_answered_200() -> None:
    webhook = StripeWebhook()

    async def scenario() -> None:
        async with running(webhook) as (_server, session, base):
            body = event_body()
            status, answer = await post_webhook(session, base, body, sign(body))
            assert (status, answer) == (200, {"received": True})

    run(scenario)
    assert [(e.event_id, e.intent_id, e.status) for e in webhook.delivered] == [
        ("evt_1", "pi_123", "succeeded")
    ]


BAD_REQUESTS: dict[str, Callable[[bytes], tuple[bytes, str | None]]] = {
    "forged": lambda body: (body, sign(body, secret="whsec_attacker")),
    "missing": lambda body: (body, None),
    "malformed": lambda body: (body, "v1=deadbeef;t=oops"),
    "stale": lambda body: (body, sign(body, at=int(time.time()) - 301)),
    "tampered": lambda body: (body.replace(b"succeeded", b"canceled"), sign(body)),
    "unparsable": lambda _body: (b"{not json", sign(b"{not json")),
    "not an event": lambda _body: (b"[1, 2]", sign(b"[1, 2]")),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_a_bad_signature_or_body_is_400_and_delivers_nothing(case: str) -> None:
    webhook = StripeWebhook()

    async def scenario() -> None:
        async with running(webhook) as (_server, session, base):
            body, signature = BAD_REQUESTS[case](event_body())
            status, answer = await post_webhook(session, base, body, signature)
            assert status == 400
            assert answer["error"]["code"] == "invalid_webhook"

    run(scenario)
    assert webhook.delivered == []


def test_an_event_about_something_else_is_200_and_delivers_nothing() -> None:
    webhook = StripeWebhook()

    async def scenario() -> None:
        async with running(webhook) as (_server, session, base):
            body = event_body(event_type="customer.created")
            status, answer = await post_webhook(session, base, body, sign(body))
            assert status == 200
            assert answer["received"] is True

    run(scenario)
    assert webhook.delivered == []


def test_without_a_webhook_secret_webhooks_are_503_with_the_reason() -> None:
    async def scenario() -> None:
        async with running(webhook=None) as (_server, session, base):
            body = event_body()
            status, answer = await post_webhook(session, base, body, sign(body))
            assert status == 503
            assert "STRIPE_WEBHOOK_SECRET" in answer["error"]["message"]

    run(scenario)


def test_an_oversized_body_is_413_and_delivers_nothing() -> None:
    webhook = StripeWebhook()

    async def scenario() -> None:
        async with running(webhook) as (_server, session, base):
            body = b"x" * (MAX_WEBHOOK_BYTES + 1)
            async with session.post(
                f"{base}/webhooks/stripe",
                data=io.BytesIO(body),  # raw bytes this large would block the client's loop
                headers={"Stripe-Signature": sign(body)},
            ) as response:
                assert response.status == 413

    run(scenario)
    assert webhook.delivered == []


def test_a_full_mailbox_answers_503_so_stripe_retries() -> None:
    async def scenario() -> None:
        async with running(StripeWebhook(overloaded=True)) as (_server, session, base):
            body = event_body()
            status, answer = await post_webhook(session, base, body, sign(body))
            assert (status, answer["error"]["code"]) == (503, "overloaded")

    run(scenario)


def test_neither_body_nor_signature_reaches_the_log() -> None:
    marker = "customer-secret-marker-42"
    signatures: list[str] = []

    async def scenario() -> None:
        async with running(StripeWebhook()) as (_server, session, base):
            body = event_body(marker=marker)
            signatures.extend([sign(body), sign(body, secret="whsec_forger")])
            for signature in signatures:
                await post_webhook(session, base, body, signature)

    with capture_logs() as logs:
        run(scenario)
    events = [entry["event"] for entry in logs]
    assert "webhook_received" in events
    assert "webhook_rejected" in events
    text = repr(logs)
    assert marker not in text
    assert all(signature.split("v1=")[1] not in text for signature in signatures)


def test_healthz_is_200_and_readyz_follows_readiness() -> None:
    flag = {"ready": False}

    async def scenario() -> None:
        async with running(ready=lambda: flag["ready"]) as (_server, session, base):
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 503
            flag["ready"] = True
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 200

    run(scenario)


def test_metrics_serves_every_monitoring_point_in_prometheus_text() -> None:
    metrics = Metrics()
    metrics.set_flows({"COMPLETED": 3})

    async def scenario() -> None:
        async with (
            running(metrics=metrics) as (_server, session, base),
            session.get(f"{base}/metrics") as response,
        ):
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert set(MONITORING_POINTS) <= set(families)
        flows = {s.labels["state"]: s.value for s in families["payflowd_flows"].samples}
        assert flows["COMPLETED"] == 3

    run(scenario)


def test_unknown_paths_are_404_and_wrong_methods_405() -> None:
    async def scenario() -> None:
        async with running(StripeWebhook()) as (_server, session, base):
            async with session.get(f"{base}/nope") as response:
                assert response.status == 404
            async with session.get(f"{base}/webhooks/stripe") as response:
                assert response.status == 405
            async with session.post(f"{base}/metrics") as response:
                assert response.status == 405

    run(scenario)


def test_stop_closes_the_port() -> None:
    async def scenario() -> None:
        server = HttpServer("127.0.0.1", 0, webhook=None, ready=lambda: True, metrics=Metrics())
        await server.start()
        assert server.accepting
        port = server.port
        await server.stop()
        assert not server.accepting
        with pytest.raises(OSError, match=r"Connect call failed|refused"):
            await asyncio.open_connection("127.0.0.1", port)

    run(scenario)


def test_the_dummy_3ds_hook_authenticates_by_client_secret_and_the_provider_pushes_it() -> None:
    """`POST /dummy/authenticate`: the customer's 3-D Secure step, for clients outside the process;
    only the holder of the intent's client_secret can take it, and only with the dummy provider."""
    provider = DummyProvider(push_delay=0.0)
    pushed: list[ProviderEvent] = []
    intents: list[str] = []

    async def sink(event: ProviderEvent) -> None:
        pushed.append(event)

    async def scenario() -> None:
        provider.set_event_sink(sink)
        intent = await provider.create_intent(
            amount=4200, currency="eur", payment_method="pm_card_threeDSecure2Required",
            metadata={}, idempotency_key="k1", confirm=True,
        )  # fmt: skip
        assert intent.status == "requires_action"
        assert intent.client_secret
        intents.append(intent.intent_id)
        server = HttpServer(
            "127.0.0.1", 0, webhook=None, ready=lambda: True, metrics=Metrics(),
            dummy_authenticate=provider.authenticate_secret,
        )  # fmt: skip
        await server.start()
        url = f"http://127.0.0.1:{server.port}/dummy/authenticate"
        try:
            async with aiohttp.ClientSession() as session:
                wrong = {"client_secret": f"{intent.intent_id}_secret_guess"}
                async with session.post(url, json=wrong) as response:
                    assert response.status == 404
                async with session.post(url, json={"success": True}) as response:
                    assert response.status == 400
                before = time.time()
                async with session.post(url, json={"client_secret": intent.client_secret}) as r:
                    assert r.status == 200
                    answer = await r.json()
                async with session.post(url, json={"client_secret": intent.client_secret}) as r:
                    assert r.status == 409  # no longer in requires_action
        finally:
            await server.stop()
            await provider.close()
        assert answer["intent_id"] == intent.intent_id
        assert answer["status"] == "succeeded"
        assert before <= answer["event_at"] <= time.time()

    run(scenario)
    assert (pushed[-1].intent_id, pushed[-1].status) == (intents[0], "succeeded")


def test_without_the_dummy_provider_there_is_no_3ds_hook() -> None:
    async def scenario() -> None:
        async with (
            running() as (_server, session, base),
            session.post(f"{base}/dummy/authenticate", json={}) as response,
        ):
            assert response.status in (404, 405)

    run(scenario)
