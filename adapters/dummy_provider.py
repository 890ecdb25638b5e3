"""A SIMULATED payment provider: no money moves, nothing leaves the process.

It is the default for `make run` and load tests, so a laptop runs payflowd without a Stripe account;
the daemon logs a warning at start whenever it is in use. It keeps intents in memory and answers
like Stripe's test mode, so the same flows (and the same contract tests) run against it and
against localstripe:

- `pm_card_visa`, `pm_card_mastercard`: confirm succeeds.
- `pm_card_chargeDeclined`, `pm_card_visa_chargeDeclined`, `pm_card_chargeCustomerFail`: confirm
  declines; the intent returns to `requires_payment_method` with `last_error.code` `card_declined`
  (a decline is an answer, not an exception).
- `pm_card_threeDSecure2Required`, `pm_card_authenticationRequired`: confirm asks for 3-D Secure
  (`requires_action`, `next_action` `{"type": "use_stripe_sdk", ...}`); the test hook
  `authenticate(intent_id, success)` plays the customer (success -> `succeeded`; failure ->
  `requires_payment_method` with `payment_intent_authentication_failure`, as localstripe does).
- any other payment method, an unknown intent, or a step the intent's status does not allow:
  `ProviderRejected`, like Stripe's invalid-request errors.

Like real Stripe (and unlike localstripe) it honours idempotency keys: a repeated key with the same
parameters returns the first result, a reused key with other parameters is rejected. `calls`
records every call with the key it carried, so tests can assert what a flow sent.

Memory stays bounded however long the daemon runs: `calls` keeps the latest `CALLS_KEPT` calls,
and intents and idempotency answers beyond the latest `REMEMBERED` are forgotten, oldest first (a
forgotten intent is unknown, as a deleted test-mode object would be).

It pushes status changes the way webhooks do: each change is handed to the sink registered with
`set_event_sink` as a `ProviderEvent(source="dummy")`, `push_delay` seconds later, in order
(`push_delay=None` turns pushing off; events arriving while no sink is set are dropped, like a
webhook with no endpoint). `latency` delays every answer with `asyncio.sleep`, never blocking the
loop.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

import structlog

from actors.provider import EventSink, Intent, IntentStatus, PaymentError, ProviderEvent
from runtime.errors import Internal, ProviderRejected, ProviderUnavailable

log = structlog.get_logger(__name__)


class Outcome(StrEnum):
    """What confirming with a test payment method leads to."""

    SUCCEED = "succeed"
    DECLINE = "decline"
    AUTHENTICATE = "authenticate"


TEST_PAYMENT_METHODS: Mapping[str, Outcome] = {
    "pm_card_visa": Outcome.SUCCEED,
    "pm_card_mastercard": Outcome.SUCCEED,
    "pm_card_chargeDeclined": Outcome.DECLINE,
    "pm_card_visa_chargeDeclined": Outcome.DECLINE,
    "pm_card_chargeCustomerFail": Outcome.DECLINE,
    "pm_card_threeDSecure2Required": Outcome.AUTHENTICATE,
    "pm_card_authenticationRequired": Outcome.AUTHENTICATE,
}

CARD_DECLINED = PaymentError(
    code="card_declined", message="Your card was declined.", decline_code="generic_decline"
)
AUTHENTICATION_FAILED = PaymentError(
    code="payment_intent_authentication_failure",
    message="The provided PaymentMethod has failed authentication.",
)
THREE_D_SECURE_ACTION: Mapping[str, Any] = {
    "type": "use_stripe_sdk",
    "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": ""},
}

_S = IntentStatus
# Transitions as data: the statuses each step accepts (Stripe's rules, as localstripe applies
# them), and what each step changes. A step outside its statuses changes nothing.
ALLOWED_FROM: Mapping[str, frozenset[IntentStatus]] = {
    "confirm": frozenset({_S.REQUIRES_CONFIRMATION}),
    "authenticate": frozenset({_S.REQUIRES_ACTION}),
    "cancel": frozenset(
        {
            _S.REQUIRES_PAYMENT_METHOD,
            _S.REQUIRES_CONFIRMATION,
            _S.REQUIRES_ACTION,
            _S.REQUIRES_CAPTURE,
        }
    ),
}
_FRESH: Mapping[str, Any] = {"next_action": None, "last_error": None}
CONFIRM_RESULTS: Mapping[Outcome, Mapping[str, Any]] = {
    Outcome.SUCCEED: {**_FRESH, "status": _S.SUCCEEDED},
    Outcome.DECLINE: {**_FRESH, "status": _S.REQUIRES_PAYMENT_METHOD, "last_error": CARD_DECLINED},
    Outcome.AUTHENTICATE: {
        **_FRESH,
        "status": _S.REQUIRES_ACTION,
        "next_action": THREE_D_SECURE_ACTION,
    },
}
AUTHENTICATE_RESULTS: Mapping[bool, Mapping[str, Any]] = {
    True: {**_FRESH, "status": _S.SUCCEEDED},
    False: {
        **_FRESH,
        "status": _S.REQUIRES_PAYMENT_METHOD,
        "payment_method": None,
        "last_error": AUTHENTICATION_FAILED,
    },
}
CANCEL_RESULT: Mapping[str, Any] = {"status": _S.CANCELED, "next_action": None}

# Ids are 24 characters of [A-Za-z0-9] like Stripe's: the base64 of 18 random bytes with its two
# other characters mapped to letters. A few C calls per id (~0.5 us), where `random.choices` per
# character took ~3 us, and a payment makes four ids (intent, client secret, two events).
_TOKEN_BYTES = 18
CALLS_KEPT = 10_000
REMEMBERED = 50_000
_ALPHANUMERIC = bytes.maketrans(b"+/", b"Az")

Reply = Intent | asyncio.Future[Intent]
"""What an idempotency key has saved: the answer, or the future of one still being computed."""


class DummyProvider:
    """`actors.provider.Provider` simulated in memory; see the module docstring."""

    name = "dummy"

    def __init__(
        self,
        latency: float = 0.0,
        rng_seed: int | None = None,
        *,
        push_delay: float | None = 0.05,
    ) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self._latency = latency
        self._push_delay = push_delay
        self._rng = random.Random(rng_seed)
        self._intents: dict[str, Intent] = {}
        self._replies: dict[str, tuple[tuple[object, ...], Reply]] = {}
        self._sink: EventSink | None = None
        # Events waiting for their time, oldest first; the pusher is created with the first push
        # so it belongs to the loop the provider is used on, and parks on `_idle` when all is sent.
        self._outbox: deque[tuple[float, ProviderEvent]] = deque()
        self._pusher: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None

    # --- the Provider protocol -----------------------------------------------------------------

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
        params = (amount, currency, payment_method, tuple(sorted(metadata.items())), confirm)
        return await self._idempotent(
            "create_intent",
            idempotency_key,
            params,
            lambda: self._create(amount, currency, payment_method, confirm=confirm),
        )

    async def confirm_intent(self, intent_id: str, *, idempotency_key: str) -> Intent:
        return await self._idempotent(
            "confirm_intent", idempotency_key, (intent_id,), lambda: self._confirm(intent_id)
        )

    async def retrieve_intent(self, intent_id: str) -> Intent:
        self.calls.append(("retrieve_intent", None))
        await self._answer_delay()
        return self._intent(intent_id)

    async def cancel_intent(self, intent_id: str, *, idempotency_key: str) -> Intent:
        return await self._idempotent(
            "cancel_intent", idempotency_key, (intent_id,), lambda: self._cancel(intent_id)
        )

    def set_event_sink(self, sink: EventSink) -> None:
        self._sink = sink

    async def close(self) -> None:
        """Stop pushing; events not yet delivered are dropped."""
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
            self._pusher = None
            self._idle = None
            self._outbox.clear()

    # --- test hook -----------------------------------------------------------------------------

    async def authenticate(self, intent_id: str, success: bool) -> Intent:
        """TEST HOOK: the customer passes (or fails) 3-D Secure for an intent in requires_action,
        as localstripe's `POST /v1/payment_intents/{id}/_authenticate` does."""
        await self._answer_delay()
        intent = self._allowed(intent_id, "authenticate")
        return self._store(_changed(intent, AUTHENTICATE_RESULTS[success]))

    async def authenticate_secret(self, client_secret: str, success: bool) -> Intent:
        """TEST HOOK for clients outside the process (`POST /dummy/authenticate`): `authenticate`
        the intent this `client_secret` belongs to. The customer's browser is what holds the
        secret (as with Stripe.js), so knowing it is what entitles a caller to play the customer.
        """
        intent_id = client_secret.partition("_secret_")[0]
        known = self._intents.get(intent_id)
        if known is None or not secrets.compare_digest(known.client_secret or "", client_secret):
            raise ProviderRejected("no payment intent has this client_secret (resource_missing)")
        return await self.authenticate(intent_id, success)

    # --- the simulated provider ----------------------------------------------------------------

    def _create(self, amount: int, currency: str, payment_method: str, *, confirm: bool) -> Intent:
        _validate_new_intent(amount, currency, payment_method)
        intent_id = f"pi_{self._token()}"
        intent = Intent(
            intent_id=intent_id,
            status=IntentStatus.REQUIRES_CONFIRMATION,
            amount=amount,
            currency=currency,
            client_secret=f"{intent_id}_secret_{self._token()}",
            payment_method=payment_method,
        )
        self._store(intent)
        return self._confirm(intent_id) if confirm else intent

    def _confirm(self, intent_id: str) -> Intent:
        intent = self._allowed(intent_id, "confirm")
        outcome = TEST_PAYMENT_METHODS[str(intent.payment_method)]
        return self._store(_changed(intent, CONFIRM_RESULTS[outcome]))

    def _cancel(self, intent_id: str) -> Intent:
        intent = self._allowed(intent_id, "cancel")
        return self._store(_changed(intent, CANCEL_RESULT))

    def _intent(self, intent_id: str) -> Intent:
        intent = self._intents.get(intent_id)
        if intent is None:
            raise ProviderRejected(f"no such payment intent {intent_id!r} (resource_missing)")
        return intent

    def _allowed(self, intent_id: str, step: str) -> Intent:
        intent = self._intent(intent_id)
        if intent.status not in ALLOWED_FROM[step]:
            raise ProviderRejected(
                f"cannot {step} payment intent {intent_id!r} in status {intent.status}"
                " (payment_intent_unexpected_state)"
            )
        return intent

    def _store(self, intent: Intent) -> Intent:
        previous = self._intents.get(intent.intent_id)
        self._intents[intent.intent_id] = intent
        if previous is None:
            _forget_oldest(self._intents)
        if previous is None or previous.status != intent.status:
            self._announce(intent)
        return intent

    async def _answer_delay(self) -> None:
        # No latency, no sleep: sleep(0) still costs a pass of the loop per provider call.
        if self._latency > 0:
            await asyncio.sleep(self._latency)

    def _token(self) -> str:
        raw = self._rng.getrandbits(_TOKEN_BYTES * 8).to_bytes(_TOKEN_BYTES, "little")
        return binascii.b2a_base64(raw, newline=False).translate(_ALPHANUMERIC).decode()

    # --- idempotency ---------------------------------------------------------------------------

    async def _idempotent(
        self, method: str, key: str, params: tuple[object, ...], step: Callable[[], Intent]
    ) -> Intent:
        """Run `step` once per key; a repeat (even a concurrent one) gets the same answer.

        As at Stripe, a refused request saves nothing under its key, so a corrected retry may
        reuse it; reusing a key for other parameters is refused.
        """
        self.calls.append((method, key))
        if len(self.calls) > 2 * CALLS_KEPT:  # trimmed in steps: one copy per CALLS_KEPT calls
            del self.calls[:-CALLS_KEPT]
        if not key:
            raise Internal("every provider POST needs a deterministic idempotency key")
        fingerprint = (method, *params)
        known = self._replies.get(key)
        if known is not None:
            return await _repeat(method, fingerprint, known)
        if self._latency > 0:
            return await self._answer_later(key, fingerprint, step)
        # Answered within this pass of the loop, so no concurrent repeat can find it pending:
        # the answer itself is saved, without a future to share it.
        answer = step()
        self._replies[key] = (fingerprint, answer)
        _forget_oldest(self._replies)
        return answer

    async def _answer_later(
        self, key: str, fingerprint: tuple[object, ...], step: Callable[[], Intent]
    ) -> Intent:
        reply: asyncio.Future[Intent] = asyncio.get_running_loop().create_future()
        self._replies[key] = (fingerprint, reply)
        _forget_oldest(self._replies)
        try:
            await asyncio.sleep(self._latency)
            reply.set_result(step())
        finally:
            self._forget_unless_answered(key, reply)
        return reply.result()

    def _forget_unless_answered(self, key: str, reply: asyncio.Future[Intent]) -> None:
        if reply.done():
            return
        self._replies.pop(key, None)  # may have been forgotten already (REMEMBERED)
        # Concurrent repeats of a request that failed or was abandoned see Stripe's 409.
        reply.set_exception(ProviderUnavailable("the request first sent with this key failed"))
        reply.exception()  # marks it retrieved: having no waiter is not an error

    # --- pushes --------------------------------------------------------------------------------

    def _announce(self, intent: Intent) -> None:
        if self._push_delay is None:
            return
        loop = asyncio.get_running_loop()
        event = ProviderEvent(
            event_id=f"evt_{self._token()}",
            intent_id=intent.intent_id,
            status=intent.status,
            created=time.time(),
            source="dummy",
        )
        self._outbox.append((loop.time() + self._push_delay, event))
        if self._pusher is None or self._pusher.done():
            self._pusher = loop.create_task(self._push_in_order())
        elif self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def _push_in_order(self) -> None:
        """One pusher drains the outbox so events reach the sink in the order they happened.

        A plain deque, and a future only to wake it once the outbox ran dry: the bookkeeping of
        an `asyncio.Queue` (task counts, an Event, waiter lists) was work per event for nothing.
        """
        loop = asyncio.get_running_loop()
        outbox = self._outbox
        while True:
            if not outbox:
                self._idle = loop.create_future()
                await self._idle
                continue
            delay = outbox[0][0] - loop.time()
            if delay > 0:  # one behind its time goes at once, without a pass of the loop
                await asyncio.sleep(delay)
            await self._deliver(outbox.popleft()[1])

    async def _deliver(self, event: ProviderEvent) -> None:
        if self._sink is None:
            return
        try:
            await self._sink(event)
        except Exception:
            # A failing sink must not stop later pushes, as one failed webhook does not stop Stripe.
            log.exception("dummy_push_failed", intent_id=event.intent_id, status=event.status)


async def _repeat(
    method: str, fingerprint: tuple[object, ...], known: tuple[object, Reply]
) -> Intent:
    saved, reply = known
    if saved != fingerprint:
        raise ProviderRejected(f"idempotency key reused with other parameters ({method})")
    if isinstance(reply, Intent):
        return reply
    return await asyncio.shield(reply)


def _changed(intent: Intent, changes: Mapping[str, Any]) -> Intent:
    """`dataclasses.replace(intent, **changes)`, at half its cost (it walks the field list)."""
    fields = {
        "intent_id": intent.intent_id,
        "status": intent.status,
        "amount": intent.amount,
        "currency": intent.currency,
        "client_secret": intent.client_secret,
        "payment_method": intent.payment_method,
        "next_action": intent.next_action,
        "last_error": intent.last_error,
    }
    return Intent(**{**fields, **changes})


def _validate_new_intent(amount: int, currency: str, payment_method: str) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ProviderRejected(f"amount must be a positive integer, got {amount!r}")
    if not (len(currency) == 3 and currency.isalpha() and currency.islower()):
        raise ProviderRejected(f"currency must be a lower-case ISO 4217 code, got {currency!r}")
    if payment_method not in TEST_PAYMENT_METHODS:
        raise ProviderRejected(f"no such PaymentMethod {payment_method!r} (resource_missing)")


def _forget_oldest(remembered: dict[str, Any]) -> None:
    """Drop the oldest entry once there are more than `REMEMBERED` (dicts keep insertion order)."""
    if len(remembered) > REMEMBERED:
        del remembered[next(iter(remembered))]
