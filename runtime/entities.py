"""Entities: actors addressed by id, built on demand, passivated when idle.

`EntityRegistry.tell(entity_id, message)` finds the live entity in a dict (O(1)) or activates it:
a new cell is created at once and the entity itself is built by `factory(entity_id)` on the
dispatcher, never on the sender's thread (which may be the asyncio loop; the factory of a flow
loads it from the journal). The entity's supervisor restarts it with the same factory.
`EntityRegistry.spawn(entity_id, message, first)` starts an entity whose id was just made up:
its first incarnation comes from `first`, which need not look for anything stored.

Passivation: one periodic sweep per registry (a `Sweep` message from the scheduler to the
registry's supervisor) asks each entity idle for `idle_after` seconds to passivate. The request
is a control command of the entity's own mailbox, so it runs between two of its messages, never
during one; the entity passivates only if it still has been idle that long, `can_passivate()`
agrees, and its mailbox is empty, and the emptiness check and closing the mailbox are one atomic
step against senders. A sender that races with it therefore either got its message in first (and
passivation is off) or finds the mailbox closed and re-routes to a new incarnation: no message is
lost. The new incarnation is not built before the old one's `on_stop` has returned, so whatever
the old one flushed there is visible to the factory.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

import pykka

from runtime.actor import RUNNING, Actor, Cell, Ref
from runtime.dispatcher import DispatchFuture, refuse_to_block_here
from runtime.errors import Internal
from runtime.supervisor import ChildSpec, Strategy, Supervisor

if TYPE_CHECKING:
    from runtime.system import ActorSystem

__all__ = ["EntityRegistry", "EntitySupervisor", "Sweep"]

A = TypeVar("A", bound=Actor)

_DELIVERY_ATTEMPTS = 3  # a fresh incarnation only closes if the system is stopping


@dataclass(frozen=True, slots=True)
class Sweep:
    """Time to look for idle entities (sent by the scheduler)."""


class EntitySupervisor(Supervisor):
    """Supervises the entities of one registry (one_for_one) and runs its passivation sweeps."""

    def __init__(self, *, idle_after: float, strategy: Strategy | None = None) -> None:
        super().__init__(strategy=strategy)
        self.idle_after = idle_after

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Sweep):
            self._sweep()
            return None
        return super().on_receive(message)

    def _sweep(self) -> None:
        idle_since = time.monotonic() - self.idle_after
        for cell in self._children:
            if cell.state == RUNNING and cell.last_active <= idle_since and cell.empty():
                cell.request_passivation(self.idle_after)


class EntityRegistry(Generic[A]):
    """Entity id -> live actor, for one kind of entity. Thread-safe; call from anywhere."""

    def __init__(
        self,
        system: ActorSystem,
        kind: str,
        factory: Callable[[str], A],
        *,
        idle_after: float,
        sweep_every: float | None = None,
        strategy: Strategy | None = None,
        mailbox_size: int | None = None,
        parent: Ref[Supervisor] | None = None,
    ) -> None:
        if not idle_after > 0:
            raise ValueError(f"idle_after must be > 0, got {idle_after}")
        self.kind = kind
        self.idle_after = idle_after
        self._system = system
        self._factory = factory
        self._mailbox_size = mailbox_size
        self._lock = threading.Lock()
        self._live: dict[str, Cell] = {}
        self._successors: dict[Cell, Cell] = {}  # closing incarnation -> the one waiting for it
        entity_strategy = strategy or Strategy(max_restarts=10, within=1.0)
        self.supervisor: Ref[EntitySupervisor] = system.supervise(
            ChildSpec(
                name=kind,
                factory=lambda: EntitySupervisor(idle_after=idle_after, strategy=entity_strategy),
            ),
            parent=parent,
        )
        every = sweep_every if sweep_every is not None else max(idle_after / 2, 0.01)
        self._sweeps = system.scheduler.schedule_periodic(every, self.supervisor, Sweep())

    # --- sending ---------------------------------------------------------------------------------

    def tell(self, entity_id: str, message: Any) -> None:
        """Deliver `message`, activating the entity if needed. `Overloaded` if its mailbox is
        full; `ActorDeadError` only once the system is stopping."""
        self._deliver(entity_id, message, None)

    @overload
    def ask(
        self, entity_id: str, message: Any, *, block: Literal[False], timeout: float | None = None
    ) -> pykka.Future[Any]: ...

    @overload
    def ask(
        self,
        entity_id: str,
        message: Any,
        *,
        block: Literal[True] = True,
        timeout: float | None = None,
    ) -> Any: ...

    def ask(
        self, entity_id: str, message: Any, *, block: bool = True, timeout: float | None = None
    ) -> Any | pykka.Future[Any]:
        """As `Ref.ask`, activating the entity if needed."""
        if block:
            refuse_to_block_here()
        future: DispatchFuture[Any] = DispatchFuture()
        self._deliver(entity_id, message, future)
        return future.get(timeout=timeout) if block else future

    def _deliver(self, entity_id: str, message: Any, reply_to: Any) -> None:
        cell = self._live.get(entity_id)  # lock-free: a dict read is atomic
        for _ in range(_DELIVERY_ATTEMPTS):
            if cell is None:
                cell = self._activate(entity_id)
            try:
                cell.post(message, reply_to)
            except pykka.ActorDeadError:
                cell = None  # it passivated or stopped just now: re-route
            else:
                return
        raise pykka.ActorDeadError(f"{self.kind} {entity_id!r} cannot be activated")

    def spawn(self, entity_id: str, message: Any, first: Callable[[str], A]) -> None:
        """Start an entity whose id was just made up, so nothing stored can name it yet, and
        deliver `message` to it. Its first incarnation is built by `first(entity_id)` (which may
        skip loading: there is nothing to load); a restart uses the registry's factory, since
        by then the first one may have stored something. `Internal` if the id is known already.

        The message is queued before the entity is scheduled: its first run starts it and
        handles the message, one dispatch instead of two."""
        with self._lock:
            if entity_id in self._live:
                raise Internal(f"{self.kind} {entity_id!r} exists already: spawn is for new ids")
            cell = self._new_cell(entity_id, functools.partial(self._factory, entity_id))
            cell.first_factory = functools.partial(first, entity_id)
            cell.post(message)  # a held cell queues without being scheduled
            self._system.launch(cell, release=False)
            self._live[entity_id] = cell
        cell.release()

    # --- activation and removal ------------------------------------------------------------------

    def _new_cell(self, entity_id: str, factory: Callable[[], Actor]) -> Cell:
        cell = self._system.new_cell(
            name=entity_id,
            kind=self.kind,
            capacity=self._mailbox_size,
            factory=factory,
            parent=self.supervisor.cell,
        )
        cell.on_closed = self._on_closed
        return cell

    def _activate(self, entity_id: str) -> Cell:
        with self._lock:
            current = self._live.get(entity_id)
            if current is not None and not current.closed:
                return current  # another sender activated it first
            cell = self._new_cell(entity_id, functools.partial(self._factory, entity_id))
            # Adopted before anyone can release it: its supervisor must know it before it fails.
            self._system.launch(cell, release=False)
            self._live[entity_id] = cell
            if current is not None:  # still running its on_stop: build the new one after it
                self._successors[current] = cell
        if current is None:
            cell.release()
        return cell

    def _on_closed(self, cell: Cell) -> None:
        with self._lock:
            if self._live.get(cell.name) is cell:
                del self._live[cell.name]
            successor = self._successors.pop(cell, None)
        if successor is not None:
            successor.release()

    # --- reading ---------------------------------------------------------------------------------

    def get(self, entity_id: str) -> Ref[A] | None:
        """The live entity's ref, without activating it (it may passivate right after)."""
        cell = self._live.get(entity_id)
        return None if cell is None or cell.closed else cell.ref

    def __contains__(self, entity_id: object) -> bool:
        return isinstance(entity_id, str) and self.get(entity_id) is not None

    def __len__(self) -> int:
        """How many entities are live (not passivated)."""
        return len(self._live)

    def live_ids(self) -> list[str]:
        return list(self._live.copy())

    def passivate_idle_now(self) -> None:
        """Run a sweep now instead of waiting for the next tick."""
        self.supervisor.tell(Sweep())

    def close(self) -> None:
        """Stop sweeping (the system's shutdown stops the entities themselves)."""
        self._sweeps.cancel()
