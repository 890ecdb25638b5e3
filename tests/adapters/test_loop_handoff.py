"""Callbacks handed to the loop from other threads: all run, on the loop, in order, and a busy
loop is woken once for a whole batch rather than once per callback."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from adapters.effects import LoopThread
from adapters.loop_handoff import LoopHandoff, handoff_for

WAIT_S = 10.0


def test_callbacks_from_threads_run_on_the_loop_in_order_sharing_wakeups() -> None:
    io = LoopThread("handoff-test")
    wakeups: list[int] = []
    original = io.loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any) -> Any:
        wakeups.append(1)
        return original(callback, *args)

    io.loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
    try:
        handoff = LoopHandoff(io.loop)
        busy, release, done = threading.Event(), threading.Event(), threading.Event()
        seen: list[tuple[int, bool]] = []

        def hold_the_loop() -> None:
            busy.set()
            release.wait(WAIT_S)

        io.loop.call_soon_threadsafe(hold_the_loop)
        assert busy.wait(WAIT_S)  # the loop is held: everything below queues up
        wakeups.clear()
        for n in range(100):
            handoff.call(lambda n=n: seen.append((n, io.loop.is_running())))
        handoff.call(done.set)
        release.set()
        assert done.wait(WAIT_S)
        woken = len(wakeups)
    finally:
        io.stop()
    assert [n for n, _ in seen] == list(range(100))
    assert all(on_loop for _, on_loop in seen)
    assert woken == 1


def test_a_failing_callback_does_not_drop_the_rest_of_its_batch() -> None:
    io = LoopThread("handoff-test")
    try:
        handoff = handoff_for(io.loop)
        assert handoff_for(io.loop) is handoff  # one per loop
        done = threading.Event()
        handoff.call(lambda: 1 / 0)
        handoff.call(done.set)
        assert done.wait(WAIT_S)
    finally:
        io.stop()


def test_a_closed_loop_refuses_and_a_new_batch_is_not_stuck() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    handoff = LoopHandoff(loop)
    with pytest.raises(RuntimeError):
        handoff.call(print)
    with pytest.raises(RuntimeError):  # refused again: the failed batch was not left pending
        handoff.call(print)


def test_each_loop_keeps_its_own_handoff_when_callers_alternate_between_loops() -> None:
    first, second = LoopThread("handoff-a"), LoopThread("handoff-b")
    try:
        handoffs = [handoff_for(loop) for loop in (first.loop, second.loop, first.loop)]
        assert handoffs[0] is handoffs[2]
        assert handoffs[0] is not handoffs[1]
        ran_on: list[asyncio.AbstractEventLoop] = []
        done = threading.Event()
        handoff_for(second.loop).call(lambda: ran_on.append(asyncio.get_running_loop()))
        handoff_for(second.loop).call(done.set)
        assert done.wait(WAIT_S)
        assert ran_on == [second.loop]
    finally:
        first.stop()
        second.stop()
