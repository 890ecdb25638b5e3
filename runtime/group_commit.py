"""Group commit: many concurrent appends share one transaction and one fsync.

A durable commit costs one fsync whatever it holds, so the appends that arrive while the disk is
busy are worth committing together. `GroupCommitter` owns one writer thread: it takes whatever is
queued (up to `max_batch`), hands it to `Journal.append_batch` (one transaction, each request
checked on its own), and resolves each submitter's future with its new version or its own
`VersionConflict` / `AliasConflict`. Under load the batch grows by itself; alone, a request waits
for nothing but its own commit.

From threads::

    version = committer.submit(request).result()

From asyncio (never block the loop on `.result()`)::

    version = await committer.append(request)     # = await asyncio.wrap_future(submit(request))

From actors, which turn the outcome into a message anyway::

    committer.submit_then(request, lambda outcome: self_ref.tell(Persisted(outcome)))

`submit_then` skips the Future (and the Condition each one builds): under payflow-bench that
was a visible share of a flow's cost, six appends per payment.

A future cancelled before the writer takes it is not written. Once the writer has taken it the
append may be durable even if the awaiting task was cancelled: reload the stream to know.
Future callbacks run on the writer thread; keep them short (asyncio's wrap_future only schedules
onto the loop).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Final, Self

from runtime.errors import Internal
from runtime.journal import AppendRequest, Journal

Outcome = int | BaseException
"""The new version, the request's own `VersionConflict`/`AliasConflict`, or the batch's failure."""
_Pending = tuple[AppendRequest, "Future[int] | Callable[[Outcome], None]"]


class _Stop:
    """Queued by `close()`; everything queued before it is still committed."""


_STOP: Final = _Stop()


class GroupCommitter:
    """Commits submitted appends in batches on one writer thread. Does not own the journal."""

    def __init__(
        self, journal: Journal, *, max_batch: int = 256, name: str = "journal-group-commit"
    ) -> None:
        if max_batch < 1:
            raise Internal("max_batch must be at least 1")
        self._journal = journal
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | _Stop] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders submit() against close(): nothing after _STOP
        self._closed = False
        # Counted on the writer thread; read them for metrics (average batch = requests/batches).
        self.batches = 0  # append_batch calls that returned
        self.requests = 0  # requests those calls decided, conflicts included
        # A daemon thread cannot hold the interpreter open if an owner forgets close(); SQLite's
        # transactions keep the file consistent even if exit cuts a batch short.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, request: AppendRequest) -> Future[int]:
        """Queue an append; the future gets the new version or the request's own error."""
        future: Future[int] = Future()
        with self._lock:
            if self._closed:
                raise Internal("the group committer is closed")
            self._queue.put((request, future))
        return future

    def submit_then(self, request: AppendRequest, on_done: Callable[[Outcome], None]) -> None:
        """Queue an append; `on_done(outcome)` runs on the writer thread once it is decided.
        Keep `on_done` short and never raising (post a message, as actors do)."""
        with self._lock:
            if self._closed:
                raise Internal("the group committer is closed")
            self._queue.put((request, on_done))

    async def append(self, request: AppendRequest) -> int:
        """`submit` for asyncio code: awaits the commit without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(request))

    def close(self) -> None:
        """Commit everything already submitted, then stop and join the writer thread."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:  # a future callback may call close()
            self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            self._commit(batch)

    def _next_batch(self) -> tuple[list[_Pending], bool]:
        """Block for the first request, then take what else is queued, without waiting."""
        batch: list[_Pending] = []
        item = self._queue.get()
        while not isinstance(item, _Stop):
            batch.append(item)
            if len(batch) >= self._max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _commit(self, batch: Sequence[_Pending]) -> None:
        live = [(request, waiter) for request, waiter in batch if _still_wanted(waiter)]
        if not live:
            return
        try:
            results: Sequence[Outcome] = self._journal.append_batch([r for r, _ in live])
        except Exception as error:  # noqa: BLE001 - every waiting submitter gets the failure
            results = [error] * len(live)
        else:
            self.batches += 1
            self.requests += len(live)
        for (_, waiter), result in zip(live, results, strict=True):
            _settle(waiter, result)


def _still_wanted(waiter: Future[int] | Callable[[Outcome], None]) -> bool:
    """False for a Future cancelled before the writer took it (it is not written)."""
    return not isinstance(waiter, Future) or waiter.set_running_or_notify_cancel()


def _settle(waiter: Future[int] | Callable[[Outcome], None], result: Outcome) -> None:
    if not isinstance(waiter, Future):
        waiter(result)
    elif isinstance(result, BaseException):
        waiter.set_exception(result)
    else:
        waiter.set_result(result)
