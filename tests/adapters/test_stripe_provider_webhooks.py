"""StripeProvider webhooks: real signed deliveries from localstripe, and every bad request."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from actors.provider import ProviderEvent
from adapters.http_server import WebhookHandler
from adapters.stripe_provider import StripeProvider, parse_webhook
from runtime.errors import ConfigError, InvalidWebhook, Overloaded
from tests.localstripe import LocalStripe, serve, sign_webhook

SECRET = "whsec_payflowdtest"


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


@asynccontextmanager
async def stripe_at(api_base: str) -> AsyncIterator[StripeProvider]:
    provider = StripeProvider("sk_test_payflowd_secretkey", api_base=api_base)
    try:
        yield provider
    finally:
        await provider.close()


def test_a_real_localstripe_webhook_parses_into_a_provider_event(localstripe: LocalStripe) -> None:
    received: list[ProviderEvent] = []

    async def sink(event: ProviderEvent) -> None:
        received.append(event)

    async def ok(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.Response()

    async def scenario() -> None:
        async with serve(ok) as hooks, stripe_at(localstripe.base_url) as provider:
            await localstripe.register_webhook("payflowd", hooks.url + "/webhooks/stripe", SECRET)
            provider.set_event_sink(sink)
            created = await provider.create_intent(
                amount=2500,
                currency="eur",
                payment_method="pm_card_visa",
                metadata={},
                idempotency_key="flow-w:create:1",
            )
            intent_id = created.intent_id
            await provider.confirm_intent(intent_id, idempotency_key="flow-w:c:1")
            delivery = await hooks.wait_for(lambda seen: intent_id.encode() in seen.body)
            handler: WebhookHandler = provider.webhooks(SECRET)  # what the HTTP server takes
            event = handler.verify(delivery.body, delivery.headers.get("Stripe-Signature"))
            assert event is not None
            await handler.deliver(event)
        assert (event.intent_id, event.status, event.source) == (intent_id, "succeeded", "webhook")
        assert event.event_id.startswith("evt_")
        assert abs(event.created - time.time()) < 300
        assert received == [event]

    run(scenario())


def test_webhooks_need_a_secret_and_a_wired_sink() -> None:
    async def scenario() -> None:
        async with stripe_at("http://127.0.0.1:9") as provider:
            with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET"):
                provider.webhooks("")
            handler = provider.webhooks(SECRET)
            body = _event()
            event = handler.verify(body, sign(body))
            assert event is not None
            with pytest.raises(Overloaded):
                await handler.deliver(event)
            assert SECRET not in repr(handler)

    run(scenario())


def _event(event_type: str = "payment_intent.succeeded") -> bytes:
    intent = {"id": "pi_123", "object": "payment_intent", "status": "succeeded"}
    event = {
        "id": "evt_123",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": intent},
    }
    return json.dumps(event).encode()


def sign(body: bytes, timestamp: int | None = None) -> str:
    return sign_webhook(body, SECRET, timestamp)


def test_a_valid_signature_is_accepted() -> None:
    body = _event()
    event = parse_webhook(body, sign_webhook(body, SECRET), SECRET)
    assert event == ProviderEvent(
        event_id="evt_123",
        intent_id="pi_123",
        status="succeeded",
        created=event.created if event else 0.0,
        source="webhook",
    )


def test_an_event_not_about_an_intent_is_valid_but_ignored() -> None:
    body = _event("charge.succeeded")
    assert parse_webhook(body, sign_webhook(body, SECRET), SECRET) is None


SignatureCase = Callable[[bytes], "tuple[bytes, str | None]"]
NOT_AN_INTENT_EVENT = b'{"id": "evt_1", "object": "event", "type": "payment_intent.x"}'


@pytest.mark.parametrize(
    ("case", "forge"),
    [
        ("missing", lambda body: (body, None)),
        ("empty", lambda body: (body, "")),
        ("malformed", lambda body: (body, "not-a-signature")),
        ("no v1 scheme", lambda body: (body, "t=1700000000,v0=abc")),
        ("wrong secret", lambda body: (body, sign_webhook(body, "whsec_someoneelse"))),
        ("stale", lambda body: (body, sign(body, int(time.time()) - 301))),
        ("tampered body", lambda body: (body.replace(b"pi_123", b"pi_999"), sign(body))),
        ("not json", lambda body: (b"{not json", sign(b"{not json"))),
        ("not an event", lambda body: (b"[1, 2]", sign(b"[1, 2]"))),
        ("event without intent", lambda body: (NOT_AN_INTENT_EVENT, sign(NOT_AN_INTENT_EVENT))),
        (
            "unknown status",
            lambda body: (
                body.replace(b"succeeded", b"odd"),
                sign(body.replace(b"succeeded", b"odd")),
            ),
        ),
        ("not utf-8", lambda body: (b"\xff\xfe", sign(b"\xff\xfe"))),
    ],
)
def test_a_bad_signature_or_body_is_rejected(case: str, forge: SignatureCase) -> None:
    body, header = forge(_event())
    with pytest.raises(InvalidWebhook) as raised:
        parse_webhook(body, header, SECRET)
    assert SECRET not in str(raised.value)
    assert raised.value.code == "invalid_webhook"
