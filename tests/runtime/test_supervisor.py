"""runtime.supervisor: restarts rebuild state, strategies pick who restarts, intensity escalates."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from runtime.actor import Actor, Ref
from runtime.errors import Escalated
from runtime.introspection import tree
from runtime.supervisor import ONE_FOR_ALL, ChildSpec, RestartChild, Strategy, Supervisor
from runtime.system import ActorSystem
from tests.waiting import wait_until

_INSTANCES = itertools.count()


class Counter(Actor):
    """Counts into an external store (a dict standing in for the journal) and crashes on "crash".

    Its factory reads the store, so a restarted instance carries on from the persisted count.
    """

    def __init__(self, store: dict[str, int], key: str) -> None:
        super().__init__()
        self.store = store
        self.key = key
        self.count = store.get(key, 0)  # rebuilt from the store: what a restart must preserve
        self.instance = next(_INSTANCES)  # which incarnation answers

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crash requested")
        if message == "get":
            return self.count
        if message == "instance":
            return self.instance
        self.count += 1
        self.store[self.key] = self.count
        return self.count


def counter_spec(store: dict[str, int], name: str) -> ChildSpec:
    return ChildSpec(name=name, factory=lambda: Counter(store, name))


@pytest.fixture
def escalations() -> list[BaseException]:
    return []


@pytest.fixture
def system(escalations: list[BaseException]) -> Iterator[ActorSystem]:
    with ActorSystem(threads=1, on_escalation=escalations.append) as actor_system:
        yield actor_system


def start_supervisor(
    system: ActorSystem, store: dict[str, int], strategy: Strategy, *names: str
) -> tuple[Ref[Supervisor], dict[str, Ref[Any]]]:
    specs = [counter_spec(store, name) for name in names]
    sup = system.supervise(
        ChildSpec(name="sup", factory=lambda: Supervisor(children=specs, strategy=strategy))
    )
    wait_until(lambda: all(sup.proxy().child(name).get() is not None for name in names))
    return sup, {name: sup.proxy().child(name).get() for name in names}


def test_a_restarted_child_rebuilds_its_state_from_the_store(system: ActorSystem) -> None:
    store: dict[str, int] = {}
    _, children = start_supervisor(system, store, Strategy(), "a")
    a = children["a"]
    assert [a.ask("inc") for _ in range(3)] == [1, 2, 3]
    before = a.ask("instance")
    a.tell("crash")
    assert a.ask("get") == 3  # same ref, state back from the store
    assert a.ask("instance") != before
    assert a.ask("inc") == 4


def test_messages_queued_behind_the_crash_reach_the_new_instance(system: ActorSystem) -> None:
    store: dict[str, int] = {}
    _, children = start_supervisor(system, store, Strategy(), "a")
    a = children["a"]
    a.tell("crash")
    for _ in range(5):
        a.tell("inc")
    assert a.ask("get") == 5


def test_one_for_one_restarts_only_the_crashed_child(system: ActorSystem) -> None:
    store: dict[str, int] = {}
    _, children = start_supervisor(system, store, Strategy(), "a", "b")
    a, b = children["a"], children["b"]
    b_instance = b.ask("instance")
    a.tell("crash")
    a.ask("get")
    assert b.ask("instance") == b_instance
    node = tree(system).find("sup")
    assert node is not None
    assert {c.name: c.restarts for c in node.children} == {"a": 1, "b": 0}


def test_one_for_all_restarts_every_child(system: ActorSystem) -> None:
    store: dict[str, int] = {}
    _, children = start_supervisor(system, store, Strategy(kind=ONE_FOR_ALL), "a", "b")
    a, b = children["a"], children["b"]
    b.ask("inc")
    b_instance = b.ask("instance")
    a.tell("crash")
    wait_until(lambda: b.ask("instance") != b_instance)
    assert b.ask("get") == 1  # rebuilt from the store too
    node = tree(system).find("sup")
    assert node is not None
    assert {c.name: c.restarts for c in node.children} == {"a": 1, "b": 1}


def test_exceeding_the_intensity_stops_the_subtree_and_escalates_to_the_root(
    escalations: list[BaseException],
) -> None:
    # root and parent give up at once; sup allows 2 restarts per 60 s
    strict = Strategy(max_restarts=0)
    with ActorSystem(strategy=strict, on_escalation=escalations.append) as system:
        _escalate_through(system, escalations)


def _escalate_through(system: ActorSystem, escalations: list[BaseException]) -> None:
    store: dict[str, int] = {}
    specs = [counter_spec(store, "a"), counter_spec(store, "b")]
    inner = ChildSpec(
        name="sup",
        factory=lambda: Supervisor(children=specs, strategy=Strategy(max_restarts=2, within=60)),
    )
    parent = system.supervise(
        ChildSpec(
            name="parent",
            factory=lambda: Supervisor(children=[inner], strategy=Strategy(max_restarts=0)),
        )
    )
    wait_until(lambda: _child_of(parent, "sup") is not None)
    sup = _child_of(parent, "sup")
    assert sup is not None
    wait_until(lambda: _child_of(sup, "b") is not None)
    a, b = _child_of(sup, "a"), _child_of(sup, "b")
    assert a is not None
    assert b is not None
    for crash in range(3):  # N + 1 = 3 crashes within T
        a.tell("crash")
        if crash < 2:
            a.ask("get")  # restarted: wait for it before the next crash
    wait_until(lambda: len(escalations) == 1)
    wait_until(lambda: not parent.is_alive())
    assert not a.is_alive()
    assert not b.is_alive()
    assert not sup.is_alive()
    assert isinstance(escalations[0], Escalated)
    # The chain: sup gave up on a, parent gave up on sup, the root gave up on parent.
    assert "supervisor 'root'" in str(escalations[0])
    assert "'parent' raised Escalated" in str(escalations[0])


def test_the_parent_restarts_an_escalating_supervisor_with_fresh_children(
    system: ActorSystem, escalations: list[BaseException]
) -> None:
    store: dict[str, int] = {}
    sup, children = start_supervisor(system, store, Strategy(max_restarts=0), "a")
    old_a = children["a"]
    old_a.ask("inc")
    old_a.tell("crash")
    wait_until(lambda: not old_a.is_alive())
    wait_until(lambda: _child_of(sup, "a") not in (None, old_a))
    new_a = _child_of(sup, "a")
    assert new_a is not None
    assert new_a.ask("get") == 1
    node = tree(system).find("sup")
    assert node is not None
    assert node.restarts == 1
    assert escalations == []  # the root restarted sup within its own intensity


def test_the_crashing_message_is_a_dead_letter_logged_without_its_contents(
    system: ActorSystem,
) -> None:
    store: dict[str, int] = {}
    _, children = start_supervisor(system, store, Strategy(), "a")
    with structlog.testing.capture_logs() as logs:
        children["a"].tell(SecretCrash(card="4242424242424242"))
        children["a"].ask("get")
    letters = [e for e in logs if e["event"] == "dead_letter"]
    assert len(letters) == 1
    assert letters[0]["actor"] == "a"
    assert letters[0]["actor_class"] == "Counter"
    assert letters[0]["message_type"] == "SecretCrash"
    assert letters[0]["reason"] == "handler_failed"
    assert "4242424242424242" not in repr(logs)
    assert system.dead_letters.total == 1


class SecretCrash:
    """A message whose contents must never be logged; Counter cannot count it and crashes."""

    def __init__(self, card: str) -> None:
        self.card = card

    def __repr__(self) -> str:
        return f"SecretCrash(card={self.card})"

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("cannot compare")

    __hash__ = None  # type: ignore[assignment]


def _child_of(sup: Ref[Any], name: str) -> Ref[Any] | None:
    actor = sup.cell.actor
    return actor.child(name) if isinstance(actor, Supervisor) else None


def test_a_requested_restart_goes_through_the_supervisor_and_keeps_its_books(
    system: ActorSystem, escalations: list[BaseException]
) -> None:
    store: dict[str, int] = {}
    sup, children = start_supervisor(system, store, Strategy(max_restarts=1, within=60), "a")
    a = children["a"]
    a.ask("inc")
    before = a.ask("instance")
    assert sup.ask(RestartChild(cell=a.cell)) is True
    assert a.ask("instance") != before  # a new instance behind the same ref
    assert a.ask("get") == 1  # rebuilt from the store
    a.tell("crash")  # the one failure the intensity allows is still available...
    wait_until(lambda: a.ask("get") == 1 and a.is_alive())
    node = tree(system).find("sup")
    assert node is not None
    assert [c.restarts for c in node.children] == [2]
    assert sup.ask(RestartChild(cell=sup.cell)) is False  # not its child
    assert system.restart(a)  # the same request, addressed through the system
    assert a.ask("get") == 1  # answered by the new instance, so the restart is done
    assert [c.restarts for c in tree(system).find("sup").children] == [3]  # type: ignore[union-attr]
    assert not system.restart(system.root)  # the root has no supervisor
    assert escalations == []
