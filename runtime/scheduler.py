"""One thread for every timer in the process.

A pykka ThreadingActor is already one OS thread; a `threading.Timer` per poll, heartbeat, backoff
or preservation window would add another thread per flow. Instead every timer is one entry in a
heap of `time.monotonic()` deadlines served by a single thread named `payflowd-scheduler`, which
`Scheduler()` starts in `__init__` (so a scheduler is ready, or failed, the moment it exists) and
`close()` joins.

Firing a timer only does `target.tell(message)`: the handler runs later on the target's own
thread, never on the scheduler thread. The one exception is `call_later`, meant for runtime
internals such as a passivation sweep; its callback runs on the scheduler thread and must be quick
and non-blocking, because every other timer waits behind it.

A timer whose target has stopped is dropped at fire time and never fires again (periodic ones too);
that is how actors stop, so it is logged at debug (`timer_target_stopped`), also when the actor
died between the liveness check and the `tell`. A `tell` that raises while the target lives on (its
bounded mailbox is full: `Overloaded`) is a warning (`timer_tell_failed`), logged once per timer so
a periodic timer cannot flood the log, and the timer keeps running. Log lines name the message type,
never its contents, and no failure stops the scheduler thread.

Cancelling is O(1): the entry stays in the heap flagged as cancelled and is skipped when it reaches
the top; once cancelled entries outnumber live ones the heap is rebuilt, so the amortised cost stays
O(1) and memory follows the live timers.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from runtime.errors import Internal

THREAD_NAME = "payflowd-scheduler"


class Target(Protocol):
    """Anything a timer can deliver to; `pykka.ActorRef` satisfies it."""

    def tell(self, message: object) -> None: ...

    def is_alive(self) -> bool: ...


class _State(enum.Enum):
    SCHEDULED = enum.auto()  # in the heap, will fire
    FIRING = enum.auto()  # a periodic timer being delivered right now; it will be re-armed
    DONE = enum.auto()  # a one-shot timer handed to delivery
    CANCELLED = enum.auto()  # will never fire: cancel(), close(), or its target stopped


_ALIVE = frozenset({_State.SCHEDULED, _State.FIRING})


class TimerHandle:
    """One scheduled timer. Only a `Scheduler` creates them."""

    __slots__ = (
        "_callback",
        "_deadline",
        "_failure_logged",
        "_interval",
        "_message",
        "_scheduler",
        "_state",
        "_target",
    )

    def __init__(
        self,
        scheduler: Scheduler,
        deadline: float,
        *,
        interval: float | None,
        target: Target | None,
        message: object,
        callback: Callable[[], None] | None,
    ) -> None:
        self._scheduler = scheduler
        self._deadline = deadline
        self._interval = interval
        self._target = target
        self._message = message
        self._callback = callback
        self._state = _State.SCHEDULED
        self._failure_logged = False

    def cancel(self) -> bool:
        """Stop the timer; True if this call prevented a future firing.

        False when it already fired (one-shot), was already cancelled or dropped, or its delivery
        had already begun (a one-shot being delivered right now still arrives). A periodic timer
        cancelled in the middle of a delivery still completes that one tick, then stops.
        """
        return self._scheduler._cancel(self)

    @property
    def cancelled(self) -> bool:
        """True if the timer stopped without completing: `cancel()`, `Scheduler.close()`, or
        its target stopped."""
        return self._state is _State.CANCELLED

    @property
    def active(self) -> bool:
        """True while the timer will still fire (a periodic one until it is cancelled)."""
        return self._state in _ALIVE

    @property
    def periodic(self) -> bool:
        return self._interval is not None


def next_periodic_deadline(previous: float, interval: float, now: float) -> float:
    """The first point of the grid `previous + k * interval` (k >= 1) strictly after `now`.

    Anchoring on the previous deadline (not on the firing time) keeps a periodic timer from
    drifting; jumping over the grid points already past skips missed ticks instead of bursting
    them out one after another after a stall.
    """
    following = previous + interval
    if following > now:
        return following
    missed = math.floor((now - previous) / interval)
    return max(previous + (missed + 1) * interval, math.nextafter(now, math.inf))


class Scheduler:
    """All the timers of a process on one thread. Thread-safe; use as a context manager or call
    `close()` at shutdown."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._sequence = itertools.count()  # ties on a deadline fire in scheduling order
        self._live = 0
        self._cancelled_in_heap = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    # --- scheduling ----------------------------------------------------------------------------

    def schedule_once(self, delay: float, target: Target, message: object) -> TimerHandle:
        """`target.tell(message)` once, `delay` seconds from now (a negative delay means now)."""
        return self._add(_finite(delay, "delay"), None, target, message, None)

    def schedule_periodic(
        self,
        interval: float,
        target: Target,
        message: object,
        *,
        initial_delay: float | None = None,
    ) -> TimerHandle:
        """`target.tell(message)` every `interval` seconds, first after `initial_delay`
        (default: `interval`), at a fixed rate: missed ticks are skipped, never burst."""
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"interval must be a positive finite number, got {interval}")
        first = interval if initial_delay is None else _finite(initial_delay, "initial_delay")
        return self._add(first, interval, target, message, None)

    def call_later(self, delay: float, fn: Callable[[], None]) -> TimerHandle:
        """Run `fn()` on the scheduler thread after `delay` seconds. For runtime internals only:
        `fn` must be quick and must not block, since every other timer waits for it."""
        return self._add(_finite(delay, "delay"), None, None, None, fn)

    # --- introspection and shutdown ------------------------------------------------------------

    def pending(self) -> int:
        """Live timers: scheduled and not cancelled (a periodic one counts until cancelled)."""
        with self._cond:
            return self._live

    def heap_size(self) -> int:
        """Heap entries including cancelled ones awaiting removal; shows compaction works."""
        with self._cond:
            return len(self._heap)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Cancel every timer, stop the thread and join it. Idempotent. A callback of
        `call_later` may call it too; the thread then ends once that callback returns."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._cancel_everything()
                self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals: every heap and counter change happens under self._cond ----------------------

    def _add(
        self,
        delay: float,
        interval: float | None,
        target: Target | None,
        message: object,
        callback: Callable[[], None] | None,
    ) -> TimerHandle:
        deadline = time.monotonic() + max(delay, 0.0)
        timer = TimerHandle(
            self, deadline, interval=interval, target=target, message=message, callback=callback
        )
        with self._cond:
            if self._closed:
                raise Internal("the scheduler is closed; no timer can be scheduled after close()")
            self._live += 1
            self._push(timer)
        return timer

    def _push(self, timer: TimerHandle) -> None:
        heapq.heappush(self._heap, (timer._deadline, next(self._sequence), timer))
        if self._heap[0][2] is timer:
            self._cond.notify()  # a new earliest deadline: the thread must wake sooner

    def _cancel(self, timer: TimerHandle) -> bool:
        with self._cond:
            if timer._state is _State.SCHEDULED:
                self._cancelled_in_heap += 1
            elif timer._state is not _State.FIRING:
                return False
            timer._state = _State.CANCELLED
            self._live -= 1
            self._compact_if_mostly_cancelled()
            return True

    def _compact_if_mostly_cancelled(self) -> None:
        if self._cancelled_in_heap * 2 <= len(self._heap):
            return
        self._heap = [entry for entry in self._heap if entry[2]._state is _State.SCHEDULED]
        heapq.heapify(self._heap)
        self._cancelled_in_heap = 0

    def _cancel_everything(self) -> None:
        for _, _, timer in self._heap:
            timer._state = _State.CANCELLED
        self._heap.clear()
        self._cancelled_in_heap = 0
        self._live = 0

    # --- internals: the scheduler thread -------------------------------------------------------

    def _run(self) -> None:
        while (timer := self._take_next_due()) is not None:
            keep = self._deliver(timer)
            self._after_delivery(timer, keep=keep)

    def _take_next_due(self) -> TimerHandle | None:
        """Block until the earliest live timer is due and take it; None once closed."""
        with self._cond:
            while not self._closed:
                self._discard_cancelled_top()
                if not self._heap:
                    self._cond.wait()
                    continue
                remaining = self._heap[0][0] - time.monotonic()
                if remaining <= 0:
                    return self._pop_due()
                self._cond.wait(remaining)
            return None

    def _discard_cancelled_top(self) -> None:
        while self._heap and self._heap[0][2]._state is _State.CANCELLED:
            heapq.heappop(self._heap)
            self._cancelled_in_heap -= 1

    def _pop_due(self) -> TimerHandle:
        timer = heapq.heappop(self._heap)[2]
        if timer._interval is None:
            timer._state = _State.DONE
            self._live -= 1
        else:
            timer._state = _State.FIRING
        return timer

    def _deliver(self, timer: TimerHandle) -> bool:
        """Fire one timer outside the lock; False when its target is gone for good."""
        try:
            return _fire(timer)
        except Exception as exc:  # noqa: BLE001 - the one timer thread must outlive any target
            alive = _target_alive(timer)
            if alive:
                _log_failure(timer, exc)
            else:  # the actor stopped between the liveness check and the tell: an ordinary race
                _log_target_stopped(timer, error_type=type(exc).__qualname__)
            return alive

    def _after_delivery(self, timer: TimerHandle, *, keep: bool) -> None:
        if keep and timer._interval is None:
            return  # a delivered one-shot has nothing left to update: skip the lock
        with self._cond:
            if timer._state is _State.DONE:
                if not keep:
                    timer._state = _State.CANCELLED  # a one-shot dropped for a stopped target
                return
            if timer._state is not _State.FIRING:
                return  # cancelled while it was being delivered; its count is already gone
            if keep and not self._closed and timer._interval is not None:
                timer._deadline = next_periodic_deadline(
                    timer._deadline, timer._interval, time.monotonic()
                )
                timer._state = _State.SCHEDULED
                self._push(timer)
                return
            timer._state = _State.CANCELLED
            if not self._closed:  # close() already zeroed the count, this timer included
                self._live -= 1


def _fire(timer: TimerHandle) -> bool:
    if timer._callback is not None:
        timer._callback()
        return True
    target = timer._target
    assert target is not None  # a timer carries either a callback or a target
    if not target.is_alive():
        _log_target_stopped(timer, error_type=None)
        return False
    target.tell(timer._message)
    return True


def _target_alive(timer: TimerHandle) -> bool:
    if timer._target is None:
        return True  # a failing callback is a bug to log, not a reason to stop its timer
    try:
        return timer._target.is_alive()
    except Exception:  # noqa: BLE001 - a target that cannot even answer is treated as gone
        return False


def _log_target_stopped(timer: TimerHandle, *, error_type: str | None) -> None:
    _logger().debug(
        "timer_target_stopped", message_type=_message_type(timer), error_type=error_type
    )


def _log_failure(timer: TimerHandle, exc: Exception) -> None:
    # Once per timer: a periodic timer aimed at a full mailbox would otherwise log every tick.
    if timer._failure_logged:
        return
    timer._failure_logged = True
    log = _logger()
    if timer._callback is not None:
        log.error("timer_callback_failed", callback=_message_type(timer), exc_info=exc)
        return
    # The message type only: message contents may carry ids or secrets.
    log.warning(
        "timer_tell_failed",
        message_type=_message_type(timer),
        error_type=type(exc).__qualname__,
        periodic=timer.periodic,
    )


def _logger() -> Any:
    # Looked up per use (these events are rare) so the logging configured at that moment applies,
    # even if it changed after this module was imported.
    return structlog.get_logger(__name__)


def _message_type(timer: TimerHandle) -> str:
    if timer._callback is not None:
        return getattr(timer._callback, "__qualname__", type(timer._callback).__qualname__)
    return type(timer._message).__qualname__


def _finite(seconds: float, name: str) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, got {seconds}")
    return seconds
