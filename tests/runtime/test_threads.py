"""Shutting the actor system down leaves no thread behind, whatever was running."""

from __future__ import annotations

import threading
from typing import Any

from runtime.actor import Actor
from runtime.scheduler import Scheduler
from runtime.supervisor import ChildSpec, Supervisor
from runtime.system import ActorSystem
from tests.runtime.test_actor import Recorder
from tests.waiting import wait_until


class Busy(Actor):
    """Keeps telling itself until stopped."""

    def on_receive(self, message: Any) -> Any:
        self.actor_ref.tell(message)


def test_shutdown_joins_every_thread_it_started() -> None:
    before = threading.enumerate()
    system = ActorSystem(threads=2)
    events: list[str] = []
    refs = [system.spawn(Recorder, events, str(i)) for i in range(50)]
    system.supervise(
        ChildSpec(
            name="sup", factory=lambda: Supervisor(children=[ChildSpec(name="busy", factory=Busy)])
        )
    )
    flows = system.entities("flow", lambda key: Recorder(events, key), idle_after=0.01)
    for i in range(20):
        flows.tell(f"f-{i}", "hi")
    busy = system.spawn(Busy)
    busy.tell("loop")
    assert len(threading.enumerate()) > len(before)
    assert system.shutdown(timeout=10)
    assert threading.enumerate() == before
    assert not any(ref.is_alive() for ref in refs)
    assert not busy.is_alive()
    assert events.count("0:stop") == 1  # stopped gracefully: on_stop ran
    assert len(system) == 0


def test_a_shared_timer_thread_is_left_running_for_its_owner() -> None:
    with Scheduler() as scheduler:
        with ActorSystem(scheduler=scheduler) as system:
            system.spawn(Recorder, []).ask("x")
        assert not scheduler.closed
        scheduler.call_later(60, lambda: None).cancel()  # still accepts timers


def test_stop_all_stops_every_actor_and_refuses_new_ones() -> None:
    with ActorSystem() as system:
        refs = [system.spawn(Recorder, []) for _ in range(100)]
        assert system.stop_all(timeout=10)
        wait_until(lambda: not any(ref.is_alive() for ref in refs))
        assert system.actors() == []
