"""What the parts of the actor runtime share: actor states, the current system, and the
messages between a cell and its supervisor. Runtime internals; users import `runtime.actor`."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from pykka import messages

from runtime.dispatcher import Ask
from runtime.errors import Internal

if TYPE_CHECKING:
    from runtime.cell import Cell
    from runtime.system import ActorSystem

State = Literal["starting", "running", "restarting", "stopped", "passivated"]
STARTING: Final = "starting"  # built or being built; on_start has not run yet
RUNNING: Final = "running"
RESTARTING: Final = "restarting"  # failed; its supervisor decides, messages keep queueing
STOPPED: Final = "stopped"
PASSIVATED: Final = "passivated"  # stopped while idle; its registry rebuilds it on demand

CURRENT_SYSTEM: ContextVar[ActorSystem | None] = ContextVar("actor_system", default=None)
ADOPTING: ContextVar[Cell | None] = ContextVar("adopting_cell", default=None)
FATAL = (KeyboardInterrupt, SystemExit)


def current_system() -> ActorSystem:
    """The system `Actor.start()` uses here: the dispatcher thread's, or the one entered."""
    system = CURRENT_SYSTEM.get()
    if system is None:
        raise Internal(
            "no current ActorSystem: start actors with system.spawn(...), inside "
            "`with system:`, or from another actor"
        )
    return system


def set_current_system(system: ActorSystem | None) -> Callable[[], None]:
    """Make `system` current in this context; returns the function that undoes it."""
    token = CURRENT_SYSTEM.set(system)
    return lambda: CURRENT_SYSTEM.reset(token)


# --- what a cell tells its supervisor, and what a supervisor commands a cell -------------------


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ChildFailed:
    cell: Cell
    incarnation: int
    error: BaseException


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ChildStopped:
    cell: Cell


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Adopt:
    """A child created outside its supervisor (user actors, entities) joins it."""

    cell: Cell


@dataclass(frozen=True, slots=True)
class AwaitBuilt:
    """Answered by any actor once built: what `Ref.proxy()` waits for."""


NOT_PLAIN = frozenset(
    {
        Ask,
        messages._ActorStop,
        messages.ProxyCall,
        messages.ProxyGetAttr,
        messages.ProxySetAttr,
        AwaitBuilt,
    }
)
"""Queue items that are not a plain tell for `on_receive`: asks, and the messages
`Actor._handle_receive` handles itself."""


@dataclass(frozen=True, slots=True)
class Restart:
    pass


@dataclass(frozen=True, slots=True)
class Terminate:
    pass


@dataclass(frozen=True, slots=True)
class Passivate:
    idle_after: float


class Gone:
    """A referent that dies at once: the weakref of a ref whose actor is not built yet, and the
    'no message' default of `Cell.fail`."""


NO_ACTOR: weakref.ref[Any] = weakref.ref(Gone())
