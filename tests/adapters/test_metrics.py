"""The daemon's monitoring points as a Prometheus scraper sees them, and the seed's thresholds."""

from __future__ import annotations

import threading
from collections.abc import MutableMapping, Sequence
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from adapters.metrics import THRESHOLDS, Metrics

MONITORING_POINTS = {
    "payflowd_transition_seconds": "histogram",
    "payflowd_socket_health_ratio": "gauge",
    "payflowd_errors": "counter",
    "payflowd_errors_per_minute": "gauge",
    "payflowd_recovery_attempts": "counter",
    "payflowd_recovery_success": "counter",
    "payflowd_recovery_success_ratio": "gauge",
    "payflowd_flows": "gauge",
    "payflowd_actors": "gauge",
    "payflowd_mailbox_depth": "gauge",
    "payflowd_actor_restarts": "counter",
    "payflowd_provider_call_seconds": "histogram",
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by sample name and labels."""
    text = metrics.render().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, frozenset(labels.items()))]


def warnings(
    logs: Sequence[MutableMapping[str, Any]], metric: str
) -> list[MutableMapping[str, Any]]:
    return [
        entry
        for entry in logs
        if entry["event"] == "metric_threshold_crossed" and entry["metric"] == metric
    ]


def test_every_monitoring_point_is_in_the_scrape() -> None:
    metrics = Metrics()
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(metrics.render().decode())
    }
    for name, kind in MONITORING_POINTS.items():
        assert families.get(name) == kind, name


def test_recorded_values_reach_the_scrape() -> None:
    metrics = Metrics()
    metrics.observe_transition("PAYMENT_PROCESSING", "COMPLETED", 0.2)
    metrics.error("provider_unavailable")
    metrics.recovery("socket_disconnect", ok=True)
    metrics.provider_call("create_intent", "ok", 0.03)
    metrics.set_actors(7)
    metrics.set_mailbox(3)
    metrics.restart()
    metrics.socket_health(3, 4)
    transition = {"from_state": "PAYMENT_PROCESSING", "to_state": "COMPLETED"}
    assert value(metrics, "payflowd_transition_seconds_count", **transition) == 1
    assert value(metrics, "payflowd_errors_total", code="provider_unavailable") == 1
    assert value(metrics, "payflowd_errors_per_minute") == 1
    assert value(metrics, "payflowd_recovery_attempts_total", kind="socket_disconnect") == 1
    assert value(metrics, "payflowd_recovery_success_total", kind="socket_disconnect") == 1
    assert value(metrics, "payflowd_recovery_success_ratio", kind="socket_disconnect") == 1
    call = {"operation": "create_intent", "outcome": "ok"}
    assert value(metrics, "payflowd_provider_call_seconds_count", **call) == 1
    assert value(metrics, "payflowd_actors") == 7
    assert value(metrics, "payflowd_mailbox_depth") == 3
    assert value(metrics, "payflowd_actor_restarts_total") == 1
    assert value(metrics, "payflowd_socket_health_ratio") == 0.75


def test_recovery_counters_exist_at_zero_before_any_recovery() -> None:
    scrape = samples(Metrics())
    for kind in ("socket_disconnect", "state_mismatch", "payment_failure", "client_detached"):
        assert scrape[("payflowd_recovery_attempts_total", frozenset({("kind", kind)}))] == 0


def test_a_state_left_out_of_set_flows_drops_to_zero() -> None:
    metrics = Metrics()
    metrics.set_flows({"PAYMENT_PENDING": 4, "COMPLETED": 2})
    metrics.set_flows({"COMPLETED": 5})
    assert value(metrics, "payflowd_flows", state="PAYMENT_PENDING") == 0
    assert value(metrics, "payflowd_flows", state="COMPLETED") == 5


def test_daemons_in_one_process_keep_their_own_figures() -> None:
    first, second = Metrics(), Metrics()
    first.error("internal")
    assert value(first, "payflowd_errors_total", code="internal") == 1
    assert ("payflowd_errors_total", frozenset({("code", "internal")})) not in samples(second)


def test_errors_per_minute_is_a_sliding_sixty_second_window() -> None:
    clock = FakeClock()
    metrics = Metrics(clock=clock)
    for _ in range(3):
        metrics.error("internal")
    clock.now += 30
    metrics.error("overloaded")
    metrics.error("overloaded")
    assert metrics.errors_per_minute() == 5
    clock.now += 31  # the first three are now 61 s old
    assert metrics.errors_per_minute() == 2
    assert value(metrics, "payflowd_errors_per_minute") == 2
    assert value(metrics, "payflowd_errors_total", code="internal") == 3


def test_errors_from_many_threads_are_all_counted() -> None:
    metrics = Metrics()

    def record() -> None:
        for _ in range(500):
            metrics.error("internal")

    threads = [threading.Thread(target=record) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert value(metrics, "payflowd_errors_total", code="internal") == 2000
    assert metrics.errors_per_minute() == 2000


def test_slow_transitions_warn_once_per_crossing() -> None:
    metrics = Metrics()
    with capture_logs() as logs:
        metrics.observe_transition("PAYMENT_ACTIVE", "PAYMENT_PROCESSING", 6.0)
        metrics.observe_transition("PAYMENT_ACTIVE", "PAYMENT_PROCESSING", 9.0)
        assert len(warnings(logs, "payflowd_transition_seconds")) == 1
        metrics.observe_transition("PAYMENT_ACTIVE", "PAYMENT_PROCESSING", 0.5)
        metrics.observe_transition("PAYMENT_ACTIVE", "PAYMENT_PROCESSING", 7.0)
    crossed = warnings(logs, "payflowd_transition_seconds")
    assert [entry["value"] for entry in crossed] == [6.0, 7.0]
    assert all(entry["log_level"] == "warning" for entry in crossed)
    assert crossed[0]["limit"] == 5.0


def test_socket_health_under_95_percent_warns_once_per_crossing() -> None:
    metrics = Metrics()
    with capture_logs() as logs:
        metrics.socket_health(9, 10)
        metrics.socket_health(8, 10)
        metrics.socket_health(19, 20)  # exactly 95 %: healthy again
        metrics.socket_health(0, 0)
        metrics.socket_health(93, 100)
    assert [entry["value"] for entry in warnings(logs, "payflowd_socket_health_ratio")] == [
        0.9,
        0.93,
    ]
    recovered = [entry for entry in logs if entry["event"] == "metric_threshold_recovered"]
    assert len(recovered) == 1


def test_more_than_five_errors_a_minute_warn_once_per_crossing() -> None:
    clock = FakeClock()
    metrics = Metrics(clock=clock)
    with capture_logs() as logs:
        for _ in range(5):
            metrics.error("internal")
        assert warnings(logs, "payflowd_errors_per_minute") == []
        for _ in range(4):
            metrics.error("internal")
        assert len(warnings(logs, "payflowd_errors_per_minute")) == 1
        clock.now += 61
        assert metrics.errors_per_minute() == 0
        for _ in range(6):
            metrics.error("internal")
    assert [entry["value"] for entry in warnings(logs, "payflowd_errors_per_minute")] == [6, 6]


def test_recovery_success_under_90_percent_warns_once_per_crossing_and_kind() -> None:
    metrics = Metrics()
    with capture_logs() as logs:
        for _ in range(9):
            metrics.recovery("socket_disconnect", ok=True)
        metrics.recovery("socket_disconnect", ok=False)  # 9/10: still at the line
        assert warnings(logs, "payflowd_recovery_success_ratio") == []
        metrics.recovery("socket_disconnect", ok=False)  # 9/11
        metrics.recovery("socket_disconnect", ok=False)  # 9/12
        metrics.recovery("state_mismatch", ok=False)  # another kind crosses on its own
    crossed = warnings(logs, "payflowd_recovery_success_ratio")
    assert [entry["subject"] for entry in crossed] == ["socket_disconnect", "state_mismatch"]
    assert metrics.recovery_success_ratio("socket_disconnect") == pytest.approx(0.75)
    assert metrics.recovery_success_ratio("payment_failure") is None


def test_every_threshold_of_the_seed_is_in_the_table() -> None:
    lines = {name: (t.limit, str(t.breach)) for name, t in THRESHOLDS.items()}
    assert lines == {
        "transition_seconds": (5.0, "above"),
        "socket_health_ratio": (0.95, "below"),
        "errors_per_minute": (5.0, "above"),
        "recovery_success_ratio": (0.90, "below"),
    }


def test_each_transition_pair_keeps_its_own_series_across_repeated_observations() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.observe_transition("PAYMENT_ACTIVE", "PAYMENT_PROCESSING", 0.2)
    metrics.observe_transition("PAYMENT_PROCESSING", "COMPLETED", 30.0)
    active = {"from_state": "PAYMENT_ACTIVE", "to_state": "PAYMENT_PROCESSING"}
    done = {"from_state": "PAYMENT_PROCESSING", "to_state": "COMPLETED"}
    assert value(metrics, "payflowd_transition_seconds_count", **active) == 3
    assert value(metrics, "payflowd_transition_seconds_sum", **active) == pytest.approx(0.6)
    assert value(metrics, "payflowd_transition_seconds_count", **done) == 1
    assert value(metrics, "payflowd_transition_seconds_bucket", le="30.0", **done) == 1
    assert value(metrics, "payflowd_transition_seconds_bucket", le="10.0", **done) == 0


def test_a_threshold_crossed_from_many_threads_at_once_warns_once() -> None:
    metrics = Metrics()
    start = threading.Barrier(4)

    def slow_transitions() -> None:
        start.wait(timeout=10)
        for _ in range(200):
            metrics.observe_transition("PAYMENT_ACTIVE", "PAYMENT_PROCESSING", 6.0)

    with capture_logs() as logs:
        threads = [threading.Thread(target=slow_transitions) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert len(warnings(logs, "payflowd_transition_seconds")) == 1
    active = {"from_state": "PAYMENT_ACTIVE", "to_state": "PAYMENT_PROCESSING"}
    assert value(metrics, "payflowd_transition_seconds_count", **active) == 800


def test_each_provider_call_pair_keeps_its_own_series_across_repeated_calls() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.provider_call("create_intent", "ok", 0.03)
    metrics.provider_call("create_intent", "error", 2.0)
    ok = {"operation": "create_intent", "outcome": "ok"}
    error = {"operation": "create_intent", "outcome": "error"}
    assert value(metrics, "payflowd_provider_call_seconds_count", **ok) == 3
    assert value(metrics, "payflowd_provider_call_seconds_sum", **ok) == pytest.approx(0.09)
    assert value(metrics, "payflowd_provider_call_seconds_count", **error) == 1


def test_a_healthy_value_recovers_its_own_threshold_while_another_stays_crossed() -> None:
    metrics = Metrics()
    with capture_logs() as logs:
        metrics.socket_health(1, 2)  # crossed, and stays so
        metrics.observe_transition("PAYMENT_ACTIVE", "PAYMENT_PROCESSING", 9.0)
        metrics.observe_transition("PAYMENT_ACTIVE", "PAYMENT_PROCESSING", 0.1)
    events = [(entry["event"], entry["metric"]) for entry in logs]
    assert events == [
        ("metric_threshold_crossed", "payflowd_socket_health_ratio"),
        ("metric_threshold_crossed", "payflowd_transition_seconds"),
        ("metric_threshold_recovered", "payflowd_transition_seconds"),
    ]
