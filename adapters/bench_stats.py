"""payflow-bench's numbers: the outcome mix, the samples each load process records, and the
figures made of them (percentiles, rates). Plain data, picklable, so load processes send their
samples to the parent whole and the parent merges them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

SUSTAIN_WINDOW_S = 5.0  # "sustained" = the worst window of this length, not just the mean


class Outcome(StrEnum):
    """The payment paths a simulated customer takes (the dummy provider's test cards)."""

    SUCCESS = "success"  # pm_card_visa
    DECLINE = "decline"  # pm_card_chargeDeclined, then `retry` with pm_card_visa
    THREE_DS = "3ds"  # pm_card_threeDSecure2Required, then the dummy's 3-D Secure hook


@dataclass(frozen=True, slots=True, kw_only=True)
class Mix:
    """How often each outcome is drawn; the weights sum to 1."""

    weights: Mapping[Outcome, float]

    def draw(self, rng: random.Random) -> Outcome:
        outcomes = list(self.weights)
        return rng.choices(outcomes, weights=[self.weights[o] for o in outcomes])[0]

    def __str__(self) -> str:
        return ",".join(f"{o.value}={w:g}" for o, w in self.weights.items() if w > 0)


def parse_mix(text: str) -> Mix:
    """`success=0.8,decline=0.1,3ds=0.1` -> a Mix (weights are normalised to sum to 1).

    Raises ValueError for an unknown outcome, a repeated one, a weight that is not a finite
    number >= 0, or weights that are all zero."""
    weights: dict[Outcome, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            outcome = Outcome(name.strip())
            weight = float(value) if sep else math.nan
        except ValueError:
            raise ValueError(
                f"bad mix entry {part!r}: use e.g. success=0.8,decline=0.1,3ds=0.1"
            ) from None
        if outcome in weights or not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"bad mix entry {part!r}: each outcome once, weight >= 0")
        weights[outcome] = weight
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"mix {text!r} has no positive weight")
    return Mix(weights={o: w / total for o, w in weights.items()})


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The nearest-rank `q`-th percentile (0 < q <= 100) of `samples`; None when empty."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(slots=True)
class Samples:
    """What one load process saw. Times are epoch seconds (`time.time()`: the daemon stamps
    `updated_at` with the same clock), latencies are seconds."""

    completed_at: list[float] = field(default_factory=list)  # one per completed flow
    errors: dict[str, int] = field(default_factory=dict)  # why a flow did not complete
    unfinished: int = 0  # flows still running when the load stopped waiting for them
    frames: int = 0  # status frames received
    push: list[float] = field(default_factory=list)  # frame received - its updated_at
    provider_push: list[float] = field(default_factory=list)  # 3DS event -> COMPLETED frame
    transitions: dict[str, list[float]] = field(default_factory=dict)  # "A->B": seconds

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def transition(self, before: str, after: str, seconds: float) -> None:
        self.transitions.setdefault(f"{before}->{after}", []).append(seconds)

    def merge(self, other: Samples) -> None:
        self.completed_at += other.completed_at
        for reason, count in other.errors.items():
            self.errors[reason] = self.errors.get(reason, 0) + count
        self.unfinished += other.unfinished
        self.frames += other.frames
        self.push += other.push
        self.provider_push += other.provider_push
        for key, values in other.transitions.items():
            self.transitions.setdefault(key, []).extend(values)


def merged(parts: Iterable[Samples]) -> Samples:
    total = Samples()
    for part in parts:
        total.merge(part)
    return total


def latency_ms(samples: Sequence[float]) -> dict[str, float | int | None]:
    """{"p50_ms", "p99_ms", "count"} of latencies given in seconds."""
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    return {
        "p50_ms": None if p50 is None else round(p50 * 1000, 2),
        "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        "count": len(samples),
    }


def rate_in(times: Sequence[float], start: float, seconds: float) -> float:
    """Events per second among `times` that fall in [start, start + seconds)."""
    if seconds <= 0:
        return 0.0
    return sum(1 for t in times if start <= t < start + seconds) / seconds


def worst_window_rate(
    times: Sequence[float], start: float, seconds: float, window: float = SUSTAIN_WINDOW_S
) -> float:
    """The lowest rate over consecutive `window`-long slices of [start, start + seconds): what
    the load sustained, as opposed to its mean (a stall shows here)."""
    slices = max(1, int(seconds // window))
    width = seconds / slices
    counts = [0] * slices
    for t in times:
        index = int((t - start) // width)
        if 0 <= index < slices:
            counts[index] += 1
    return min(counts) / width
