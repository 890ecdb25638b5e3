"""`ActorSystem`: the dispatcher, the supervision tree, the timers and the entity registries.

    root (Supervisor)                     strategy: `strategy`; gives up -> `on_escalation`
    +-- user (Supervisor)                 actors started with Actor.start() / system.spawn()
    +-- <spec name> ...                   system.supervise(ChildSpec(...))
    +-- <entity kind> (EntitySupervisor)  system.entities(kind, ...)

The system tracks every live actor itself (not in pykka's ActorRegistry, see runtime/actor.py):
`stop_all()` stops them all, `shutdown()` also joins every thread the system started.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pykka
import structlog

from runtime.actor import Actor, Cell, Ref
from runtime.deadletters import DeadLetters
from runtime.dispatcher import DEFAULT_BATCH, Dispatcher, refuse_to_block_here
from runtime.entities import EntityRegistry
from runtime.lifecycle import Adopt, set_current_system
from runtime.scheduler import Scheduler
from runtime.supervisor import ChildSpec, RestartChild, Strategy, Supervisor

__all__ = ["DEFAULT_MAILBOX_SIZE", "DEFAULT_THREADS", "ActorSystem"]

A = TypeVar("A", bound=Actor)

DEFAULT_THREADS = 1
"""Measured fastest under the GIL on 2 cores (benchmarks/runtime_bench.py): a second worker
mostly adds GIL hand-offs. More only help actors that block in C code releasing the GIL."""

DEFAULT_MAILBOX_SIZE = 10_000

_log = structlog.get_logger(__name__)


class ActorSystem:
    """Runs actors on `threads` dispatcher workers. Use as a context manager, or call
    `shutdown()`. `on_escalation(error)` is called (on a dispatcher thread: it must not block)
    when the root supervisor gives up, or a handler raised KeyboardInterrupt/SystemExit."""

    def __init__(
        self,
        *,
        threads: int = DEFAULT_THREADS,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        batch: int = DEFAULT_BATCH,
        strategy: Strategy | None = None,
        user_strategy: Strategy | None = None,
        on_escalation: Callable[[BaseException], None] | None = None,
        scheduler: Scheduler | None = None,
        name: str = "payflowd",
    ) -> None:
        if mailbox_size < 1:
            raise ValueError(f"mailbox_size must be >= 1, got {mailbox_size}")
        self.name = name
        self.mailbox_size = mailbox_size
        self.dead_letters = DeadLetters()
        self._on_escalation = on_escalation
        self._urn_prefix = f"urn:payflowd:{uuid.uuid4().hex}:"
        self._urns = itertools.count(1)
        self._live: dict[Cell, None] = {}
        # Taken for every actor started and stopped: `with` on the bare lock is a C call, on the
        # Condition two Python ones. Holding the lock is holding the Condition.
        self._live_lock = threading.Lock()
        self._live_changed = threading.Condition(self._live_lock)
        self._closing = False
        self._undo_current: Callable[[], None] = lambda: None
        self._owns_scheduler = scheduler is None
        self.scheduler = scheduler if scheduler is not None else Scheduler()
        self.dispatcher = Dispatcher(
            threads=threads, batch=batch, name=f"{name}-dispatch", initializer=self._enter_worker
        )
        self._root = self._start_root(strategy or Strategy(), user_strategy or Strategy())

    def _enter_worker(self) -> None:
        set_current_system(self)

    def _start_root(self, strategy: Strategy, user_strategy: Strategy) -> Cell:
        root = self.new_cell(name="root", factory=lambda: Supervisor(strategy=strategy))
        self.launch(root, adopted=True)
        self._user = self.new_cell(
            name="user", factory=lambda: Supervisor(strategy=user_strategy), parent=root
        )
        self.launch(self._user)
        return root

    # --- starting actors -------------------------------------------------------------------------

    @property
    def root(self) -> Ref[Supervisor]:
        return self._root.ref

    @property
    def user(self) -> Ref[Supervisor]:
        return self._user.ref

    def spawn(self, actor_class: type[A], *args: Any, **kwargs: Any) -> Ref[A]:
        """`actor_class(*args, **kwargs)` built here and started under the `user` guardian, which
        restarts it from the same arguments if it fails (what `Actor.start()` does)."""
        undo = set_current_system(self)
        try:
            actor = actor_class(*args, **kwargs)
        finally:
            undo()
        cell = actor._cell
        cell.factory = functools.partial(actor_class, *args, **kwargs)
        cell.parent = self._user
        self.launch(cell)
        return actor.actor_ref

    def supervise(self, spec: ChildSpec, *, parent: Ref[Supervisor] | None = None) -> Ref[Any]:
        """Start `spec` as a child of `parent` (default: root); its factory runs on the dispatcher.
        The ref stays valid across restarts, not beyond a restart of `parent`."""
        cell = self.new_cell(
            name=spec.name,
            capacity=spec.mailbox_size,
            factory=spec.factory,
            parent=(parent or self.root).cell,
        )
        self.launch(cell)
        return cell.ref

    def entities(
        self,
        kind: str,
        factory: Callable[[str], A],
        *,
        idle_after: float,
        sweep_every: float | None = None,
        strategy: Strategy | None = None,
        mailbox_size: int | None = None,
        parent: Ref[Supervisor] | None = None,
    ) -> EntityRegistry[A]:
        """A registry of `kind` entities built by `factory(entity_id)`, passivated when idle."""
        return EntityRegistry(
            self,
            kind,
            factory,
            idle_after=idle_after,
            sweep_every=sweep_every,
            strategy=strategy,
            mailbox_size=mailbox_size,
            parent=parent,
        )

    def restart(self, ref: Ref[Any], *, timeout: float = 5.0) -> bool:
        """Restart `ref`'s actor through its supervisor, as an operator's request (no restart
        intensity spent). False for the root, or an actor its supervisor no longer has.
        Waits for the supervisor's answer, so not from an actor."""
        parent = ref.cell.parent
        if parent is None:
            return False
        return bool(parent.ref.ask(RestartChild(cell=ref.cell), timeout=timeout))

    # --- the cells' side -------------------------------------------------------------------------

    def next_urn(self) -> str:
        return f"{self._urn_prefix}{next(self._urns)}"

    def new_cell(
        self,
        *,
        name: str = "",
        kind: str = "",
        capacity: int | None = None,
        factory: Callable[[], Actor] | None = None,
        parent: Cell | None = None,
    ) -> Cell:
        """A held cell: nothing runs until `launch`."""
        return Cell(self, name=name, kind=kind, capacity=capacity, factory=factory, parent=parent)

    def launch(self, cell: Cell, *, adopted: bool = False, release: bool = True) -> None:
        """Track `cell`, have its parent adopt it (unless it already did), and schedule it
        (unless `release` is False: the caller releases it later)."""
        with self._live_lock:
            if self._closing:
                raise pykka.ActorDeadError(f"actor system {self.name!r} is shutting down")
            self._live[cell] = None
        if not adopted and cell.parent is not None:
            try:
                cell.parent.post_unbounded(Adopt(cell=cell))
            except pykka.ActorDeadError:
                self.forget(cell)
                raise
        if release:
            cell.release()

    def forget(self, cell: Cell) -> None:
        """A cell closed for good."""
        with self._live_lock:
            self._live.pop(cell, None)
            if not self._live:
                self._live_changed.notify_all()

    def escalate(self, error: BaseException) -> None:
        _log.critical("supervision_escalated_to_root", error_type=type(error).__qualname__)
        if self._on_escalation is not None:
            self._on_escalation(error)

    # --- the whole system ------------------------------------------------------------------------

    def actors(self) -> list[Ref[Any]]:
        """Refs of every live actor, supervisors included (a snapshot)."""
        with self._live_changed:
            return [cell.ref for cell in self._live]

    def __len__(self) -> int:
        return len(self._live)

    def stop_all(self, timeout: float | None = 10.0) -> bool:
        """Stop every actor: first the workers, each after the messages already queued, then the
        supervision tree. No new actor starts afterwards. True if all stopped within `timeout`."""
        refuse_to_block_here()  # it waits for actors that this very thread would have to run
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._live_changed:
            self._closing = True
            workers = [c for c in self._live if not isinstance(c.actor, Supervisor)]
        for cell in workers:
            cell.ref.stop(block=False)
        self._wait_closed(workers, deadline)
        self._root.request_terminate()
        return self._wait_closed(list(self._live.copy()), deadline)

    def _wait_closed(self, cells: list[Cell], deadline: float | None) -> bool:
        """Wait until every cell is closed. Checks resume where they stopped (O(n) in all) and
        run every 10 ms: waking on each of 100k stops would cost more than it saves."""
        checked = 0
        with self._live_changed:
            while checked < len(cells):
                if cells[checked].closed:
                    checked += 1
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._live_changed.wait(0.01 if remaining is None else min(remaining, 0.01))
            return True

    def shutdown(self, timeout: float = 10.0) -> bool:
        """`stop_all`, then join the dispatcher threads and (if it owns it) the scheduler's.
        True if everything stopped in time. Idempotent. Not from an actor (raises `Internal`):
        an `on_escalation` callback should hand the decision to another thread."""
        deadline = time.monotonic() + timeout
        stopped = self.stop_all(timeout)
        if self._owns_scheduler:
            self.scheduler.close()
        joined = self.dispatcher.shutdown(max(deadline - time.monotonic(), 0.0))
        if not (stopped and joined):
            _log.warning("actor_system_shutdown_incomplete", live_actors=len(self._live))
        return stopped and joined

    def __enter__(self) -> ActorSystem:
        self._undo_current = set_current_system(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._undo_current()
        self.shutdown()
