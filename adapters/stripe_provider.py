"""The Stripe payment provider: the only module of payflowd that imports the stripe SDK.

Every call uses the SDK's `*_async` methods over its aiohttp client, so it runs on the I/O loop
without blocking it (the SDK would pick httpx if installed; we pass the aiohttp client explicitly
because aiohttp is already a dependency and so the timeout is ours). Every POST carries the
caller's deterministic idempotency key; the SDK would otherwise invent a random one per call, and a
retry after a crash could charge twice.

Errors are translated at this boundary (`map_exceptions`, httpcore style) into the one hierarchy of
runtime/errors.py, grouped by what the caller does next:

- a card decline is not an exception: the intent comes back in `requires_payment_method` with
  `last_error` set, because choosing another payment method is the normal way forward;
- no answer, a timeout, 409 (idempotency key in flight), 429 and 5xx -> `ProviderUnavailable`
  (retry with backoff; the SDK's own retries are off by default, the flow owns that policy);
- any other 4xx (invalid request, unknown id, bad API key) -> `ProviderRejected` (do not retry).

Messages never carry the API key or a client secret, and the original SDK exception is not
chained, so a logged traceback cannot leak what the SDK put in its own message.

Stripe pushes status changes by webhook, not through this object's calls: `webhooks(secret)`
gives the HTTP server its `WebhookHandler` (`verify` a request, then `deliver` the event), and
delivery goes to the sink registered with `set_event_sink`, the same wiring as the dummy's pushes.

Create sends only what localstripe accepts (it answers 400 to any parameter it does not know).
Real Stripe enables "automatic payment methods" by default, and a server-side confirm then asks for
a `return_url` unless redirects are ruled out; deployments against real Stripe pass
`extra_create_params={"automatic_payment_methods": {"enabled": True, "allow_redirects": "never"}}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import stripe

from actors.provider import EventSink, Intent, ProviderEvent
from adapters.provider_errors import (
    event_from_payload,
    intent_from_payload,
    is_transient_status,
    redact,
)
from runtime.errors import (
    ConfigError,
    Internal,
    InvalidWebhook,
    Overloaded,
    ProviderRejected,
    ProviderUnavailable,
)

if TYPE_CHECKING:
    from stripe.params import PaymentIntentCreateParams


@contextmanager
def map_exceptions() -> Iterator[None]:
    """Translate SDK and transport errors into `ProviderUnavailable` / `ProviderRejected`.

    `CardError` arrives here only from calls where a decline is not expected (it is then a 402
    like any other refusal); the intent calls catch it first and return the declined intent.
    """
    try:
        yield
    except stripe.StripeError as exc:
        error = ProviderUnavailable if is_transient_status(exc.http_status) else ProviderRejected
        raise error(_describe(exc)) from None
    except (TimeoutError, aiohttp.ClientError) as exc:
        # The SDK wraps transport errors while sending, but not while reading the body.
        raise ProviderUnavailable(f"stripe unreachable: {type(exc).__name__}") from None


def parse_webhook(payload: bytes, sig_header: str | None, secret: str) -> ProviderEvent | None:
    """Verify a webhook with `stripe.Webhook.construct_event` (default 300 s tolerance) and map it.

    Returns None for a valid event that is not about a payment intent (answer 2xx, ignore it).
    Raises `InvalidWebhook` for a missing, malformed, wrong or stale signature, or a body that is
    not a Stripe event.
    """
    try:
        event = stripe.Webhook.construct_event(payload, sig_header, secret)
        return event_from_payload(event.to_dict(), source="webhook")
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(f"webhook signature rejected: {redact(str(exc))}") from None
    except (ValueError, TypeError, KeyError, AttributeError):
        # json.loads, UnicodeDecodeError, a JSON value that is not an event object.
        raise InvalidWebhook("webhook body is not a Stripe event") from None


class StripeProvider:
    """`actors.provider.Provider` backed by the Stripe API (or localstripe via `api_base`)."""

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        max_network_retries: int = 0,
        timeout: float = 10,
        extra_create_params: Mapping[str, Any] | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("STRIPE_API_KEY is required with --provider stripe")
        self._api_base = api_base
        self._http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=timeout))
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=self._http,
        )
        self._extra_create_params = dict(extra_create_params or {})
        self._sink: EventSink | None = None

    def __repr__(self) -> str:
        return f"StripeProvider(api_base={self._api_base or 'stripe'!r})"

    async def create_intent(
        self,
        *,
        amount: int,
        currency: str,
        payment_method: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
        confirm: bool = False,
    ) -> Intent:
        """Create a card PaymentIntent; with `confirm=True` also confirm it in the same request."""
        params: dict[str, Any] = {
            **self._extra_create_params,
            "amount": amount,
            "currency": currency,
            "payment_method": payment_method,
            "metadata": dict(metadata),
            "confirm": confirm,
        }
        request = self._client.v1.payment_intents.create_async(
            cast("PaymentIntentCreateParams", params),
            {"idempotency_key": _required_key(idempotency_key)},
        )
        return await self._settle(request, intent_id=None)

    async def confirm_intent(self, intent_id: str, *, idempotency_key: str) -> Intent:
        """Confirm with the payment method set at creation (localstripe cannot change it here)."""
        request = self._client.v1.payment_intents.confirm_async(
            intent_id, options={"idempotency_key": _required_key(idempotency_key)}
        )
        return await self._settle(request, intent_id=intent_id)

    async def retrieve_intent(self, intent_id: str) -> Intent:
        with map_exceptions():
            found = await self._client.v1.payment_intents.retrieve_async(intent_id)
        return intent_from_payload(found.to_dict())

    async def cancel_intent(self, intent_id: str, *, idempotency_key: str) -> Intent:
        request = self._client.v1.payment_intents.cancel_async(
            intent_id, options={"idempotency_key": _required_key(idempotency_key)}
        )
        return await self._settle(request, intent_id=intent_id)

    def set_event_sink(self, sink: EventSink) -> None:
        """Where verified webhook events go (Stripe pushes only by webhook; see `webhooks`)."""
        self._sink = sink

    def webhooks(self, secret: str) -> StripeWebhooks:
        """The HTTP server's handler for `POST /webhooks/stripe`, delivering to the event sink."""
        return StripeWebhooks(secret, self._deliver)

    async def _deliver(self, event: ProviderEvent) -> None:
        if self._sink is None:
            # Stripe retries a delivery answered with 503, by which time the sink is wired.
            raise Overloaded("webhook arrived before payment events can be routed")
        await self._sink(event)

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]  # SDK leaves it untyped

    async def _settle(
        self, request: Awaitable[stripe.PaymentIntent], *, intent_id: str | None
    ) -> Intent:
        """Await an intent POST; a decline is an answer (the declined intent), not an error."""
        with map_exceptions():
            try:
                answer = await request
            except stripe.CardError as declined:
                return await self._declined_intent(declined, intent_id)
        return intent_from_payload(answer.to_dict())

    async def _declined_intent(self, declined: stripe.CardError, intent_id: str | None) -> Intent:
        """The intent a decline left behind: Stripe embeds it in the error; localstripe does not,
        so fetch it (through the declined charge when the decline came from a create)."""
        error = _error_body(declined)
        embedded = error.get("payment_intent")
        if isinstance(embedded, Mapping):
            return intent_from_payload(embedded)
        if intent_id is None:
            intent_id = await self._intent_of_charge(error.get("charge"))
        return await self.retrieve_intent(intent_id)

    async def _intent_of_charge(self, charge_id: object) -> str:
        if not isinstance(charge_id, str):
            raise ProviderUnavailable("stripe declined a new intent without naming it")
        with map_exceptions():
            charge = await self._client.v1.charges.retrieve_async(charge_id)
        intent_id = charge.to_dict().get("payment_intent")
        if not isinstance(intent_id, str):
            raise ProviderUnavailable("stripe declined a charge that belongs to no intent")
        return intent_id


class StripeWebhooks:
    """`adapters.http_server.WebhookHandler` for Stripe: verify with the endpoint secret
    (STRIPE_WEBHOOK_SECRET), then hand the event on."""

    def __init__(self, secret: str, deliver: EventSink) -> None:
        if not secret:
            raise ConfigError("STRIPE_WEBHOOK_SECRET is required to accept webhooks")
        self._secret = secret
        self._deliver = deliver

    def __repr__(self) -> str:
        return "StripeWebhooks(secret=[redacted])"

    def verify(self, body: bytes, signature: str | None) -> ProviderEvent | None:
        return parse_webhook(body, signature, self._secret)

    async def deliver(self, event: ProviderEvent) -> None:
        await self._deliver(event)


def _required_key(idempotency_key: str) -> str:
    """Refuse a POST without a key: the SDK would silently use a random one."""
    if not idempotency_key:
        raise Internal("every provider POST needs a deterministic idempotency key")
    return idempotency_key


def _error_body(exc: stripe.StripeError) -> Mapping[str, Any]:
    body = exc.json_body
    error = body.get("error") if isinstance(body, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def _describe(exc: stripe.StripeError) -> str:
    """What went wrong, for logs and error frames: class, status and code, never a secret."""
    code = _error_body(exc).get("code")
    return redact(f"stripe {type(exc).__name__} (http {exc.http_status}, code {code}): {exc}")
