"""What a cell leaves behind when it closes for good: dead letters only for tells it never
handled, asks answered, and nothing at all for an actor that stopped idle."""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest

from runtime.actor import Actor
from runtime.system import ActorSystem
from tests.waiting import wait_until


class Gated(Actor):
    """Holds its dispatcher on the message "hold" until `gate` opens (bounded by a deadline)."""

    def __init__(self, entered: threading.Event, gate: threading.Event) -> None:
        super().__init__()
        self.entered = entered
        self.gate = gate

    def on_receive(self, message: Any) -> Any:
        if message == "hold":
            self.entered.set()
            self.gate.wait(timeout=5.0)
        return message


def test_tells_left_at_termination_are_dead_letters_and_asks_get_actor_dead() -> None:
    entered, gate = threading.Event(), threading.Event()
    # batch=1: the terminate command runs between two messages, with the rest still queued.
    with ActorSystem(threads=1, batch=1) as system:
        ref = system.spawn(Gated, entered, gate)
        ref.tell("hold")
        assert entered.wait(timeout=5.0)
        ref.tell("left-1")
        ref.tell("left-2")
        asked = ref.ask("left-3", block=False)
        ref.cell.request_terminate()
        gate.set()
        with pytest.raises(pykka.ActorDeadError):
            asked.get(timeout=5.0)
        wait_until(lambda: system.dead_letters.total == 2)
        assert not ref.is_alive()


def test_an_idle_actor_that_stops_leaves_no_dead_letters() -> None:
    with ActorSystem(threads=1) as system:
        ref = system.spawn(Gated, threading.Event(), threading.Event())
        assert ref.ask("ping", timeout=5.0) == "ping"
        assert ref.stop(timeout=5.0) is True
        assert system.dead_letters.total == 0
        with pytest.raises(pykka.ActorDeadError):
            ref.tell("after")
