"""The daemon's Prometheus metrics and the seed's monitoring thresholds.

One `Metrics` object owns its own `CollectorRegistry` (never the process-global one), so a test
can build as many daemons as it likes and `GET /metrics` shows exactly this daemon's figures.
Every recording method is safe to call from any thread: prometheus_client's metrics are, and the
little state kept here (the error window, the threshold watch) sits behind a lock.

Thresholds are data (`THRESHOLDS`). A crossing is logged as one structlog warning
(`metric_threshold_crossed`); while the value stays on the wrong side nothing more is logged, so a
flapping dependency cannot flood the log. Once the value is healthy again
(`metric_threshold_recovered`) the next crossing warns again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from actors.flow_states import FlowState
from actors.recovery import Failure

CONTENT_TYPE = CONTENT_TYPE_LATEST
ERROR_WINDOW_S = 60.0
# Series known from the start: they read 0 rather than "no data", and rate() works on them.
_RECOVERY_KINDS = tuple(str(kind) for kind in Failure)
_FLOW_STATES = tuple(str(state) for state in FlowState if state is not FlowState.INITIAL)

# Flow steps wait on people (choosing a method, 3-D Secure), so transitions reach minutes.
_TRANSITION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, float("inf"))
_PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))


class Breach(StrEnum):
    ABOVE = "above"
    BELOW = "below"


@dataclass(frozen=True, slots=True, kw_only=True)
class Threshold:
    metric: str
    limit: float
    breach: Breach

    def breached_by(self, value: float) -> bool:
        return value > self.limit if self.breach is Breach.ABOVE else value < self.limit


# The seed's monitoring points: what is unhealthy, and where the line is.
THRESHOLDS: Mapping[str, Threshold] = MappingProxyType(
    {
        "transition_seconds": Threshold(
            metric="payflowd_transition_seconds", limit=5.0, breach=Breach.ABOVE
        ),
        "socket_health_ratio": Threshold(
            metric="payflowd_socket_health_ratio", limit=0.95, breach=Breach.BELOW
        ),
        "errors_per_minute": Threshold(
            metric="payflowd_errors_per_minute", limit=5.0, breach=Breach.ABOVE
        ),
        "recovery_success_ratio": Threshold(
            metric="payflowd_recovery_success_ratio", limit=0.90, breach=Breach.BELOW
        ),
    }
)


class ThresholdWatch:
    """Remembers which thresholds are crossed, so each crossing is logged once."""

    def __init__(self, thresholds: Mapping[str, Threshold] = THRESHOLDS) -> None:
        self._thresholds = thresholds
        # name -> (limit, breached when above): checked on every flow step, so without the
        # enum comparison and method call of `Threshold.breached_by`.
        self._lines = {name: (t.limit, t.breach is Breach.ABOVE) for name, t in thresholds.items()}
        self._crossed: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def check(self, name: str, value: float, *, subject: str = "") -> None:
        """Log when `value` crosses `name`'s line or comes back; `subject` keeps labels apart."""
        limit, above = self._lines[name]
        breached = value > limit if above else value < limit
        if not (breached or self._crossed):
            return  # healthy and nothing crossed: the usual case, no key built
        key = (name, subject)
        if breached == (key in self._crossed):
            return  # no change, decided without the lock (a set read is atomic)
        threshold = self._thresholds[name]
        with self._lock:
            changed = breached != (key in self._crossed)  # again: another thread may have won
            if changed:
                (self._crossed.add if breached else self._crossed.discard)(key)
        if changed:
            self._log(threshold, value, subject, breached=breached)

    @staticmethod
    def _log(threshold: Threshold, value: float, subject: str, *, breached: bool) -> None:
        # A fresh logger per (rare) event: a cached module-level one would bypass capture_logs.
        log = structlog.get_logger(__name__)
        fields = {
            "metric": threshold.metric,
            "value": round(value, 4),
            "limit": threshold.limit,
            "breach": str(threshold.breach),
        }
        if subject:
            fields["subject"] = subject
        if breached:
            log.warning("metric_threshold_crossed", **fields)
        else:
            log.info("metric_threshold_recovered", **fields)


class Metrics:
    """All of payflowd's monitoring points, registered in a registry of their own."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        recovery_kinds: Iterable[str] = _RECOVERY_KINDS,
        flow_states: Iterable[str] = _FLOW_STATES,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.watch = ThresholdWatch()
        self._clock = clock
        self._lock = threading.Lock()
        self._error_times: deque[float] = deque()
        self._recoveries: dict[str, tuple[int, int]] = {}
        self._flow_states: set[str] = set()
        self._transition_observers: dict[tuple[str, str], Callable[[float], None]] = {}
        self._provider_observers: dict[tuple[str, str], Callable[[float], None]] = {}
        self._register()
        for kind in recovery_kinds:
            self._recovery_attempts.labels(kind=kind)
            self._recovery_success.labels(kind=kind)
        self.set_flows(dict.fromkeys(flow_states, 0))

    def _register(self) -> None:
        reg = self.registry
        self._transition = Histogram(
            "payflowd_transition_seconds",
            "Time a flow spent in from_state before moving to to_state.",
            ["from_state", "to_state"],
            buckets=_TRANSITION_BUCKETS,
            registry=reg,
        )
        self._socket_health = Gauge(
            "payflowd_socket_health_ratio",
            "Share of websocket connections (sessions and feeds) that are healthy.",
            registry=reg,
        )
        self._socket_health.set(1.0)
        self._errors = Counter("payflowd_errors", "Errors by wire code.", ["code"], registry=reg)
        self._errors_per_min = Gauge(
            "payflowd_errors_per_minute", "Errors in the last 60 seconds.", registry=reg
        )
        self._errors_per_min.set_function(self.errors_per_minute)
        self._register_recovery(reg)
        self._register_runtime(reg)

    def _register_recovery(self, reg: CollectorRegistry) -> None:
        self._recovery_attempts = Counter(
            "payflowd_recovery_attempts", "Recovery attempts by kind.", ["kind"], registry=reg
        )
        self._recovery_success = Counter(
            "payflowd_recovery_success", "Successful recoveries by kind.", ["kind"], registry=reg
        )
        self._recovery_ratio = Gauge(
            "payflowd_recovery_success_ratio",
            "Successful share of recovery attempts since start, by kind.",
            ["kind"],
            registry=reg,
        )

    def _register_runtime(self, reg: CollectorRegistry) -> None:
        self._flows = Gauge("payflowd_flows", "Flows by state.", ["state"], registry=reg)
        self._actors = Gauge("payflowd_actors", "Live actors.", registry=reg)
        self._mailbox = Gauge("payflowd_mailbox_depth", "Messages waiting.", registry=reg)
        self._restarts = Counter(
            "payflowd_actor_restarts", "Actors restarted by supervision.", registry=reg
        )
        self._provider = Histogram(
            "payflowd_provider_call_seconds",
            "Provider call latency by operation and outcome.",
            ["operation", "outcome"],
            buckets=_PROVIDER_BUCKETS,
            registry=reg,
        )

    # --- what the domain side records ------------------------------------------------------

    def observe_transition(self, from_state: str, to_state: str, seconds: float) -> None:
        # Every flow step lands here; labels() validates and locks on each call, so each pair's
        # child is looked up once (children of this histogram are never removed).
        observe = self._transition_observers.get((from_state, to_state))
        if observe is None:
            child = self._transition.labels(from_state=from_state, to_state=to_state)
            observe = self._transition_observers[(from_state, to_state)] = child.observe
        observe(seconds)
        self.watch.check("transition_seconds", seconds)

    def error(self, code: str) -> None:
        self._errors.labels(code=code).inc()
        with self._lock:
            self._error_times.append(self._clock())
        self.errors_per_minute()

    def errors_per_minute(self) -> float:
        """Errors recorded in the last 60 s (a sliding window, not a per-minute bucket)."""
        horizon = self._clock() - ERROR_WINDOW_S
        with self._lock:
            while self._error_times and self._error_times[0] <= horizon:
                self._error_times.popleft()
            count = float(len(self._error_times))
        self.watch.check("errors_per_minute", count)
        return count

    def recovery(self, kind: str, ok: bool) -> None:
        self._recovery_attempts.labels(kind=kind).inc()
        if ok:
            self._recovery_success.labels(kind=kind).inc()
        with self._lock:
            attempts, successes = self._recoveries.get(kind, (0, 0))
            attempts, successes = attempts + 1, successes + int(ok)
            self._recoveries[kind] = (attempts, successes)
        ratio = successes / attempts
        self._recovery_ratio.labels(kind=kind).set(ratio)
        self.watch.check("recovery_success_ratio", ratio, subject=kind)

    def recovery_success_ratio(self, kind: str) -> float | None:
        """Successful share of `kind`'s recovery attempts, None before the first attempt."""
        with self._lock:
            attempts, successes = self._recoveries.get(kind, (0, 0))
        return successes / attempts if attempts else None

    def provider_call(self, op: str, outcome: str, seconds: float) -> None:
        # Every provider call lands here: each pair's child is looked up once, as above.
        observe = self._provider_observers.get((op, outcome))
        if observe is None:
            child = self._provider.labels(operation=op, outcome=outcome)
            observe = self._provider_observers[(op, outcome)] = child.observe
        observe(seconds)

    def set_flows(self, counts: Mapping[str, int]) -> None:
        """Replace the per-state flow counts; a state missing from `counts` now has none."""
        with self._lock:
            states = self._flow_states | set(counts)
            self._flow_states = states
        for state in states:
            self._flows.labels(state=state).set(counts.get(state, 0))

    def set_actors(self, n: int) -> None:
        self._actors.set(n)

    def set_mailbox(self, n: int) -> None:
        self._mailbox.set(n)

    def restart(self) -> None:
        self._restarts.inc()

    def socket_health(self, healthy: int, total: int) -> None:
        """No connections at all counts as healthy: nothing is failing."""
        ratio = healthy / total if total else 1.0
        self._socket_health.set(ratio)
        self.watch.check("socket_health_ratio", ratio)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry (content type `CONTENT_TYPE`)."""
        return generate_latest(self.registry)
