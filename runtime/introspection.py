"""The supervision tree as data, for `payflowctl tree` and tests.

A snapshot read from outside the actors without asking them (asking 100k actors would take
seconds and block on each): every field read is atomic, so each node is consistent on its own,
while the tree as a whole may mix moments a few microseconds apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.supervisor import Supervisor

if TYPE_CHECKING:
    from runtime.actor import Cell
    from runtime.system import ActorSystem

__all__ = ["Node", "tree"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """One actor: `state` is starting, running, restarting, stopped or passivated; `mailbox` is
    its queue depth; `idle_s` the seconds since it last handled a message."""

    name: str
    kind: str
    state: str
    restarts: int
    mailbox: int
    idle_s: float
    children: tuple[Node, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "restarts": self.restarts,
            "mailbox": self.mailbox,
            "idle_s": self.idle_s,
            "children": [child.to_dict() for child in self.children],
        }

    def find(self, *path: str) -> Node | None:
        """The descendant at `path` (names, from this node's children down), or None."""
        node: Node | None = self
        for name in path:
            node = next((c for c in node.children if c.name == name), None) if node else None
        return node


def tree(system: ActorSystem) -> Node:
    """The supervision tree of `system`, from its root supervisor down."""
    return _node(system.root.cell, time.monotonic())


def _node(cell: Cell, now: float) -> Node:
    actor = cell.actor
    children = actor.child_cells() if isinstance(actor, Supervisor) else ()
    return Node(
        name=cell.name,
        kind=cell.kind,
        state=cell.state,
        restarts=cell.restarts,
        mailbox=len(cell),
        idle_s=round(max(now - cell.last_active, 0.0), 3),
        children=tuple(_node(child, now) for child in children),
    )
