"""The recovery policy of DESIGN.md as data, and the few pure decisions made from it.

| failure           | retries | backoff            | recovery                                      |
|-------------------|---------|--------------------|-----------------------------------------------|
| socket_disconnect | 3       | exponential_jitter | reconnect, resubscribe, catch up with `since` |
| state_mismatch    | 2       | linear             | resync from journal and provider              |
| payment_failure   | 1       | none               | back to method selection (`retry`)            |
| client_detached   | -       | -                  | preserve 300 s, restore on rejoin, or expire  |

Counting, once for every row: `retries` is how many tries may follow the first one, so a policy
allows `1 + retries` tries in all. `may_retry(policy, failures)` asks "after `failures` failed
tries (the first one included), may we try again?" and answers `failures <= retries`. For payments
a try is a payment attempt (`Flow.attempts`), so with the default single retry the first failed
attempt is recoverable (1 <= 1) and the second is terminal (2 > 1): two attempts in total.

The daemon's configuration replaces a row's numbers with `dataclasses.replace(policy, ...)`; every
function here takes the policy it should apply, never a global.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

# Doubling stops here; the cap in `max_delay` is reached long before, and 2.0**1024 would overflow.
_MAX_DOUBLINGS = 64


class Failure(StrEnum):
    SOCKET_DISCONNECT = "socket_disconnect"
    STATE_MISMATCH = "state_mismatch"
    PAYMENT_FAILURE = "payment_failure"
    CLIENT_DETACHED = "client_detached"


class Backoff(StrEnum):
    EXPONENTIAL_JITTER = "exponential_jitter"
    LINEAR = "linear"
    NONE = "none"


class Recovery(StrEnum):
    RECONNECT = "reconnect"  # reconnect, resubscribe, catch up with `since`
    RESYNC = "resync"  # resync from the journal and the provider
    METHOD_SELECTION = "method_selection"  # back to PAYMENT_PENDING through `retry`
    PRESERVE = "preserve"  # keep the flow for `window` seconds, restore on rejoin


class Jitter(Protocol):
    """The one thing backoff needs from a random source; `random.Random` provides it."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryPolicy:
    failure: Failure
    retries: int
    backoff: Backoff
    recovery: Recovery
    base_delay: float = 0.0  # seconds; first exponential ceiling, or the linear step
    max_delay: float = 0.0  # seconds; no backoff waits longer than this
    window: float | None = None  # seconds a detached client's flow is preserved

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"{self.failure}: retries must be >= 0, got {self.retries}")
        if not 0.0 <= self.base_delay <= self.max_delay:
            raise ValueError(f"{self.failure}: need 0 <= base_delay <= max_delay")
        if self.window is not None and self.window <= 0:
            raise ValueError(f"{self.failure}: window must be positive")


DEFAULT_POLICIES: Mapping[Failure, RecoveryPolicy] = MappingProxyType(
    {
        Failure.SOCKET_DISCONNECT: RecoveryPolicy(
            failure=Failure.SOCKET_DISCONNECT,
            retries=3,
            backoff=Backoff.EXPONENTIAL_JITTER,
            recovery=Recovery.RECONNECT,
            base_delay=0.5,
            max_delay=30.0,
        ),
        Failure.STATE_MISMATCH: RecoveryPolicy(
            failure=Failure.STATE_MISMATCH,
            retries=2,
            backoff=Backoff.LINEAR,
            recovery=Recovery.RESYNC,
            base_delay=1.0,
            max_delay=10.0,
        ),
        Failure.PAYMENT_FAILURE: RecoveryPolicy(
            failure=Failure.PAYMENT_FAILURE,
            retries=1,
            backoff=Backoff.NONE,
            recovery=Recovery.METHOD_SELECTION,
        ),
        Failure.CLIENT_DETACHED: RecoveryPolicy(
            failure=Failure.CLIENT_DETACHED,
            retries=0,
            backoff=Backoff.NONE,
            recovery=Recovery.PRESERVE,
            window=300.0,
        ),
    }
)

PAYMENT_FAILURE_POLICY = DEFAULT_POLICIES[Failure.PAYMENT_FAILURE]


def may_retry(policy: RecoveryPolicy, failures: int) -> bool:
    """After `failures` failed tries (the first try counts), is one more try allowed?"""
    if failures < 1:
        raise ValueError(f"failures counts failed tries from 1, got {failures}")
    return failures <= policy.retries


def payment_failure_recoverable(
    attempts: int, policy: RecoveryPolicy = PAYMENT_FAILURE_POLICY
) -> bool:
    """Whether a payment that failed on attempt number `attempts` may go back to method selection.

    Every earlier attempt of a flow that is still paying failed too, so attempts == failures.
    """
    return may_retry(policy, attempts)


def delay(policy: RecoveryPolicy, attempt: int, rng: Jitter) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry).

    Exponential uses "full jitter": uniform in [0, min(max_delay, base_delay * 2**(attempt-1))],
    which spreads reconnecting clients apart instead of having them return in lockstep.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts retries from 1, got {attempt}")
    if policy.backoff is Backoff.EXPONENTIAL_JITTER:
        ceiling = policy.base_delay * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS)
        return rng.uniform(0.0, min(policy.max_delay, ceiling))
    if policy.backoff is Backoff.LINEAR:
        return min(policy.max_delay, policy.base_delay * attempt)
    return 0.0
