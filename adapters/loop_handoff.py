"""Callbacks from other threads onto an asyncio loop, many per wake-up.

`call_soon_threadsafe` writes to the loop's self-pipe on every call: a syscall, and a GIL
hand-over to the loop thread, per callback. Flow actors hand the loop a reply, a provider call
or a status frame several times per payment, so under payflow-bench those wake-ups were one of
the larger costs of a flow. A `LoopHandoff` wakes the loop for the first callback of a batch
only; callbacks handed over before the loop gets to it join that batch, and the loop runs them
all in one go, in the order they were handed over. One handoff per loop (`handoff_for`), shared
by every caller, so callbacks of different kinds share wake-ups too.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class LoopHandoff:
    """Run callbacks on `loop`, called from any thread, in the order they were handed over."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def call(self, callback: Callable[..., object], *args: Any) -> None:
        """Schedule `callback(*args)` on the loop; raises RuntimeError once the loop is closed."""
        with self._lock:
            self._pending.append((callback, args))
            if len(self._pending) > 1:
                return  # the wake-up already on its way runs this one too
        try:
            self._loop.call_soon_threadsafe(self._run_pending)
        except RuntimeError:
            with self._lock:
                self._pending.clear()
            raise

    def _run_pending(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        for callback, args in batch:
            try:
                callback(*args)
            except Exception:  # one failing callback must not drop the rest of the batch
                name = getattr(callback, "__qualname__", type(callback).__name__)
                log.exception("loop_callback_failed", callback=name)


_HANDOFFS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopHandoff] = (
    weakref.WeakKeyDictionary()
)
_HANDOFFS_LOCK = threading.Lock()
# The handoff found last. The application asks for it once per request on the loop thread; a
# lock and a weak-key lookup each time were ~5% of that thread under payflow-bench. The tuple is
# replaced whole, never changed, so one read of it is consistent without the lock.
_last: tuple[asyncio.AbstractEventLoop, LoopHandoff] | None = None


def handoff_for(loop: asyncio.AbstractEventLoop) -> LoopHandoff:
    """The one handoff of `loop`."""
    global _last  # noqa: PLW0603 - a one-entry cache of the table below
    last = _last
    if last is not None and last[0] is loop:
        return last[1]
    with _HANDOFFS_LOCK:
        handoff = _HANDOFFS.get(loop)
        if handoff is None:
            handoff = _HANDOFFS[loop] = LoopHandoff(loop)
        _last = (loop, handoff)
        return handoff
