"""Many mailboxes on a few threads: the run queue, its workers, and the bounded mailbox.

A pykka `ThreadingActor` is an OS thread: 10,000 of them start in seconds and wake up in a storm.
Here an actor is a `Mailbox` plus a behaviour, and a `Dispatcher` owns a small pool of worker
threads fed by one run queue. Putting a message into an idle mailbox puts the mailbox on the run
queue; a worker takes it and lets it handle up to `batch` messages (Akka's "throughput"), then the
mailbox goes back on the queue if more are waiting, so a busy actor cannot starve the others.

The invariant everything rests on: a mailbox is on the run queue, or being run, at most once.
`_scheduled` says so, and it only changes under the mailbox's lock, so one actor never runs on two
threads and handles its messages one at a time, in arrival order.

Mailboxes are bounded: a full one refuses the message in the sender (`Overloaded`) rather than
growing without limit. The check and the append happen under the same lock, so the bound is exact.
Runtime control messages (stop, supervision) bypass the bound: refusing them would wedge recovery.
"""

from __future__ import annotations

import abc
import asyncio
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, cast

import pykka
import structlog

from runtime.errors import Internal

if TYPE_CHECKING:
    from pykka._types import OptExcInfo

T = TypeVar("T")

_log = structlog.get_logger(__name__)

DEFAULT_BATCH: Final = 64
"""Messages one actor handles per turn before yielding its worker (see benchmarks/runtime_bench)."""

_CALLBACK_LOCK = threading.Lock()
_WORKER_IDENTS: set[int] = set()
"""Thread idents of every live dispatcher worker in the process (read by futures, see below)."""


def on_dispatcher_thread() -> bool:
    """True on a worker thread of any dispatcher.

    Blocking there on a reply would stop every actor that worker serves (with one worker, the
    replying actor itself), so futures refuse to block on these threads.
    """
    return threading.get_ident() in _WORKER_IDENTS


def refuse_to_block_here() -> None:
    """Raise `Internal` on a dispatcher thread, where waiting for a reply would deadlock."""
    if on_dispatcher_thread():
        raise Internal(
            "blocking on a reply inside an actor would stall its dispatcher thread; "
            "use tell, or ask(block=False) with add_done_callback"
        )


class Runnable(Protocol):
    def run(self, batch: int) -> None: ...


class _Stop:
    """Sentinel on the run queue: the worker that takes it exits."""

    def run(self, _batch: int) -> None:  # pragma: no cover - never run, only recognised
        raise AssertionError("the stop sentinel is never run")


_STOP: Final = _Stop()


class Dispatcher:
    """A pool of `threads` workers taking runnables from one FIFO run queue."""

    def __init__(
        self,
        *,
        threads: int = 1,
        batch: int = DEFAULT_BATCH,
        name: str = "payflowd-dispatch",
        initializer: Callable[[], None] | None = None,
    ) -> None:
        if threads < 1 or batch < 1:
            raise ValueError(f"threads and batch must be >= 1, got {threads} and {batch}")
        self.batch = batch
        self._queue: SimpleQueue[Runnable] = SimpleQueue()
        self.submit: Callable[[Runnable], None] = self._queue.put
        """Put a runnable on the run queue (a bound C method: it is on every message's path)."""
        self._initializer = initializer
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        self._closed = False
        for thread in self._threads:
            thread.start()

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        return tuple(self._threads)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Let the workers finish what is queued, then join them; True if all of them ended.

        Runnables submitted after this call may never run. Idempotent.
        """
        if threading.get_ident() in {t.ident for t in self._threads}:
            raise RuntimeError("a dispatcher cannot be shut down from one of its own workers")
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    def _work(self) -> None:
        _WORKER_IDENTS.add(threading.get_ident())
        try:
            if self._initializer is not None:
                self._initializer()
            self._serve(self._queue.get, self.batch)
        finally:
            _WORKER_IDENTS.discard(threading.get_ident())

    @staticmethod
    def _serve(take: Callable[[], Runnable], batch: int) -> None:
        while (runnable := take()) is not _STOP:
            try:
                runnable.run(batch)
            except BaseException as exc:  # noqa: BLE001 - a worker serves many actors: outlive bugs
                # Mailbox.run handles every failure of an actor; reaching here is a runtime bug.
                _log.critical("dispatcher_run_failed", error_type=type(exc).__qualname__)


class Ask:
    """A queued message that wants a reply. Tells are queued bare: no wrapper, no tuple."""

    __slots__ = ("message", "reply_to")

    def __init__(self, message: Any, reply_to: Any) -> None:
        self.message = message
        self.reply_to = reply_to


class Mailbox(abc.ABC):
    """A bounded FIFO of messages (`Ask` when a reply is due) that schedules itself to run.

    Subclasses implement `run(batch)`: take messages with `_queue.popleft()` (only the thread
    running the mailbox takes), then call `_finish()` exactly once at the end of every run.
    A *held* mailbox (the initial state) queues messages without being scheduled until
    `release()`; a *suspended* one keeps queueing but only runs for control messages.
    """

    __slots__ = ("_capacity", "_closed", "_control", "_lock", "_queue", "_scheduled", "_submit")

    def __init__(self, dispatcher: Dispatcher, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox capacity must be >= 1, got {capacity}")
        self._submit = dispatcher.submit
        self._lock = threading.Lock()
        self._queue: deque[Any] = deque()
        self._control: deque[Any] | None = None  # created on first use: most actors never need it
        self._capacity = capacity
        self._scheduled = True  # held until release(): nothing runs before the actor exists
        self._closed = False

    # --- producers: any thread -------------------------------------------------------------------

    def post(self, message: Any, reply_to: Any = None) -> None:
        """Queue a message; raises `_refused()` when full and `_dead()` once closed."""
        lock = self._lock
        lock.acquire()
        try:
            if self._closed or len(self._queue) >= self._capacity:
                raise self._dead() if self._closed else self._refused()
            self._queue.append(message if reply_to is None else Ask(message, reply_to))
            if self._scheduled:
                return
            self._scheduled = True
        finally:
            lock.release()
        self._submit(self)

    def post_unbounded(self, message: Any, reply_to: Any = None) -> None:
        """Queue a runtime message past the bound (stop requests, supervision reports)."""
        with self._lock:
            if self._closed:
                raise self._dead()
            self._queue.append(message if reply_to is None else Ask(message, reply_to))
            if self._scheduled:
                return
            self._scheduled = True
        self._submit(self)

    def post_control(self, command: Any) -> bool:
        """Queue a control command, run before any further message; False once closed."""
        with self._lock:
            if self._closed:
                return False
            if self._control is None:
                self._control = deque()
            self._control.append(command)
            if self._scheduled:
                return True
            self._scheduled = True
        self._submit(self)
        return True

    def release(self) -> None:
        """Schedule a held mailbox for its first run."""
        self._submit(self)

    # --- the thread running this mailbox ---------------------------------------------------------

    def _take_control(self) -> Any:
        """The next control command or None (only called by the running thread)."""
        control = self._control
        return control.popleft() if control else None

    def _finish(self, suspended: bool) -> None:
        """End a run: go back on the run queue if there is work, else become idle."""
        lock = self._lock
        lock.acquire()
        try:
            if not (self._control or (self._queue and not suspended and not self._closed)):
                self._scheduled = False
                return
        finally:
            lock.release()
        self._submit(self)

    def _close_if_empty(self) -> bool:
        """Close unless a message is waiting; atomic with `post`, so no message slips past."""
        with self._lock:
            if self._queue:
                return False
            self._closed = True
            return True

    def _close(self) -> list[Any]:
        """Close and hand back every queued message (the caller answers or dead-letters them)."""
        with self._lock:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            if self._control is not None:
                self._control.clear()
            return left

    # --- introspection and the pykka ActorInbox protocol ------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._queue)

    def empty(self) -> bool:
        return not self._queue

    # --- what subclasses decide ------------------------------------------------------------------

    @abc.abstractmethod
    def run(self, batch: int) -> None:
        """Handle up to `batch` queued messages on the calling worker thread."""

    def _dead(self) -> Exception:
        return RuntimeError("mailbox closed")

    def _refused(self) -> Exception:
        return RuntimeError("mailbox full")


# --- futures: how threads wait for actors -------------------------------------------------------


class DispatchFuture(pykka.Future[T]):
    """A pykka future completed by a dispatcher worker.

    Waiting is one `Lock.acquire` (ThreadingFuture takes a Condition and a queue), which is what a
    blocked `ask` costs on the round trip. `add_done_callback` lets code that must not block, such
    as actors or the asyncio loop (see `as_asyncio`), react to the result instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self._waiter = threading.Lock()
        self._waiter.acquire()
        self._outcome: tuple[Any, OptExcInfo | None] | None = None
        self._callbacks: list[Callable[[DispatchFuture[T]], None]] | None = None

    def done(self) -> bool:
        return self._outcome is not None

    def get(self, *, timeout: float | None = None) -> T:
        if self._get_hook is not None:
            return super().get(timeout=timeout)
        outcome = self._outcome or self._wait(timeout)
        value, exc_info = outcome
        if exc_info is None:
            return cast(T, value)
        exc_type, exc_value, exc_traceback = exc_info
        if exc_value is None:
            assert exc_type is not None
            exc_value = exc_type()
        if exc_value.__traceback__ is not exc_traceback:
            raise exc_value.with_traceback(exc_traceback)
        raise exc_value

    def _wait(self, timeout: float | None) -> tuple[Any, OptExcInfo | None]:
        refuse_to_block_here()
        if not self._waiter.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            raise pykka.Timeout(f"{timeout} seconds")
        self._waiter.release()  # every later get() passes straight through
        assert self._outcome is not None
        return self._outcome

    def set(self, value: T | None = None) -> None:
        self._complete((value, None))

    def set_exception(self, exc_info: OptExcInfo | None = None) -> None:
        self._complete((None, exc_info or sys.exc_info()))

    def _complete(self, outcome: tuple[Any, OptExcInfo | None]) -> None:
        if self._outcome is not None or self._get_hook is not None:
            raise queue.Full  # pykka's signal for a future completed twice
        self._outcome = outcome
        self._waiter.release()
        if self._callbacks is not None:
            self._run_callbacks()

    def add_done_callback(self, callback: Callable[[DispatchFuture[T]], None]) -> None:
        """Call `callback(self)` once complete: on the completing thread, or now if done."""
        with _CALLBACK_LOCK:
            if self._callbacks is None:
                self._callbacks = []
            self._callbacks.append(callback)
        if self._outcome is not None:
            self._run_callbacks()

    def _run_callbacks(self) -> None:
        # Both the completer and a late add_done_callback may get here; the swap under the lock
        # makes each callback run exactly once.
        with _CALLBACK_LOCK:
            callbacks, self._callbacks = self._callbacks or [], []
        for callback in callbacks:
            try:
                callback(self)
            except Exception as exc:  # noqa: BLE001 - one bad callback must not starve the others
                _log.error("future_callback_failed", error_type=type(exc).__qualname__)


def as_asyncio(
    future: pykka.Future[T], loop: asyncio.AbstractEventLoop | None = None
) -> asyncio.Future[T]:
    """Await a pykka future on an asyncio loop without blocking the loop."""
    loop = loop or asyncio.get_running_loop()
    if not isinstance(future, DispatchFuture) or future._get_hook is not None:
        return asyncio.ensure_future(loop.run_in_executor(None, future.get), loop=loop)
    result: asyncio.Future[T] = loop.create_future()

    def copy(done: DispatchFuture[T]) -> None:
        if result.done():
            return
        try:
            result.set_result(done.get())
        except BaseException as exc:  # noqa: BLE001 - the awaiting coroutine gets whatever it was
            result.set_exception(exc)

    def hand_over(done: DispatchFuture[T]) -> None:
        loop.call_soon_threadsafe(copy, done)

    future.add_done_callback(hand_over)
    return result
