"""runtime.introspection: the supervision tree as `payflowctl tree` prints it."""

from __future__ import annotations

import threading
from typing import Any

from runtime.actor import Actor
from runtime.introspection import Node, tree
from runtime.supervisor import ChildSpec, Supervisor
from runtime.system import ActorSystem
from tests.runtime.test_actor import Blocker, Recorder
from tests.waiting import wait_until


class Idle(Actor):
    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crash requested")
        return message


def test_the_tree_shows_guardians_supervisors_entities_and_their_actors() -> None:
    with ActorSystem() as system:
        worker = system.spawn(Recorder, [])
        worker.ask("warm")
        system.supervise(
            ChildSpec(
                name="services",
                factory=lambda: Supervisor(children=[ChildSpec(name="idle", factory=Idle)]),
            )
        )
        flows = system.entities("flow", lambda flow_id: Idle(), idle_after=60)
        flows.ask("f-1", "hello")
        wait_until(lambda: tree(system).find("services", "idle") is not None)
        root = tree(system)
    assert (root.name, root.kind, root.state) == ("root", "Supervisor", "running")
    assert [child.name for child in root.children] == ["user", "services", "flow"]
    assert root.find("user", "Recorder") is not None
    services = root.find("services")
    assert services is not None
    assert services.children[0].kind == "Idle"
    entity = root.find("flow", "f-1")
    assert entity is not None
    assert (entity.kind, entity.state, entity.restarts, entity.mailbox) == ("flow", "running", 0, 0)


def test_nodes_show_restarts_mailbox_depth_and_idle_time() -> None:
    with ActorSystem(threads=2) as system:  # one thread stays free while Blocker blocks one
        crashing = system.spawn(Idle)
        crashing.tell("crash")
        crashing.ask("revived")
        gate = threading.Event()
        busy = system.spawn(Blocker, gate)
        busy.tell("block")
        for i in range(5):
            busy.tell(i)
        wait_until(lambda: _mailbox(system, "Blocker") == 5)
        gate.set()
        assert _user_child(system, "Idle").restarts == 1
        wait_until(lambda: _mailbox(system, "Blocker") == 0)
        wait_until(lambda: _user_child(system, "Idle").idle_s >= 0.05)  # idle time grows...
        crashing.ask("busy again")
        assert _user_child(system, "Idle").idle_s < 0.05  # ...and a message resets it


def test_to_dict_has_the_keys_the_cli_prints() -> None:
    leaf = Node(name="a", kind="K", state="running", restarts=2, mailbox=3, idle_s=0.5)
    node = Node(
        name="root",
        kind="Supervisor",
        state="running",
        restarts=0,
        mailbox=0,
        idle_s=1.0,
        children=(leaf,),
    )
    assert node.to_dict() == {
        "name": "root",
        "kind": "Supervisor",
        "state": "running",
        "restarts": 0,
        "mailbox": 0,
        "idle_s": 1.0,
        "children": [
            {
                "name": "a",
                "kind": "K",
                "state": "running",
                "restarts": 2,
                "mailbox": 3,
                "idle_s": 0.5,
                "children": [],
            }
        ],
    }


def _user_child(system: ActorSystem, name: str) -> Node:
    node = tree(system).find("user", name)
    assert node is not None
    return node


def _mailbox(system: ActorSystem, name: str) -> int | None:
    node = tree(system).find("user", name)
    return None if node is None else node.mailbox
