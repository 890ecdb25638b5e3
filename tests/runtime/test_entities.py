"""runtime.entities: activation on demand, passivation when idle, and no message lost between."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from runtime.actor import Actor, Cell
from runtime.entities import EntityRegistry
from runtime.errors import Internal
from runtime.system import ActorSystem
from tests.waiting import wait_until


@dataclass(frozen=True, slots=True)
class Saved:
    count: int
    version: int


class Store:
    """A dict standing in for the journal, counting how often entities were loaded."""

    def __init__(self) -> None:
        self.rows: dict[str, Saved] = {}
        self.loads = 0
        self.lock = threading.Lock()

    def load(self, key: str) -> Saved:
        with self.lock:
            self.loads += 1
        return self.rows.get(key, Saved(count=0, version=0))


class CounterEntity(Actor):
    """Persists every change before answering (the journal's rule), so memory is only a cache."""

    def __init__(self, store: Store, key: str) -> None:
        super().__init__()
        saved = store.load(key)
        self.store, self.key = store, key
        self.count, self.version = saved.count, saved.version
        self.busy = False

    def on_receive(self, message: Any) -> Any:
        if message == "busy":
            self.busy = True
        elif message == "crash":
            raise RuntimeError("entity crash")
        elif message != "get":
            self.count += message
            self.version += 1
            self.store.rows[self.key] = Saved(count=self.count, version=self.version)
        return Saved(count=self.count, version=self.version)

    def can_passivate(self) -> bool:
        return not self.busy


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    with ActorSystem(threads=2) as actor_system:
        yield actor_system


@pytest.fixture
def racy() -> Iterator[None]:
    """Switch threads every microsecond (CPython's default is 5 ms) so that races whose window
    is a few bytecodes wide actually happen within a few hundred rounds."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def counters(
    system: ActorSystem, store: Store, *, idle_after: float, sweep_every: float = 3600.0
) -> EntityRegistry[CounterEntity]:
    return system.entities(
        "counter",
        lambda key: CounterEntity(store, key),
        idle_after=idle_after,
        sweep_every=sweep_every,
    )


def test_tell_and_ask_activate_an_entity_once(system: ActorSystem) -> None:
    store = Store()
    registry = counters(system, store, idle_after=60)
    registry.tell("c1", 2)
    assert registry.ask("c1", 3) == Saved(count=5, version=2)
    assert registry.ask("c2", "get") == Saved(count=0, version=0)
    assert len(registry) == 2
    assert "c1" in registry
    assert store.loads == 2


def test_an_idle_entity_passivates_and_comes_back_with_state_and_version(
    system: ActorSystem,
) -> None:
    store = Store()
    registry = counters(system, store, idle_after=0.05, sweep_every=0.02)
    registry.tell("c1", 4)
    registry.tell("c1", 1)
    assert registry.ask("c1", "get") == Saved(count=5, version=2)
    wait_until(lambda: "c1" not in registry)
    assert registry.ask("c1", 1) == Saved(count=6, version=3)
    assert store.loads == 2  # rebuilt from the store once, on demand


def test_an_entity_can_veto_its_passivation(system: ActorSystem) -> None:
    store = Store()
    registry = counters(system, store, idle_after=0.01, sweep_every=0.005)
    registry.ask("busy", "busy")
    for _ in range(3):
        registry.ask("idle", "get")
        wait_until(lambda: "idle" not in registry)
        assert "busy" in registry
    assert store.loads == 1 + 3  # "busy" was built once, "idle" each time


class NewCounter(CounterEntity):
    """A counter whose key was just made up: there is nothing to load."""

    def __init__(self, store: Store, key: str) -> None:
        Actor.__init__(self)
        self.store, self.key = store, key
        self.count = self.version = 0
        self.busy = False


def test_a_spawned_entity_starts_unloaded_and_restarts_from_the_store(
    system: ActorSystem,
) -> None:
    store = Store()
    registry = counters(system, store, idle_after=60)
    registry.spawn("n1", 5, lambda key: NewCounter(store, key))
    assert registry.ask("n1", "get") == Saved(count=5, version=1)
    assert store.loads == 0
    registry.tell("n1", "crash")
    assert registry.ask("n1", 1) == Saved(count=6, version=2)  # the restart loaded count 5
    assert store.loads == 1
    with pytest.raises(Internal):
        registry.spawn("n1", 1, lambda key: NewCounter(store, key))
    assert registry.ask("n1", "get") == Saved(count=6, version=2)


class SlowStop(CounterEntity):
    """Its on_stop waits for the test, to hold a passivation half done."""

    def __init__(
        self, store: Store, key: str, stopping: threading.Event, may_stop: threading.Event
    ) -> None:
        super().__init__(store, key)
        self.stopping, self.may_stop = stopping, may_stop

    def on_stop(self) -> None:
        self.stopping.set()
        assert self.may_stop.wait(5)


def test_a_message_sent_while_the_entity_stops_waits_for_its_successor(
    system: ActorSystem,
) -> None:
    store = Store()
    stopping, may_stop = threading.Event(), threading.Event()
    registry = system.entities(
        "slow",
        lambda key: SlowStop(store, key, stopping, may_stop),
        idle_after=1e-6,
        sweep_every=3600,
    )
    registry.ask("k", 1)
    registry.passivate_idle_now()
    assert stopping.wait(5)
    registry.tell("k", 1)  # the old incarnation is closed but still in its on_stop
    assert store.loads == 1  # the new one is not built before the old one has finished
    may_stop.set()
    assert registry.ask("k", "get", timeout=5) == Saved(count=2, version=2)
    assert store.loads == 2


def test_a_crashed_entity_is_restarted_from_the_store(system: ActorSystem) -> None:
    store = Store()
    registry = counters(system, store, idle_after=60)
    registry.ask("c1", 7)
    registry.tell("c1", "crash")
    registry.tell("c1", 1)  # queued behind the crash: handled by the restarted entity
    assert registry.ask("c1", "get") == Saved(count=8, version=2)


def test_no_message_is_lost_when_passivation_races_with_senders(
    system: ActorSystem, racy: None
) -> None:
    store = Store()
    registry = counters(system, store, idle_after=1e-6, sweep_every=0.001)
    senders, per_round, key = 2, 300, "hot"

    def send() -> None:
        for i in range(per_round):
            registry.tell(key, 1)
            if i % 20 == 0:  # let it go idle, then race a sweep against the next tells
                registry.ask(key, "get", timeout=5)
                registry.passivate_idle_now()

    sent = 0
    for _ in range(20):  # until passivations happened under the senders' feet (bounded)
        threads = [threading.Thread(target=send) for _ in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        sent += senders * per_round
        if store.loads > 3:
            break
    assert registry.ask(key, "get", timeout=5) == Saved(count=sent, version=sent)
    assert store.loads > 3


def test_hammering_one_message_against_each_passivation(system: ActorSystem, racy: None) -> None:
    store = Store()
    registry = counters(system, store, idle_after=1e-6)
    rounds = 300
    for expected in range(rounds):
        assert registry.ask("k", "get").count == expected  # now idle
        entity = registry.get("k")  # None if a late sweep of the last round got it already
        registry.passivate_idle_now()
        if expected % 2 and entity is not None:  # tell while the passivation is on its way
            sweep_until_passivating(registry, entity.cell)
        registry.tell("k", 1)
    assert registry.ask("k", "get") == Saved(count=rounds, version=rounds)
    assert store.loads > rounds // 4  # passivation did happen under the senders' feet


def passivating(cell: Cell) -> bool:
    return cell.passivation_requested or cell.closed


def sweep_until_passivating(
    registry: EntityRegistry[CounterEntity], cell: Cell, timeout: float = 5.0
) -> None:
    """Spin (no naps: the tell must follow within microseconds) until the passivation of `cell`
    is on its way. A sweep skips an entity still finishing the message it just answered (its
    activity time is set after the reply went out), so a sweep that found it busy is repeated,
    as the periodic sweep would."""
    deadline = time.monotonic() + timeout
    resweep_at = time.monotonic() + _RESWEEP_S
    while not passivating(cell):
        now = time.monotonic()
        assert now < deadline, f"no passivation within {timeout}s"
        if now >= resweep_at:
            registry.passivate_idle_now()
            resweep_at = now + _RESWEEP_S


_RESWEEP_S = 0.01
