"""Runs the domain's provider calls on the I/O loop: `actors.messages.EffectRunner`.

An actor hands over a `ProviderCall` and goes on with its next message; the call runs as a task
on the asyncio loop (never blocking it: the providers use async clients), transient failures
(`ProviderUnavailable`) are retried with full-jitter backoff a bounded number of times under the
SAME idempotency key, and the outcome comes back to the actor as a `ProviderResult` message.
What stays unavailable after the retries is the actor's to reschedule (it persisted the cause).

`LoopThread` is the asyncio loop in a thread of its own, for a process (or a test) whose main
thread is not the loop.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog

from actors.messages import ProviderCall, ProviderOp, ProviderResult, Tellable
from actors.provider import Intent, Provider
from adapters.loop_handoff import handoff_for
from runtime.backoff import Backoff
from runtime.errors import Internal, PayflowError, ProviderUnavailable

T = TypeVar("T")

log = structlog.get_logger(__name__)

DEFAULT_BACKOFF = Backoff(base=0.1, cap=2.0, max_retries=3)

LatencyCallback = Callable[[str, float, str], None]
"""on_latency(op, seconds, outcome) with outcome "ok", "unavailable", "rejected" or "error"."""


class LoopThread:
    """An asyncio event loop running in a daemon thread until `stop()`."""

    def __init__(self, name: str = "payflowd-io") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run `coro` on the loop and wait for it (from another thread only)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Cancel what still runs on the loop, then stop and close it."""
        if self.loop.is_closed():
            return
        self.run(_cancel_other_tasks(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _cancel_other_tasks() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class ProviderEffects:
    """`EffectRunner` for one provider on one loop. Thread-safe: call from any actor."""

    def __init__(
        self,
        provider: Provider,
        loop: asyncio.AbstractEventLoop,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        rng: random.Random | None = None,
        on_latency: LatencyCallback | None = None,
    ) -> None:
        self._provider = provider
        self._loop = loop
        self._backoff = backoff
        self._rng = rng or random.Random()
        self._on_latency = on_latency
        self._handoff = handoff_for(loop)
        self._running: set[asyncio.Task[None]] = set()

    def provider_call(self, call: ProviderCall, reply_to: Tellable) -> None:
        self._handoff.call(self._start, call, reply_to)

    def _start(self, call: ProviderCall, reply_to: Tellable) -> None:
        # The set keeps the task referenced until it is done (the loop holds tasks weakly). The
        # task takes itself out at its end: a done callback would cost a pass of the loop per call.
        self._running.add(self._loop.create_task(self._run(call, reply_to)))

    @property
    def in_flight(self) -> int:
        """Calls started and not yet answered (one cancelled before it ran stays counted)."""
        return len(self._running)

    async def _run(self, call: ProviderCall, reply_to: Tellable) -> None:
        try:
            result = await self.execute(call)
        finally:
            self._running.discard(asyncio.current_task())
        try:
            reply_to.tell(result)
        except Exception:  # noqa: BLE001 - the actor is gone or full; it re-derives on load
            log.warning("provider_result_undelivered", op=call.op.value, flow_id=call.flow_id)

    async def execute(self, call: ProviderCall) -> ProviderResult:
        """The call with its bounded retries; never raises, the error is in the result."""
        retry = 0
        while True:
            result = await self._once(call)
            unavailable = isinstance(result.error, ProviderUnavailable)
            if not unavailable or self._backoff.exhausted(retry):
                return result
            await asyncio.sleep(self._backoff.delay(retry, self._rng))
            retry += 1

    async def _once(self, call: ProviderCall) -> ProviderResult:
        started = time.monotonic()
        try:
            intent = await self._request(call)
        except PayflowError as error:
            self._record(call, started, "unavailable" if error.retryable else "rejected")
            return ProviderResult(call=call, error=error)
        except Exception as exc:  # a provider bug must reach the flow as data, not kill the task
            log.exception("provider_call_crashed", op=call.op.value, flow_id=call.flow_id)
            self._record(call, started, "error")
            crash = Internal(f"provider raised {type(exc).__name__}")
            return ProviderResult(call=call, error=crash)
        self._record(call, started, "ok")
        return ProviderResult(call=call, intent=intent)

    def _record(self, call: ProviderCall, started: float, outcome: str) -> None:
        if self._on_latency is not None:
            self._on_latency(call.op.value, time.monotonic() - started, outcome)

    def _request(self, call: ProviderCall) -> Awaitable[Intent]:
        """The provider's awaitable for `call` (a plain function: no coroutine of its own to
        wrap the provider's). Raises `Internal` for a call the flow should never have built."""
        provider = self._provider
        if call.op is ProviderOp.RETRIEVE_INTENT:
            return provider.retrieve_intent(_intent_id(call))
        key = call.idempotency_key
        if not key:
            raise Internal(f"{call.op.value} without an idempotency key")
        if call.op is ProviderOp.CREATE_INTENT:
            return provider.create_intent(
                amount=int(call.amount or 0),
                currency=str(call.currency),
                payment_method=str(call.payment_method),
                metadata=call.metadata,
                idempotency_key=key,
            )
        if call.op is ProviderOp.CONFIRM_INTENT:
            return provider.confirm_intent(_intent_id(call), idempotency_key=key)
        return provider.cancel_intent(_intent_id(call), idempotency_key=key)


def _intent_id(call: ProviderCall) -> str:
    if call.intent_id is None:
        raise Internal(f"{call.op.value} without an intent id")
    return call.intent_id
