"""The payment provider as the domain needs it; adapters (Stripe, dummy) implement it.

Amounts are integers in minor units with a lower-case ISO 4217 currency. Every call that creates
or changes something at the provider takes an `idempotency_key` the flow derives from
(flow id, step, attempt), so a retry after a crash can never charge twice.

Declines are not exceptions: a declined confirm returns the intent in `requires_payment_method`
with `last_error` set. Exceptions are `runtime.errors.ProviderUnavailable` (transient: retry with
backoff) and `runtime.errors.ProviderRejected` (invalid request: do not retry).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class IntentStatus(StrEnum):
    """Stripe's PaymentIntent statuses; the dummy provider speaks the same language."""

    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentError:
    """Why the provider refused a payment (Stripe's `last_payment_error`)."""

    code: str
    message: str
    decline_code: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    """A snapshot of one payment intent as the provider reported it."""

    intent_id: str
    status: str
    amount: int
    currency: str
    client_secret: str | None = None
    payment_method: str | None = None
    next_action: Mapping[str, Any] | None = None
    last_error: PaymentError | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderEvent:
    """A status change the provider pushed (webhook, feed, dummy push)."""

    event_id: str
    intent_id: str
    status: str
    created: float
    source: str = "webhook"


EventSink = Callable[[ProviderEvent], Awaitable[None]]


class Provider(Protocol):
    """The calls a payment flow makes. All run on the I/O loop; none blocks it."""

    name: str

    async def create_intent(
        self,
        *,
        amount: int,
        currency: str,
        payment_method: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> Intent: ...

    async def confirm_intent(self, intent_id: str, *, idempotency_key: str) -> Intent: ...

    async def retrieve_intent(self, intent_id: str) -> Intent: ...

    async def cancel_intent(self, intent_id: str, *, idempotency_key: str) -> Intent: ...

    def set_event_sink(self, sink: EventSink) -> None:
        """Where the provider delivers pushed events it produces itself (the dummy's webhooks)."""
        ...

    async def close(self) -> None: ...
