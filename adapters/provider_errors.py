"""Stripe's answers in the domain's terms, all in one place (Hyperswitch `transformers.rs`).

Everything here works on plain JSON-shaped mappings (what the Stripe API sends and what
`StripeObject.to_dict()` returns), so it needs no SDK and each rule is tested with literal payloads:

- `intent_from_payload`: a PaymentIntent object -> `Intent`.
- `event_from_payload`: a webhook Event -> `ProviderEvent` (None when not about an intent).
- `is_transient_status`: which HTTP answers mean "try again later" (`ProviderUnavailable`) and which
  mean "the request is wrong" (`ProviderRejected`).
- `redact`: keeps API keys, webhook secrets and client secrets out of error messages.
- `with_retries`: the retry loop a caller may wrap around a provider call for `ProviderUnavailable`.

The adapter that talks to the SDK (adapters/stripe_provider.py) catches the SDK's exceptions and
asks this module what they mean; it holds no table of its own.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from actors.provider import Intent, IntentStatus, PaymentError, ProviderEvent
from runtime.backoff import Backoff
from runtime.errors import ProviderUnavailable

T = TypeVar("T")

INTENT_EVENT_PREFIX = "payment_intent."

# 409: Stripe's "another request with this idempotency key is in flight"; 429: rate limited;
# 5xx: Stripe failed. Anything else with a status is the request's own fault.
_TRANSIENT_STATUSES = frozenset({409, 429})

_SECRET_PATTERN = re.compile(
    r"(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9]+|whsec_[A-Za-z0-9]+|[a-z]+_[A-Za-z0-9]+_secret_[A-Za-z0-9]+"
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with anything shaped like a Stripe key or client secret masked."""
    return _SECRET_PATTERN.sub(REDACTED, text)


def is_transient_status(http_status: int | None) -> bool:
    """True when an answer with this HTTP status (None: no answer at all) is worth retrying."""
    return http_status is None or http_status >= 500 or http_status in _TRANSIENT_STATUSES


def intent_status(raw: object) -> IntentStatus:
    """Stripe's status string as an `IntentStatus`; anything else is an answer we cannot use."""
    try:
        return IntentStatus(str(raw))
    except ValueError:
        raise ProviderUnavailable(f"provider sent an unknown intent status {raw!r}") from None


def intent_from_payload(payload: Mapping[str, Any]) -> Intent:
    """A PaymentIntent object (as JSON) -> `Intent`.

    A payload missing its id, amount or currency is treated like a failed answer
    (`ProviderUnavailable`): the caller retries under its policy rather than acting on half a fact.
    """
    try:
        return Intent(
            intent_id=str(payload["id"]),
            status=intent_status(payload["status"]),
            amount=int(payload["amount"]),
            currency=str(payload["currency"]),
            client_secret=_optional_str(payload.get("client_secret")),
            payment_method=_object_id(payload.get("payment_method")),
            next_action=_plain_mapping(payload.get("next_action")),
            last_error=payment_error_from_payload(payload.get("last_payment_error")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderUnavailable(f"provider sent an unreadable payment intent ({exc!r})") from None


def payment_error_from_payload(payload: object) -> PaymentError | None:
    """Stripe's `last_payment_error` (or a card error body) -> `PaymentError`."""
    if not isinstance(payload, Mapping):
        return None
    return PaymentError(
        code=str(payload.get("code") or payload.get("type") or "payment_failed"),
        message=redact(str(payload.get("message") or "")),
        decline_code=_optional_str(payload.get("decline_code")),
    )


def event_from_payload(
    payload: Mapping[str, Any], *, source: str = "webhook"
) -> ProviderEvent | None:
    """A Stripe Event object -> `ProviderEvent`, or None for events not about a payment intent.

    Raises `KeyError`/`TypeError`/`ValueError` for an event that lacks what we need or names a
    status we do not know; the webhook parser turns those into `InvalidWebhook`.
    """
    if not str(payload["type"]).startswith(INTENT_EVENT_PREFIX):
        return None
    intent = payload["data"]["object"]
    return ProviderEvent(
        event_id=str(payload["id"]),
        intent_id=str(intent["id"]),
        status=IntentStatus(str(intent["status"])),
        created=float(payload["created"]),
        source=source,
    )


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    backoff: Backoff,
    rng: random.Random | None = None,
) -> T:
    """Await `call()` until it does not raise `ProviderUnavailable`, at most `attempts` times
    (fewer if `backoff.max_retries` runs out first), sleeping `backoff.delay` between tries.

    Only transient failures are retried: a `ProviderRejected` or a decline comes back at once.
    Safe for POSTs only because every call carries the same idempotency key on each try.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    jitter = rng or random.Random()
    for retry in range(attempts - 1):
        try:
            return await call()
        except ProviderUnavailable:
            if backoff.exhausted(retry):
                raise
        await asyncio.sleep(backoff.delay(retry, jitter))
    return await call()


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _object_id(value: object) -> str | None:
    """An expandable field: either the id itself or the expanded object carrying it."""
    if isinstance(value, Mapping):
        return _optional_str(value.get("id"))
    return _optional_str(value)


def _plain_mapping(value: object) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    return {str(key): item for key, item in value.items()}
