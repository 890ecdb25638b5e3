"""Retry delays as data: one `Backoff` value says how long to wait before each retry.

Feeds, the Python client, provider retries and the recovery policy all ask the same question
("attempt n failed; how long until the next, and is there a next?"), so they share this one pure
answer instead of each growing its own loop arithmetic. Nothing here sleeps or keeps state: the
caller owns the attempt counter and the random generator, which makes every delay reproducible
from a seed.

`attempt` counts the retries already made: 0 before the first retry, so with `max_retries=3`
attempts 0, 1 and 2 get a delay and `exhausted(3)` is true.

Strategies (`ceiling` is the un-jittered delay; every delay is clamped to `cap`):

- `exponential_full_jitter`: uniform(0, min(cap, base * 2**attempt)), the "full jitter" of the AWS
  Architecture Blog ("Exponential Backoff And Jitter"). Spreading reconnects over the whole window
  keeps a fleet of clients from reconnecting in lock-step after an outage.
- `exponential`: min(cap, base * 2**attempt), no randomness.
- `linear`: min(cap, base * (attempt + 1)).
- `none`: 0, retry at once.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal, get_args

Strategy = Literal["exponential_full_jitter", "exponential", "linear", "none"]

STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """How long to wait before each retry, and when to give up.

    `base` and `cap` are seconds with 0 <= base <= cap; `max_retries=None` retries forever.
    """

    base: float
    cap: float
    max_retries: int | None = None
    strategy: Strategy = "exponential_full_jitter"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.base) and math.isfinite(self.cap)):
            raise ValueError(f"backoff base and cap must be finite, got {self.base}, {self.cap}")
        if not 0 <= self.base <= self.cap:
            raise ValueError(f"backoff needs 0 <= base <= cap, got base={self.base} cap={self.cap}")
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0 or None, got {self.max_retries}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown backoff strategy {self.strategy!r}, expected {STRATEGIES}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay `delay(attempt)` can return: the un-jittered delay."""
        _check_attempt(attempt)
        if self.strategy == "none":
            return 0.0
        if self.strategy == "linear":
            return min(self.cap, self.base * (attempt + 1))
        return _capped_doubling(self.base, self.cap, attempt)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (0-based); draws from `rng` only
        for the jittered strategy, so the same seed gives the same delays."""
        ceiling = self.ceiling(attempt)
        if self.strategy == "exponential_full_jitter":
            return rng.uniform(0.0, ceiling)
        return ceiling

    def exhausted(self, attempt: int) -> bool:
        """True once `attempt` retries have been made and no more are allowed."""
        _check_attempt(attempt)
        return self.max_retries is not None and attempt >= self.max_retries


def _capped_doubling(base: float, cap: float, attempt: int) -> float:
    try:
        # ldexp computes base * 2**attempt without building a huge int for large attempts.
        return min(cap, math.ldexp(base, attempt))
    except OverflowError:
        return cap


def _check_attempt(attempt: int) -> None:
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
