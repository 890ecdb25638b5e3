"""Retry delays: bounded, growing, finite in number and reproducible from a seed."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.backoff import STRATEGIES, Backoff, Strategy

seconds = st.floats(min_value=0.0, max_value=3600.0, allow_nan=False)
attempts = st.integers(min_value=0, max_value=5000)
strategies = st.sampled_from(STRATEGIES)


@st.composite
def backoffs(draw: st.DrawFn, strategy: st.SearchStrategy[Strategy] = strategies) -> Backoff:
    base, cap = sorted((draw(seconds), draw(seconds)))
    max_retries = draw(st.none() | st.integers(min_value=0, max_value=20))
    return Backoff(base=base, cap=cap, max_retries=max_retries, strategy=draw(strategy))


@given(backoff=backoffs(), attempt=attempts, seed=st.integers())
def test_every_delay_lies_between_zero_and_the_cap(
    backoff: Backoff, attempt: int, seed: int
) -> None:
    delay = backoff.delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= backoff.ceiling(attempt) <= backoff.cap


@given(
    backoff=backoffs(st.sampled_from(["exponential_full_jitter", "exponential", "linear"])),
    attempt=attempts,
)
def test_growing_strategies_never_lower_their_ceiling(backoff: Backoff, attempt: int) -> None:
    assert backoff.ceiling(attempt) <= backoff.ceiling(attempt + 1)


@given(backoff=backoffs(st.just("exponential")), attempt=st.integers(min_value=0, max_value=30))
def test_exponential_doubles_until_the_cap(backoff: Backoff, attempt: int) -> None:
    expected = min(backoff.cap, backoff.base * 2**attempt)
    assert backoff.delay(attempt, random.Random(0)) == pytest.approx(expected)


@given(backoff=backoffs(st.sampled_from(["exponential_full_jitter", "exponential"])))
def test_exponential_reaches_the_cap_even_after_thousands_of_attempts(backoff: Backoff) -> None:
    expected = backoff.cap if backoff.base > 0 else 0.0
    assert backoff.ceiling(100_000) == expected


@given(backoff=backoffs(), attempt=attempts)
def test_exhausted_exactly_once_max_retries_attempts_were_made(
    backoff: Backoff, attempt: int
) -> None:
    if backoff.max_retries is None:
        assert not backoff.exhausted(attempt)
    else:
        assert backoff.exhausted(attempt) == (attempt >= backoff.max_retries)


@given(backoff=backoffs(), seed=st.integers())
def test_the_same_seed_gives_the_same_delays(backoff: Backoff, seed: int) -> None:
    first, second = random.Random(seed), random.Random(seed)
    assert [backoff.delay(n, first) for n in range(12)] == [
        backoff.delay(n, second) for n in range(12)
    ]


def test_full_jitter_spreads_delays_over_the_whole_window() -> None:
    backoff = Backoff(base=1.0, cap=8.0, strategy="exponential_full_jitter")
    rng = random.Random(1234)
    delays = [backoff.delay(3, rng) for _ in range(2000)]

    assert statistics.fmean(delays) == pytest.approx(4.0, rel=0.1)  # uniform(0, 8)
    assert min(delays) < 0.5
    assert max(delays) > 7.5


def test_linear_and_none_strategies_follow_the_recovery_table() -> None:
    linear = Backoff(base=0.5, cap=10.0, max_retries=2, strategy="linear")
    none = Backoff(base=0.0, cap=0.0, max_retries=1, strategy="none")
    rng = random.Random(0)

    assert [linear.delay(n, rng) for n in range(3)] == [0.5, 1.0, 1.5]
    assert [linear.exhausted(n) for n in range(3)] == [False, False, True]
    assert none.delay(0, rng) == 0.0
    assert none.exhausted(1)


@pytest.mark.parametrize(
    ("base", "cap", "max_retries", "strategy"),
    [
        (-1.0, 1.0, None, "exponential"),
        (2.0, 1.0, None, "exponential"),
        (0.1, math.inf, None, "exponential"),
        (0.1, math.nan, None, "exponential"),
        (0.1, 1.0, -1, "exponential"),
        (0.1, 1.0, None, "fibonacci"),
    ],
)
def test_unusable_settings_are_refused_at_construction(
    base: float, cap: float, max_retries: int | None, strategy: Strategy
) -> None:
    with pytest.raises(ValueError, match=r"backoff|max_retries"):
        Backoff(base=base, cap=cap, max_retries=max_retries, strategy=strategy)


def test_a_negative_attempt_is_refused() -> None:
    backoff = Backoff(base=1.0, cap=2.0)
    with pytest.raises(ValueError, match="attempt"):
        backoff.delay(-1, random.Random(0))
