"""The one timer thread: deadline order, periodic ticks, cancellation, dead targets, shutdown."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import pykka
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from runtime.errors import Internal, Overloaded
from runtime.scheduler import THREAD_NAME, Scheduler, next_periodic_deadline
from tests.waiting import wait_until

WAIT = 5.0  # generous upper bound for anything that should happen within milliseconds


class Recorder:
    """A timer target that keeps what it was told, when (on the scheduler's clock) and where."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.arrivals: list[tuple[float, object]] = []
        self.threads: set[str] = set()
        self.alive = True

    def tell(self, message: object) -> None:
        with self._cond:
            self.arrivals.append((time.monotonic(), message))
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def is_alive(self) -> bool:
        return self.alive

    @property
    def messages(self) -> list[object]:
        with self._cond:
            return [message for _, message in self.arrivals]

    def wait_for(self, count: int) -> list[tuple[float, object]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.arrivals) >= count, WAIT), self.arrivals
            return list(self.arrivals)


class FullMailbox:
    """An actor that is alive but whose bounded mailbox refuses every message."""

    def __init__(self) -> None:
        self.attempts = 0

    def tell(self, message: object) -> None:
        self.attempts += 1
        raise Overloaded("mailbox full")

    def is_alive(self) -> bool:
        return True


class DiesDuringTell:
    """An actor that stops between the scheduler's liveness check and its tell."""

    def __init__(self) -> None:
        self.alive = True

    def tell(self, message: object) -> None:
        self.alive = False
        raise pykka.ActorDeadError("actor stopped")

    def is_alive(self) -> bool:
        return self.alive


class Forwarder(pykka.ThreadingActor):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def on_receive(self, message: object) -> None:
        self.recorder.tell(message)


class CardNumber:
    """A message whose contents must never reach a log line."""

    def __init__(self, number: str) -> None:
        self.number = number

    def __repr__(self) -> str:
        return f"CardNumber({self.number})"


def scheduler_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == THREAD_NAME)


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    with Scheduler() as scheduler:
        yield scheduler


@pytest.fixture
def stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


# --- order and timing --------------------------------------------------------------------------


def test_timers_fire_in_deadline_order_never_early_and_on_the_one_thread(
    scheduler: Scheduler,
) -> None:
    recorder = Recorder()
    threads_before = threading.active_count()
    start = time.monotonic()
    delays = [0.05, 0.01, 0.04, 0.02, 0.03]
    for delay in delays:
        scheduler.schedule_once(delay, recorder, delay)

    assert threading.active_count() == threads_before
    arrivals = recorder.wait_for(len(delays))
    assert [message for _, message in arrivals] == sorted(delays)
    assert all(isinstance(delay, float) and at >= start + delay for at, delay in arrivals)
    assert recorder.threads == {THREAD_NAME}
    assert scheduler.pending() == 0


def test_timers_with_the_same_deadline_fire_in_scheduling_order(scheduler: Scheduler) -> None:
    recorder = Recorder()
    for index in range(20):
        scheduler.schedule_once(-1.0, recorder, index)  # all already due

    assert [message for _, message in recorder.wait_for(20)] == list(range(20))


def test_periodic_timer_repeats_at_its_interval_until_cancelled(scheduler: Scheduler) -> None:
    recorder, sentinel = Recorder(), Recorder()
    interval = 0.02
    start = time.monotonic()
    handle = scheduler.schedule_periodic(interval, recorder, "tick")
    arrivals = recorder.wait_for(5)
    assert scheduler.pending() == 1
    assert handle.active

    assert handle.cancel()
    ticks_at_cancel = len(recorder.messages)
    scheduler.schedule_once(5 * interval, sentinel, "later")
    sentinel.wait_for(1)

    # The n-th tick can never come before n intervals: no early firing and no bursting.
    assert all(at >= start + (n + 1) * interval for n, (at, _) in enumerate(arrivals))
    assert len(recorder.messages) == ticks_at_cancel
    assert handle.cancelled
    assert not handle.active
    assert scheduler.pending() == 0


def test_periodic_timer_starts_after_its_initial_delay_not_its_interval(
    scheduler: Scheduler,
) -> None:
    recorder = Recorder()
    start = time.monotonic()
    handle = scheduler.schedule_periodic(60.0, recorder, "tick", initial_delay=0.02)

    first_at, _ = recorder.wait_for(1)[0]  # an hour-long wait would time out here
    assert first_at >= start + 0.02
    assert handle.active
    assert handle.periodic


def test_periodic_timer_skips_ticks_missed_during_a_stall(scheduler: Scheduler) -> None:
    recorder = Recorder()
    interval, stall = 0.02, 0.2
    start = time.monotonic()
    handle = scheduler.schedule_periodic(interval, recorder, "tick")
    stalled = threading.Event()

    def misbehaving_callback() -> None:  # blocks the scheduler thread for ten intervals
        stalled.set()
        threading.Event().wait(stall)

    scheduler.call_later(0.03, misbehaving_callback)
    assert stalled.wait(WAIT)
    count_after_stall = len(recorder.wait_for(2)) + 3
    arrivals = recorder.wait_for(count_after_stall)
    handle.cancel()

    grid_points = math.floor((arrivals[-1][0] - start) / interval)
    # Bursting would deliver every grid point (about 10 of them fall inside the stall).
    assert len(arrivals) <= grid_points - 6


@given(
    previous=st.floats(0, 1e6),
    interval=st.floats(1e-3, 1e3),
    lateness=st.floats(0, 1e4),
)
def test_next_periodic_deadline_is_the_first_grid_point_after_now(
    previous: float, interval: float, lateness: float
) -> None:
    now = previous + lateness
    following = next_periodic_deadline(previous, interval, now)

    steps = (following - previous) / interval
    assert following > now
    assert steps >= 1 - 1e-6
    assert abs(steps - round(steps)) < 1e-6 * max(1.0, steps)
    assert following - interval <= now + 1e-6 * max(1.0, now)


def test_next_periodic_deadline_does_not_drift_when_on_time() -> None:
    assert next_periodic_deadline(10.0, 0.5, 10.1) == 10.5
    assert next_periodic_deadline(10.0, 0.5, 12.2) == 12.5


# --- cancellation ------------------------------------------------------------------------------


def test_cancel_before_firing_prevents_the_message(scheduler: Scheduler) -> None:
    recorder = Recorder()
    handle = scheduler.schedule_once(0.03, recorder, "cancelled")
    scheduler.schedule_once(0.06, recorder, "kept")

    assert handle.cancel()
    assert recorder.wait_for(1)
    assert wait_until(lambda: scheduler.pending() == 0)
    assert recorder.messages == ["kept"]
    assert handle.cancelled
    assert not handle.active
    assert not handle.cancel()


def test_cancel_after_firing_reports_it_was_too_late(scheduler: Scheduler) -> None:
    recorder = Recorder()
    handle = scheduler.schedule_once(0.0, recorder, "fired")
    recorder.wait_for(1)

    assert wait_until(lambda: not handle.active)
    assert not handle.cancel()
    assert not handle.cancelled


def test_100k_pending_timers_are_cheap_to_hold_and_cancel(scheduler: Scheduler) -> None:
    recorder = Recorder()
    handles = [scheduler.schedule_once(3600.0 + i, recorder, i) for i in range(100_000)]
    assert scheduler.pending() == 100_000
    assert scheduler.heap_size() == 100_000

    assert all(handle.cancel() for handle in handles)
    assert scheduler.pending() == 0
    assert scheduler.heap_size() == 0  # compacted, not 100k dead entries waiting for their hour

    scheduler.schedule_once(0.0, recorder, "still works")
    assert recorder.wait_for(1)[0][1] == "still works"


# --- dead and failing targets ------------------------------------------------------------------


def test_timers_to_a_stopped_actor_are_dropped(scheduler: Scheduler, stop_actors: None) -> None:
    recorder, survivor = Recorder(), Recorder()
    actor = Forwarder.start(recorder)
    with capture_logs() as logs:
        periodic = scheduler.schedule_periodic(0.01, actor, "tick")
        once = scheduler.schedule_once(0.1, actor, "after stop")
        recorder.wait_for(2)
        assert scheduler.pending() == 2

        actor.stop()
        assert wait_until(lambda: scheduler.pending() == 0)
        scheduler.schedule_once(0.0, survivor, "next")
        assert survivor.wait_for(1)[0][1] == "next"

    # A stopped actor is ordinary, not a failure: dropped quietly, never a warning.
    assert {entry["log_level"] for entry in logs} == {"debug"}
    assert {entry["event"] for entry in logs} == {"timer_target_stopped"}
    assert "after stop" not in recorder.messages
    assert periodic.cancelled
    assert once.cancelled
    assert scheduler.heap_size() == 0


def test_a_failing_tell_is_logged_once_and_the_next_timer_still_fires(
    scheduler: Scheduler,
) -> None:
    full, recorder = FullMailbox(), Recorder()
    with capture_logs() as logs:
        handle = scheduler.schedule_periodic(0.01, full, CardNumber("4242424242424242"))
        assert wait_until(lambda: full.attempts >= 3)
        scheduler.schedule_once(0.0, recorder, "next")
        recorder.wait_for(1)

    failures = [entry for entry in logs if entry["event"] == "timer_tell_failed"]
    assert failures == [
        {
            "event": "timer_tell_failed",
            "log_level": "warning",
            "message_type": "CardNumber",
            "error_type": "Overloaded",
            "periodic": True,
        }
    ]
    assert "4242" not in repr(logs)
    assert handle.active  # a full mailbox is transient: the actor is alive, keep ticking
    handle.cancel()


def test_a_periodic_timer_whose_tell_finds_the_actor_dead_is_cancelled(
    scheduler: Scheduler,
) -> None:
    target, recorder = DiesDuringTell(), Recorder()
    with capture_logs() as logs:
        handle = scheduler.schedule_periodic(0.01, target, "tick")
        assert wait_until(lambda: handle.cancelled)
        scheduler.schedule_once(0.0, recorder, "next")
        recorder.wait_for(1)

    # Stopping is ordinary, so the race is a debug line, not a warning.
    assert [(entry["event"], entry["log_level"], entry["error_type"]) for entry in logs] == [
        ("timer_target_stopped", "debug", "ActorDeadError")
    ]
    assert scheduler.pending() == 0


def test_a_failing_callback_is_logged_and_the_thread_survives(scheduler: Scheduler) -> None:
    recorder = Recorder()

    def broken_sweep() -> None:
        raise ValueError("bug in a sweep")

    with capture_logs() as logs:
        scheduler.call_later(0.0, broken_sweep)
        scheduler.schedule_once(0.01, recorder, "next")
        recorder.wait_for(1)

    events = [entry for entry in logs if entry["event"] == "timer_callback_failed"]
    assert len(events) == 1
    assert events[0]["callback"].endswith("broken_sweep")


def test_call_later_runs_the_callback_on_the_scheduler_thread(scheduler: Scheduler) -> None:
    ran_on: list[str] = []
    done = threading.Event()

    def sweep() -> None:
        ran_on.append(threading.current_thread().name)
        done.set()

    scheduler.call_later(0.01, sweep)

    assert done.wait(WAIT)
    assert ran_on == [THREAD_NAME]


# --- arguments and shutdown --------------------------------------------------------------------


@pytest.mark.parametrize("interval", [0.0, -1.0, math.inf, math.nan])
def test_periodic_timer_refuses_an_interval_that_is_not_positive_and_finite(
    scheduler: Scheduler, interval: float
) -> None:
    with pytest.raises(ValueError, match="interval"):
        scheduler.schedule_periodic(interval, Recorder(), "tick")
    assert scheduler.pending() == 0


@pytest.mark.parametrize("delay", [math.inf, math.nan])
def test_a_delay_must_be_finite(scheduler: Scheduler, delay: float) -> None:
    with pytest.raises(ValueError, match="delay"):
        scheduler.schedule_once(delay, Recorder(), "never")
    assert scheduler.pending() == 0


def test_close_joins_the_thread_and_cancels_what_was_pending() -> None:
    threads_before = threading.active_count()
    named_before = scheduler_threads()
    scheduler = Scheduler()
    handle = scheduler.schedule_once(60.0, Recorder(), "never")
    assert scheduler_threads() == named_before + 1

    scheduler.close()
    scheduler.close()  # idempotent

    assert threading.active_count() == threads_before
    assert scheduler_threads() == named_before
    assert scheduler.closed
    assert scheduler.pending() == 0
    assert handle.cancelled
    with pytest.raises(Internal, match="closed"):
        scheduler.schedule_once(0.0, Recorder(), "too late")


def test_a_callback_may_close_its_own_scheduler() -> None:
    threads_before = threading.active_count()
    scheduler = Scheduler()
    scheduler.call_later(0.0, scheduler.close)

    assert wait_until(lambda: threading.active_count() == threads_before)
    assert scheduler.closed
