"""Supervisors: actors whose only job is to restart their children, Erlang/OTP style.

A child fails (see `Cell.fail`), its supervisor receives `ChildFailed` and, within its restart
intensity (at most `max_restarts` restarts in any `within` seconds, counted over all children as
OTP does), restarts it: `one_for_one` only the failed child, `one_for_all` every child. A restart
builds a new instance with the child's factory on the SAME cell, so refs held elsewhere stay valid
and the messages queued behind the crash go to the new instance. Beyond the intensity the
supervisor stops all its children and fails itself with `Escalated`, so its own supervisor
applies its strategy in turn; the root supervisor hands the error to the daemon's callback.

Children come from `ChildSpec`s (started in `on_start`, restarted with the supervisor) or are
adopted later (actors started with `Actor.start()`, entities). Adopted children die with their
supervisor's incarnation: a restarted supervisor starts only its specs.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog

from runtime.actor import Actor, Cell, Ref
from runtime.deadletters import type_name
from runtime.errors import Escalated
from runtime.lifecycle import Adopt, ChildFailed, ChildStopped

__all__ = ["ONE_FOR_ALL", "ONE_FOR_ONE", "ChildSpec", "RestartChild", "Strategy", "Supervisor"]

_log = structlog.get_logger(__name__)

ONE_FOR_ONE: Final = "one_for_one"
ONE_FOR_ALL: Final = "one_for_all"


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartChild:
    """An operator's request to restart one child now (`payflowctl restart`). Not a failure, so
    it spends none of the restart intensity; the reply is whether the child was restarted."""

    cell: Cell


@dataclass(frozen=True, slots=True, kw_only=True)
class Strategy:
    """How a supervisor restarts: which children, and how often before it gives up."""

    kind: Literal["one_for_one", "one_for_all"] = ONE_FOR_ONE
    max_restarts: int = 3
    within: float = 5.0

    def __post_init__(self) -> None:
        if self.kind not in (ONE_FOR_ONE, ONE_FOR_ALL):
            raise ValueError(f"unknown strategy {self.kind!r}")
        if self.max_restarts < 0 or not self.within > 0:
            raise ValueError("max_restarts must be >= 0 and within > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSpec:
    """A child: its name under the supervisor and the factory that (re)builds it.

    `factory` runs on the dispatcher and must construct and return a new actor instance; it is
    where a restarted child gets its state back (e.g. by loading it from the journal).
    """

    name: str
    factory: Callable[[], Actor]
    mailbox_size: int | None = None


class Supervisor(Actor):
    """Restarts its children per `strategy`. Its own state is rebuilt from `children` on restart."""

    def __init__(
        self, *, children: Sequence[ChildSpec] = (), strategy: Strategy | None = None
    ) -> None:
        super().__init__()
        names = [spec.name for spec in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique, got {names}")
        self.strategy = strategy or Strategy()
        self._specs = tuple(children)
        # Each child with the incarnation it is expected to fail in next: a report about an
        # older one is about a failure a restart already ordered will cure.
        self._children: dict[Cell, int] = {}
        self._restarts: deque[float] = deque()

    # --- reading from any thread -----------------------------------------------------------------

    def child_cells(self) -> tuple[Cell, ...]:
        """The live children, oldest first; safe to call from any thread (dict.copy is atomic)."""
        return tuple(self._children.copy())

    def child(self, name: str) -> Ref[Any] | None:
        """The first live child called `name`; safe to call from any thread."""
        return next((c.ref for c in self.child_cells() if c.name == name and not c.closed), None)

    # --- lifecycle -------------------------------------------------------------------------------

    def on_start(self) -> None:
        system = self._cell.system
        for spec in self._specs:
            cell = system.new_cell(
                name=spec.name, capacity=spec.mailbox_size, factory=spec.factory, parent=self._cell
            )
            self._children[cell] = cell.incarnation
            system.launch(cell, adopted=True)

    def on_stop(self) -> None:
        self._terminate_children()

    def on_failure(self, *_exc_info: Any) -> None:
        # Whatever broke this incarnation, its children die with it (as in OTP): the next one
        # starts its specs afresh.
        self._terminate_children()

    def on_receive(self, message: Any) -> Any:
        # The frequent ones first: one Adopt and one ChildStopped per actor's life.
        if isinstance(message, Adopt):
            if not message.cell.closed:
                self._children[message.cell] = message.cell.incarnation
        elif isinstance(message, ChildStopped):
            self._children.pop(message.cell, None)
        elif isinstance(message, ChildFailed):
            self._child_failed(message)
        elif isinstance(message, RestartChild):
            return self._restart_on_request(message.cell)
        else:
            return super().on_receive(message)
        return None

    # --- restarts --------------------------------------------------------------------------------

    def _child_failed(self, report: ChildFailed) -> None:
        expected = self._children.get(report.cell)
        if expected is None or report.incarnation < expected:
            return  # not ours (any more), or already being restarted
        if not self._within_intensity():
            self._give_up(report)
            return
        restarting = [report.cell] if self.strategy.kind == ONE_FOR_ONE else list(self._children)
        for cell in restarting:
            self._restart(cell)
        _log.info(
            "child_restarted",
            supervisor=self._cell.name,
            child=report.cell.name,
            strategy=self.strategy.kind,
            error_type=type_name(report.error),
        )

    def _restart_on_request(self, cell: Cell) -> bool:
        if cell not in self._children:
            return False
        self._restart(cell)
        _log.info("child_restarted", supervisor=self._cell.name, child=cell.name, reason="request")
        return cell in self._children

    def _restart(self, cell: Cell) -> None:
        if cell.request_restart():
            self._children[cell] += 1
        else:
            self._children.pop(cell, None)  # it stopped meanwhile; nothing to restart

    def _within_intensity(self) -> bool:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > self.strategy.within:
            self._restarts.popleft()
        if len(self._restarts) >= self.strategy.max_restarts:
            return False
        self._restarts.append(now)
        return True

    def _give_up(self, report: ChildFailed) -> None:
        strategy = self.strategy
        _log.error(
            "supervisor_gave_up",
            supervisor=self._cell.name,
            child=report.cell.name,
            max_restarts=strategy.max_restarts,
            within=strategy.within,
        )
        self._terminate_children()
        self._cell.fail(
            Escalated(
                f"supervisor {self._cell.name!r}: more than {strategy.max_restarts} restarts in "
                f"{strategy.within}s; last failure: {report.cell.name!r} raised "
                f"{type_name(report.error)}"
            )
        )

    def _terminate_children(self) -> None:
        for cell in self._children:
            cell.request_terminate()
        self._children.clear()
