"""runtime.actor: pykka's API on the dispatcher, failures that never leave an actor silently dead.

Also home of the helpers the other runtime tests share (`wait_until`, the `system` fixture).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from runtime.actor import Actor, current_system
from runtime.dispatcher import on_dispatcher_thread
from runtime.errors import Internal
from runtime.system import ActorSystem
from tests.waiting import wait_until


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    with ActorSystem(threads=1, mailbox_size=100) as actor_system:
        yield actor_system


class Recorder(Actor):
    """Records its lifecycle in a shared list; answers asks with its state."""

    def __init__(self, events: list[str], tag: str = "r") -> None:
        super().__init__()
        self.events = events
        self.tag = tag
        self.seen: list[Any] = []
        self.started_on = ""

    def on_start(self) -> None:
        self.started_on = threading.current_thread().name
        self.events.append(f"{self.tag}:start")

    def on_stop(self) -> None:
        self.events.append(f"{self.tag}:stop")

    def on_failure(self, exc_type: Any, exc_value: Any, tb: Any) -> None:
        self.events.append(f"{self.tag}:failure:{exc_type.__name__}")

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, BaseException):
            raise message
        self.seen.append(message)
        return list(self.seen)

    def greet(self, name: str) -> str:
        return f"hello {name} from {self.tag}"


class Fatal(BaseException):
    """Not an Exception: pykka would stop every actor on it."""


def test_tell_ask_and_on_start_before_the_first_message(system: ActorSystem) -> None:
    events: list[str] = []
    ref = system.spawn(Recorder, events)
    ref.tell("one")
    assert ref.ask("two") == ["one", "two"]
    assert events == ["r:start"]
    assert ref.proxy().started_on.get().startswith("payflowd-dispatch")


def test_proxy_calls_methods_and_gets_and_sets_attributes(system: ActorSystem) -> None:
    proxy = system.spawn(Recorder, [], "p").proxy()
    assert proxy.greet("ann").get() == "hello ann from p"
    proxy.tag = "q"
    assert proxy.tag.get() == "q"
    proxy.greet.defer("bob")  # tell semantics: no future
    assert proxy.greet("cy").get() == "hello cy from q"


def test_stop_calls_on_stop_and_later_messages_fail_like_pykka(system: ActorSystem) -> None:
    events: list[str] = []
    ref = system.spawn(Recorder, events)
    assert ref.stop() is True
    assert events == ["r:start", "r:stop"]
    assert not ref.is_alive()
    assert ref.stop() is False
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("late")
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("late")


def test_asks_queued_behind_a_stop_get_actor_dead_error(system: ActorSystem) -> None:
    gate = threading.Event()
    ref = system.spawn(Blocker, gate)
    ref.tell("block")
    stopping = ref.stop(block=False)
    orphan = ref.ask("after stop", block=False)
    gate.set()
    assert stopping.get(timeout=5) is True
    with pytest.raises(pykka.ActorDeadError):
        orphan.get(timeout=5)


def test_an_ask_whose_handler_raises_gets_the_error_and_the_actor_goes_on(
    system: ActorSystem,
) -> None:
    events: list[str] = []
    ref = system.spawn(Recorder, events)
    ref.tell("kept")
    with pytest.raises(ValueError, match="bad request"):
        ref.ask(ValueError("bad request"))
    assert ref.ask("next") == ["kept", "next"]
    assert events == ["r:start"]  # no failure, no restart


def test_a_crashing_tell_calls_on_failure_and_the_actor_is_restarted(system: ActorSystem) -> None:
    events: list[str] = []
    ref = system.spawn(Recorder, events)
    ref.tell(RuntimeError("boom"))
    assert ref.ask("after") == ["after"]  # same ref, new instance
    assert events == ["r:start", "r:failure:RuntimeError", "r:start"]


def test_base_exception_in_one_actor_does_not_stop_the_others(system: ActorSystem) -> None:
    crashing = system.spawn(Recorder, [], "crashing")
    bystander = system.spawn(Recorder, [], "bystander")
    bystander.tell("before")
    crashing.tell(Fatal())
    assert bystander.ask("after") == ["before", "after"]
    assert crashing.ask("revived") == ["revived"]
    assert crashing.is_alive()
    assert bystander.is_alive()


def test_keyboard_interrupt_in_a_handler_reaches_the_escalation_callback() -> None:
    escalated: list[BaseException] = []
    with ActorSystem(on_escalation=escalated.append) as system:
        ref = system.spawn(Recorder, [])
        ref.tell(KeyboardInterrupt())
        wait_until(lambda: len(escalated) == 1)
        assert isinstance(escalated[0], KeyboardInterrupt)
        assert ref.ask("still served") == ["still served"]


class Blocker(Actor):
    """Blocks its worker on `gate` for the message "block" (tests that need a busy actor)."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.handled: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "block":
            assert self.gate.wait(10)
        self.handled.append(message)
        return len(self.handled)


class Parent(Actor):
    def on_receive(self, message: Any) -> Any:
        if message == "spawn":
            return Recorder.start([], "child")
        if message == "block on ask":
            return self.actor_ref.ask("spawn")
        return on_dispatcher_thread()


def test_start_needs_a_system_and_uses_the_current_one() -> None:
    with pytest.raises(Internal, match="no current ActorSystem"):
        Recorder.start([])
    with ActorSystem() as system:
        ref = Recorder.start([])
        assert current_system() is system
        assert ref.ask("x") == ["x"]


def test_an_actor_starts_actors_but_cannot_block_its_thread_on_an_ask(
    system: ActorSystem,
) -> None:
    parent = system.spawn(Parent)
    child = parent.ask("spawn")
    assert child.proxy().greet("p").get() == "hello p from child"
    actors = len(system.actors())
    with pytest.raises(Internal, match="would stall its dispatcher thread"):
        parent.ask("block on ask")
    assert len(system.actors()) == actors  # refused before the inner ask was even sent
    assert parent.ask("where") is True


def test_actors_stay_out_of_pykkas_registry_and_in_the_systems(system: ActorSystem) -> None:
    ref = system.spawn(Recorder, [])
    assert ref not in pykka.ActorRegistry.get_all()
    assert ref in system.actors()
    ref.stop()
    assert ref not in system.actors()
