"""runtime.dispatcher: order, fairness and bounds of mailboxes shared by few threads; futures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from runtime.actor import Actor, Ref
from runtime.dispatcher import Dispatcher, DispatchFuture, as_asyncio, on_dispatcher_thread
from runtime.errors import Overloaded
from runtime.system import ActorSystem
from tests.runtime.test_actor import Blocker
from tests.waiting import wait_until


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    with ActorSystem(threads=2, mailbox_size=50, batch=8) as actor_system:
        yield actor_system


class Log(Actor):
    mailbox_size = 20_000

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "get":
            return self.received
        self.received.append(message)
        return None


class Chatter(Actor):
    """Keeps itself busy by telling itself, `rounds` times."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.left = rounds

    def on_receive(self, message: Any) -> Any:
        if message == "left":
            return self.left
        if self.left > 0:
            self.left -= 1
            self.actor_ref.tell("again")
        return None


def test_one_actor_gets_10000_messages_in_order_while_others_run(system: ActorSystem) -> None:
    log = system.spawn(Log)
    chatters = [system.spawn(Chatter, 2000) for _ in range(4)]
    for chatter in chatters:
        chatter.tell("go")
    for i in range(10_000):
        log.tell(i)
    assert log.ask("get") == list(range(10_000))
    wait_until(lambda: all(c.ask("left") == 0 for c in chatters))


class Peek(Actor):
    """Answers how long a list (another actor's record of what it handled) is right now."""

    def __init__(self, watched: list[Any]) -> None:
        super().__init__()
        self.watched = watched

    def on_receive(self, message: Any) -> Any:
        return len(self.watched)


def test_a_busy_actor_yields_its_thread_after_a_batch() -> None:
    with ActorSystem(threads=1, batch=8) as system:
        gate = threading.Event()
        busy = system.spawn(Blocker, gate)
        blocker = busy.cell.actor
        assert isinstance(blocker, Blocker)
        peek = system.spawn(Peek, blocker.handled)
        busy.tell("block")
        for i in range(1000):
            busy.tell(i)
        handled_when_peek_ran = peek.ask("now", block=False)
        gate.set()
        assert handled_when_peek_ran.get(timeout=5) == 8  # one batch, then it was peek's turn
        wait_until(lambda: busy.ask("len") == 1002)


def test_a_full_mailbox_refuses_in_the_sender_and_the_actor_keeps_working(
    system: ActorSystem,
) -> None:
    gate = threading.Event()
    ref: Ref[Blocker] = system.spawn(Blocker, gate)
    ref.tell("block")
    wait_until(lambda: len(ref.cell) == 0)  # the blocking message is being handled
    for i in range(50):
        ref.tell(i)
    with pytest.raises(Overloaded, match=r"mailbox of Blocker 'Blocker' is full \(50 messages\)"):
        ref.tell("one too many")
    with pytest.raises(Overloaded):
        ref.ask("also refused", block=False)
    gate.set()
    wait_until(lambda: len(ref.cell) < 50)  # it drains again...
    assert ref.ask("after") == 52  # "block", 0..49, "after": nothing refused was handled
    assert ref.stop() is True  # a stop request is never refused for a full mailbox


def test_dispatcher_runs_submitted_work_on_its_threads_and_joins_them() -> None:
    ran: list[bool] = []

    class Job:
        def run(self, batch: int) -> None:
            ran.append(on_dispatcher_thread())

    dispatcher = Dispatcher(threads=2, name="test-dispatch")
    for _ in range(10):
        dispatcher.submit(Job())
    assert dispatcher.shutdown(timeout=5)
    assert ran == [True] * 10
    assert not any(thread.is_alive() for thread in dispatcher.threads)
    assert not on_dispatcher_thread()


def test_future_get_set_exception_and_timeout() -> None:
    future: DispatchFuture[int] = DispatchFuture()
    assert not future.done()
    with pytest.raises(pykka.Timeout):
        future.get(timeout=0.01)
    threading.Thread(target=future.set, args=(7,)).start()
    assert future.get(timeout=5) == 7
    assert future.get() == 7  # again, without waiting
    assert future.map(lambda v: v + 1).get() == 8
    failed: DispatchFuture[int] = DispatchFuture()
    failed.set_exception((ValueError, ValueError("nope"), None))
    with pytest.raises(ValueError, match="nope"):
        failed.get()


def test_done_callbacks_run_once_whether_added_before_or_after() -> None:
    seen: list[int] = []
    future: DispatchFuture[int] = DispatchFuture()
    future.add_done_callback(lambda f: seen.append(f.get()))
    future.set(1)
    future.add_done_callback(lambda f: seen.append(f.get() + 1))
    assert seen == [1, 2]


def test_as_asyncio_awaits_an_ask_without_blocking_the_loop(system: ActorSystem) -> None:
    log = system.spawn(Log)

    async def scenario() -> tuple[Any, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        log.tell("x")
        reply = await as_asyncio(log.ask("get", block=False))
        task.cancel()
        return reply, ticks

    reply, ticks = asyncio.run(scenario())
    assert reply == ["x"]
    assert ticks > 0
