"""The recovery policy table of DESIGN.md, the retry counting, and the backoff delays."""

from __future__ import annotations

import dataclasses
import random

import pytest

from actors.recovery import (
    DEFAULT_POLICIES,
    PAYMENT_FAILURE_POLICY,
    Backoff,
    Failure,
    Recovery,
    RecoveryPolicy,
    delay,
    may_retry,
    payment_failure_recoverable,
)


@pytest.mark.parametrize(
    ("failure", "retries", "backoff", "recovery"),
    [
        (Failure.SOCKET_DISCONNECT, 3, Backoff.EXPONENTIAL_JITTER, Recovery.RECONNECT),
        (Failure.STATE_MISMATCH, 2, Backoff.LINEAR, Recovery.RESYNC),
        (Failure.PAYMENT_FAILURE, 1, Backoff.NONE, Recovery.METHOD_SELECTION),
        (Failure.CLIENT_DETACHED, 0, Backoff.NONE, Recovery.PRESERVE),
    ],
)
def test_default_policies_are_the_design_table(
    failure: Failure, retries: int, backoff: Backoff, recovery: Recovery
) -> None:
    policy = DEFAULT_POLICIES[failure]
    assert (policy.failure, policy.retries, policy.backoff, policy.recovery) == (
        failure,
        retries,
        backoff,
        recovery,
    )


def test_client_detached_preserves_five_minutes() -> None:
    assert DEFAULT_POLICIES[Failure.CLIENT_DETACHED].window == 300.0
    assert set(DEFAULT_POLICIES) == set(Failure)


def test_one_payment_retry_means_two_attempts_in_all() -> None:
    assert payment_failure_recoverable(1) is True
    assert payment_failure_recoverable(2) is False


def test_payment_retry_limit_is_configurable() -> None:
    none_allowed = dataclasses.replace(PAYMENT_FAILURE_POLICY, retries=0)
    three_allowed = dataclasses.replace(PAYMENT_FAILURE_POLICY, retries=3)
    assert payment_failure_recoverable(1, none_allowed) is False
    assert [payment_failure_recoverable(n, three_allowed) for n in (1, 2, 3, 4)] == [
        True,
        True,
        True,
        False,
    ]


def test_socket_reconnects_three_times_then_gives_up() -> None:
    policy = DEFAULT_POLICIES[Failure.SOCKET_DISCONNECT]
    assert [may_retry(policy, n) for n in (1, 2, 3, 4)] == [True, True, True, False]


def test_counting_starts_at_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        may_retry(PAYMENT_FAILURE_POLICY, 0)
    with pytest.raises(ValueError, match="from 1"):
        delay(PAYMENT_FAILURE_POLICY, 0, random.Random(1))


def test_exponential_backoff_stays_inside_a_doubling_capped_envelope() -> None:
    policy = DEFAULT_POLICIES[Failure.SOCKET_DISCONNECT]
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
        samples = [delay(policy, attempt, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        # jitter really spreads the clients: the samples fill the envelope, not one point
        assert max(samples) - min(samples) > ceiling / 2


def test_exponential_backoff_survives_huge_attempt_numbers() -> None:
    policy = DEFAULT_POLICIES[Failure.SOCKET_DISCONNECT]
    assert delay(policy, 10_000, random.Random(3)) <= policy.max_delay


def test_linear_backoff_grows_by_one_step_until_capped() -> None:
    policy = DEFAULT_POLICIES[Failure.STATE_MISMATCH]
    delays = [delay(policy, n, random.Random(0)) for n in (1, 2, 3, 50)]
    assert delays == [1.0, 2.0, 3.0, policy.max_delay]


def test_no_backoff_means_no_wait() -> None:
    assert delay(PAYMENT_FAILURE_POLICY, 1, random.Random(0)) == 0.0


@pytest.mark.parametrize(
    "bad",
    [{"retries": -1}, {"base_delay": -1.0}, {"base_delay": 5.0, "max_delay": 1.0}, {"window": 0}],
    ids=str,
)
def test_policy_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        dataclasses.replace(DEFAULT_POLICIES[Failure.STATE_MISMATCH], **bad)  # type: ignore[arg-type]


def test_policy_is_frozen() -> None:
    policy: RecoveryPolicy = PAYMENT_FAILURE_POLICY
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.retries = 5  # type: ignore[misc]
