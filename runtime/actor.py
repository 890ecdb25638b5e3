"""pykka's Actor API on a dispatcher: thousands of actors on a few threads.

`Actor` is a `pykka.Actor` whose three extension points put it on a `Dispatcher`:
`_create_actor_inbox` gives it a `Cell` (its mailbox and its identity across restarts),
`_create_future` a `DispatchFuture`, and `_start_actor_loop` schedules its first run, in which
`on_start` executes on the dispatcher before any message.

What differs from `pykka.ThreadingActor`, on purpose:

- An actor belongs to an `ActorSystem`. `MyActor.start(...)` uses the current one: the system of
  the dispatcher thread it is called on, or the one entered with `with system:`; without either it
  raises `Internal`. `system.spawn(MyActor, ...)` names the system explicitly.
- Actors are NOT in `pykka.ActorRegistry` (its unregister is a linear scan under a global lock:
  at 100k actors that is the cost of every stop). The system tracks them instead and
  `ActorSystem.stop_all()` replaces `ActorRegistry.stop_all()`.
- Every actor is supervised (plain `start()` puts it under the system's `user` guardian) and its
  ref survives restarts: a restart builds a new instance on the same cell (mailbox, urn, ref), so
  holders of the ref never notice. A plain `start(*args, **kwargs)` reuses its arguments for that.
- A failure in a `tell` handler, BaseException included, neither kills the actor silently nor (as
  in pykka) stops every actor: see `Cell.fail`.
- Blocking on a future on a dispatcher thread raises `Internal` (see `DispatchFuture`).
- Mailboxes are bounded (`mailbox_size`): a full one raises `Overloaded` in the sender.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self, cast

import pykka
import structlog

from runtime.cell import Cell
from runtime.deadletters import type_name
from runtime.dispatcher import DispatchFuture
from runtime.lifecycle import ADOPTING, RUNNING, AwaitBuilt, State, current_system
from runtime.ref import Ref

__all__ = ["RUNNING", "Actor", "Cell", "Ref", "State", "current_system"]

_log = structlog.get_logger(__name__)

# --- the actor -----------------------------------------------------------------------------------


class Actor(pykka.Actor):
    """A pykka actor run by an `ActorSystem`'s dispatcher. Subclass it as you would
    `pykka.ThreadingActor`; see the module docstring for what differs."""

    mailbox_size: ClassVar[int | None] = None
    """This class's mailbox bound; None: the system's `mailbox_size`."""

    _cell: Cell

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        # pykka's __init__ would build a uuid urn, a threading.Event and a plain ActorRef only
        # for us to replace them; the cell already holds this actor's identity.
        cell = self._create_actor_inbox()
        ADOPTING.set(None)  # only the outermost actor a factory builds adopts the cell
        cell.bind(self)
        self._cell = cell
        self.actor_urn = cell.urn
        self.actor_inbox = cell
        self.actor_stopped = cell.stopped
        self._actor_ref = cell.ref

    @staticmethod
    def _create_actor_inbox() -> Cell:
        adopting = ADOPTING.get()
        return adopting if adopting is not None else current_system().new_cell()

    @staticmethod
    def _create_future() -> DispatchFuture[Any]:
        return DispatchFuture()

    def _start_actor_loop(self) -> None:
        self._cell.release()

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> Ref[Self]:
        """Build and start the actor under the current system's `user` guardian."""
        return current_system().spawn(cls, *args, **kwargs)

    @property
    def actor_ref(self) -> Ref[Self]:
        return cast("Ref[Self]", self._actor_ref)

    def _stop(self) -> None:
        self._cell.stop_now()

    def _handle_receive(self, message: Any) -> Any:
        """Asks and pykka's own messages (stop, proxy calls) come through here; plain tells go
        straight to `on_receive` (one call less per message), so override `on_receive`."""
        if message.__class__ is AwaitBuilt:
            return None
        return super()._handle_receive(message)

    def on_receive(self, message: Any) -> Any:
        """pykka logs an unexpected message with its repr; its contents may be secret."""
        _log.warning("unexpected_message", actor=self._cell.name, message_type=type_name(message))

    def can_passivate(self) -> bool:
        """Whether an idle entity may be stopped now to free memory (it is rebuilt on the next
        message). Veto while work is in flight that only this instance remembers."""
        return True
