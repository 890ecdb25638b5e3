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

import threading
import time
import weakref
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Self, TypeVar, cast, overload

import pykka
import structlog
from pykka import messages

from runtime.deadletters import type_name
from runtime.dispatcher import Ask, DispatchFuture, Mailbox, refuse_to_block_here
from runtime.errors import Internal, Overloaded

if TYPE_CHECKING:
    from runtime.system import ActorSystem

__all__ = ["Actor", "Cell", "Ref", "State", "current_system"]

A = TypeVar("A", bound="Actor")

_log = structlog.get_logger(__name__)

State = Literal["starting", "running", "restarting", "stopped", "passivated"]
STARTING: Final = "starting"  # built or being built; on_start has not run yet
RUNNING: Final = "running"
RESTARTING: Final = "restarting"  # failed; its supervisor decides, messages keep queueing
STOPPED: Final = "stopped"
PASSIVATED: Final = "passivated"  # stopped while idle; its registry rebuilds it on demand

_CURRENT_SYSTEM: ContextVar[ActorSystem | None] = ContextVar("actor_system", default=None)
_ADOPTING: ContextVar[Cell | None] = ContextVar("adopting_cell", default=None)
_FATAL = (KeyboardInterrupt, SystemExit)


def current_system() -> ActorSystem:
    """The system `Actor.start()` uses here: the dispatcher thread's, or the one entered."""
    system = _CURRENT_SYSTEM.get()
    if system is None:
        raise Internal(
            "no current ActorSystem: start actors with system.spawn(...), inside "
            "`with system:`, or from another actor"
        )
    return system


def set_current_system(system: ActorSystem | None) -> Callable[[], None]:
    """Make `system` current in this context; returns the function that undoes it."""
    token = _CURRENT_SYSTEM.set(system)
    return lambda: _CURRENT_SYSTEM.reset(token)


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
class _AwaitBuilt:
    """Answered by any actor once built: what `Ref.proxy()` waits for."""


_NOT_PLAIN = frozenset(
    {
        Ask,
        messages._ActorStop,
        messages.ProxyCall,
        messages.ProxyGetAttr,
        messages.ProxySetAttr,
        _AwaitBuilt,
    }
)
"""Queue items that are not a plain tell for `on_receive`: asks, and the messages
`Actor._handle_receive` handles itself."""


@dataclass(frozen=True, slots=True)
class _Restart:
    pass


@dataclass(frozen=True, slots=True)
class _Terminate:
    pass


@dataclass(frozen=True, slots=True)
class _Passivate:
    idle_after: float


# --- the cell ------------------------------------------------------------------------------------


class _Gone:
    """A referent that dies at once: the weakref of a ref whose actor is not built yet, and the
    'no message' default of `Cell.fail`."""


_NO_ACTOR: weakref.ref[Any] = weakref.ref(_Gone())


class _StopFlag(threading.Event):
    """`actor_stopped`: a threading.Event without its Condition until someone waits on it.

    A real Event costs ~1.3 KiB (a Condition, a lock, a waiter deque); at 100k actors that is
    130 MiB for a flag that is only ever read. Set once, never cleared.
    """

    _guard = threading.Lock()  # shared: set() and wait() are rare, is_set() is lock-free

    def __init__(self) -> None:  # deliberately not Event.__init__: no Condition up front
        self._stopped = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._stopped

    def set(self) -> None:
        with self._guard:
            self._stopped = True
            if self._event is not None:
                self._event.set()

    def clear(self) -> None:
        raise Internal("a stopped actor stays stopped; its flag is never cleared")

    def wait(self, timeout: float | None = None) -> bool:
        with self._guard:
            if self._stopped:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


class Cell(Mailbox):
    """One actor's identity across incarnations: mailbox, ref, supervision links and stats.

    All methods below `run` execute on the thread running this cell, so the actor instance and
    `state` are only ever touched by one thread at a time.
    """

    __slots__ = (
        "actor",
        "explicit_capacity",
        "factory",
        "incarnation",
        "kind",
        "last_active",
        "name",
        "on_closed",
        "parent",
        "passivation_requested",
        "ref",
        "restarts",
        "state",
        "stopped",
        "system",
        "urn",
    )

    def __init__(
        self,
        system: ActorSystem,
        *,
        name: str = "",
        kind: str = "",
        capacity: int | None = None,
        factory: Callable[[], Actor] | None = None,
        parent: Cell | None = None,
    ) -> None:
        super().__init__(system.dispatcher, capacity or system.mailbox_size)
        self.system = system
        self.urn = system.next_urn()
        self.name = name
        self.kind = kind
        self.explicit_capacity = capacity is not None
        self.factory = factory
        self.parent = parent
        self.actor: Actor | None = None
        self.stopped = _StopFlag()
        self.ref: Ref[Any] = Ref(self)
        self.state: State = STARTING
        self.restarts = 0
        self.incarnation = 1
        self.last_active = time.monotonic()
        self.on_closed: Callable[[Cell], None] | None = None
        self.passivation_requested = False

    def __repr__(self) -> str:
        return f"<Cell {self.kind} {self.name!r} {self.state}>"

    def bind(self, actor: Actor) -> None:
        """Called by `Actor.__init__`: `actor` is this cell's new incarnation."""
        if self.actor is not None:
            raise Internal(f"{self.name!r} already has a live instance; cannot bind another")
        self.actor = actor
        self.ref.actor_class = type(actor)
        self.ref._actor_weakref = weakref.ref(actor)
        self.kind = self.kind or type(actor).__name__
        self.name = self.name or self.kind
        if not self.explicit_capacity and actor.mailbox_size is not None:
            self._capacity = actor.mailbox_size

    # --- commands from other threads -------------------------------------------------------------

    def request_restart(self) -> bool:
        return self.post_control(_Restart())

    def request_terminate(self) -> bool:
        return self.post_control(_Terminate())

    def request_passivation(self, idle_after: float) -> bool:
        if self.passivation_requested:
            return False
        self.passivation_requested = True
        return self.post_control(_Passivate(idle_after))

    # --- the run: control commands first, then on_start if due, then up to `batch` messages -----

    def run(self, batch: int) -> None:
        # The hot path: every message goes through this loop, so it is one function (a Python
        # call costs as much as handling a trivial message) with its locals bound once.
        if self._control:
            self._obey_control()
        if self.state != RUNNING:
            self._run_not_running(batch)
            return
        actor: Actor = self.actor  # type: ignore[assignment]  # RUNNING implies built
        receive = actor.on_receive
        queue = self._queue
        while queue and batch:
            batch -= 1
            message = queue.popleft()
            if message.__class__ in _NOT_PLAIN:
                self._handle_special(actor, message)
                if self.state != RUNNING:
                    break
                continue
            try:
                receive(message)
            except BaseException as error:  # noqa: BLE001 - every failure is supervised
                self.fail(error, message)
                break
        self.last_active = time.monotonic()
        self._finish(self.state != RUNNING)

    def _handle_special(self, actor: Actor, item: Any) -> None:
        """An ask, or one of pykka's own messages (stop, proxy calls), as pykka handles them."""
        message, reply_to = (item.message, item.reply_to) if item.__class__ is Ask else (item, None)
        try:
            result = actor._handle_receive(message)
        except BaseException as error:  # noqa: BLE001 - every failure is supervised
            self._handler_raised(message, reply_to, error)
        else:
            if reply_to is not None:
                reply_to.set(result)

    def _run_not_running(self, batch: int) -> None:
        if self.state == STARTING and not self._closed:
            self._begin()
        if self.state == RUNNING:
            self.run(batch)  # just started: on to its first messages
            return
        self._finish(True)

    def _handler_raised(self, message: Any, reply_to: Any, error: BaseException) -> None:
        """An ask gets its exception back and, for an Exception, the actor goes on as in pykka.
        Anything else fails the actor: a tell's exception, and a BaseException even in an ask
        (the asker gets it too), since it skipped the handler's own cleanup."""
        if reply_to is not None:
            reply_to.set_exception((type(error), error, error.__traceback__))
            if isinstance(error, Exception):
                return
        self.fail(error, message)

    def _obey_control(self) -> None:
        while (command := self._take_control()) is not None:
            if isinstance(command, _Restart):
                self._restart()
            elif isinstance(command, _Terminate):
                self._terminate()
            elif isinstance(command, _Passivate):
                self._passivate(command.idle_after)

    def _begin(self) -> None:
        try:
            actor = self.actor if self.actor is not None else self._build()
            actor.on_start()
        except BaseException as error:  # noqa: BLE001 - a failing start is supervised too
            self.fail(error)
            return
        if self.state == STARTING:
            self.state = RUNNING

    def _build(self) -> Actor:
        if self.factory is None:
            raise Internal(f"{self.name!r} has no factory to build it from")
        token = _ADOPTING.set(self)
        undo = set_current_system(self.system)
        try:
            actor = self.factory()
        finally:
            undo()
            _ADOPTING.reset(token)
        if actor is not self.actor or self.actor is None:
            raise Internal(f"the factory of {self.name!r} must construct and return a new actor")
        return actor

    # --- failure ---------------------------------------------------------------------------------

    def fail(self, error: BaseException, message: Any = _Gone) -> None:
        """This incarnation is broken: log, tell the supervisor, handle nothing until it decides.

        The crashing message is a dead letter (never retried: it would likely crash the next
        incarnation too); messages queued behind it wait for the restarted incarnation. Exception
        and BaseException alike: only this actor is affected. KeyboardInterrupt and SystemExit
        also reach the system's escalation callback, since they ask for the process to stop.
        """
        if self._closed:
            return
        self.state = RESTARTING
        actor_class = type(self.actor).__name__ if self.actor is not None else self.kind
        if message is not _Gone:
            self.system.dead_letters.crashed(
                actor=self.name, actor_class=actor_class, message=message, error=error
            )
        _log.error("actor_failed", actor=self.name, actor_class=actor_class, exc_info=error)
        self._call_hook("on_failure", type(error), error, error.__traceback__)
        if isinstance(error, _FATAL):
            self.system.escalate(error)
        self._report(ChildFailed(cell=self, incarnation=self.incarnation, error=error))

    def _report(self, report: ChildFailed | ChildStopped) -> None:
        if self.parent is None:
            if isinstance(report, ChildFailed):
                self.system.escalate(report.error)
            return
        try:
            self.parent.post_unbounded(report)
        except pykka.ActorDeadError:
            self._terminate()  # an orphan: nobody is left to restart it

    def _restart(self) -> None:
        if self._closed:
            return
        if self.state == RUNNING:
            self._call_hook("on_stop")  # a healthy sibling restarted by one_for_all
        self.actor = None
        self.ref._actor_weakref = _NO_ACTOR
        self.restarts += 1
        self.incarnation += 1
        self.state = STARTING

    # --- stopping for good -----------------------------------------------------------------------

    def stop_now(self) -> None:
        """The actor handles a stop request (pykka's `_stop`): on_stop, then close for good."""
        left = self._close()
        self._call_hook("on_stop")
        self._closed_for_good(STOPPED, left, reason="actor_stopped")

    def _terminate(self) -> None:
        if self._closed:
            return
        was_running = self.state == RUNNING
        left = self._close()
        if was_running:
            self._call_hook("on_stop")
        self._closed_for_good(STOPPED, left, reason="actor_terminated")

    def _passivate(self, idle_after: float) -> None:
        self.passivation_requested = False
        if self.state != RUNNING or time.monotonic() - self.last_active < idle_after:
            return
        if not self._call_hook("can_passivate") or not self._close_if_empty():
            return  # vetoed, or a message arrived: stay
        self._call_hook("on_stop")
        self._closed_for_good(PASSIVATED, [], reason="passivated")

    def _closed_for_good(self, state: State, left: list[Any], reason: str) -> None:
        actor_class = type(self.actor).__name__ if self.actor is not None else self.kind
        self.state = state
        self.stopped.set()
        self.actor = None  # a passivated entity must free its memory even if refs linger
        self.ref._actor_weakref = _NO_ACTOR
        self.system.dead_letters.dropped(
            actor=self.name, actor_class=actor_class, messages=_answer(left), reason=reason
        )
        self.system.forget(self)
        if self.on_closed is not None:
            self.on_closed(self)
        self._report(ChildStopped(cell=self))

    def _call_hook(self, name: str, *args: Any) -> Any:
        """Run a lifecycle hook; a failing hook is logged and never stops the cleanup."""
        try:
            return getattr(self.actor, name)(*args)
        except BaseException as exc:  # noqa: BLE001 - the cell must finish what it was doing
            _log.error("actor_hook_failed", actor=self.name, hook=name, exc_info=exc)
            return False

    # --- what senders see ------------------------------------------------------------------------

    def _dead(self) -> Exception:
        return pykka.ActorDeadError(f"{self.ref} is not running ({self.state})")

    def _refused(self) -> Exception:
        return Overloaded(
            f"mailbox of {self.kind} {self.name!r} is full ({self._capacity} messages); retry later"
        )

    # pykka's ActorInbox protocol, for code that puts envelopes directly.
    def put(self, envelope: Any, /) -> None:
        self.post(envelope.message, envelope.reply_to)

    def get(self) -> Any:
        raise Internal("a cell's messages are taken by its dispatcher, never by get()")


def _answer(left: Iterable[Any]) -> list[Any]:
    """Answer the asks left in a closed mailbox as pykka does; return the unanswerable tells."""
    tells = []
    for item in left:
        if item.__class__ is not Ask:
            if not isinstance(item, (messages._ActorStop, ChildFailed, ChildStopped, Adopt)):
                tells.append(item)  # reports to a stopped supervisor are moot, not lost
        elif isinstance(item.message, messages._ActorStop):
            item.reply_to.set(None)
        else:
            error = pykka.ActorDeadError("the actor stopped before handling the message")
            item.reply_to.set_exception((type(error), error, None))
    return tells


# --- refs ----------------------------------------------------------------------------------------


class Ref(pykka.ActorRef[A]):
    """A `pykka.ActorRef` that stays valid across restarts of its actor.

    It exists before its actor does (an entity is built on the dispatcher when first needed), so
    it is constructed from the cell, not from the actor as pykka's is.
    """

    def __init__(self, cell: Cell) -> None:
        self._cell = cell
        self.actor_class = cast(type[A], Actor)  # replaced by the real class once built
        self.actor_urn = cell.urn
        self.actor_inbox = cell
        self.actor_stopped = cell.stopped
        self._actor_weakref = cast(weakref.ref[A], _NO_ACTOR)
        # tell() is on every message's path: bind it straight to the mailbox, one call less.
        self.tell = cell.post  # type: ignore[method-assign]

    def __str__(self) -> str:
        return f"{self._cell.kind or 'actor'} {self._cell.name!r} ({self.actor_urn})"

    @property
    def cell(self) -> Cell:
        return self._cell

    def is_alive(self) -> bool:
        return not self._cell.closed

    def proxy(self) -> pykka.ActorProxy[A]:
        """As pykka. A proxy inspects the live instance, so this waits until the actor is built
        (children and entities are built on the dispatcher): never call it from an actor before
        the target has started."""
        if self._actor_weakref() is None and not self._cell.closed:
            self.ask(_AwaitBuilt())
        return super().proxy()

    def tell(self, message: Any) -> None:
        """Queue `message`. Raises `Overloaded` if the mailbox is full, `ActorDeadError` if the
        actor has stopped."""
        self._cell.post(message)

    @overload
    def ask(
        self, message: Any, *, block: Literal[False], timeout: float | None = None
    ) -> pykka.Future[Any]: ...

    @overload
    def ask(
        self, message: Any, *, block: Literal[True] = True, timeout: float | None = None
    ) -> Any: ...

    @overload
    def ask(
        self, message: Any, *, block: bool = True, timeout: float | None = None
    ) -> Any | pykka.Future[Any]: ...

    def ask(
        self, message: Any, *, block: bool = True, timeout: float | None = None
    ) -> Any | pykka.Future[Any]:
        """As pykka: the reply, or a future of it with `block=False`. A full mailbox raises
        `Overloaded` here, at once; a dead actor fails the future with `ActorDeadError`."""
        if block:
            refuse_to_block_here()  # before the message goes out, not after
        future: DispatchFuture[Any] = DispatchFuture()
        try:
            self._cell.post(message, future)
        except pykka.ActorDeadError:
            future.set_exception()
        return future.get(timeout=timeout) if block else future

    @overload
    def stop(self, *, block: Literal[True] = True, timeout: float | None = None) -> bool: ...

    @overload
    def stop(
        self, *, block: Literal[False], timeout: float | None = None
    ) -> pykka.Future[bool]: ...

    @overload
    def stop(
        self, *, block: bool = True, timeout: float | None = None
    ) -> bool | pykka.Future[bool]: ...

    def stop(
        self, *, block: bool = True, timeout: float | None = None
    ) -> bool | pykka.Future[bool]:
        """As pykka: stop after the messages already queued. Never refused for a full mailbox."""
        if block:
            refuse_to_block_here()
        reply: DispatchFuture[Any] = DispatchFuture()
        stopping: DispatchFuture[bool] = DispatchFuture()
        try:
            self._cell.post_unbounded(messages._ActorStop(), reply)
        except pykka.ActorDeadError:
            stopping.set(False)
        else:
            stopping.set_get_hook(lambda timeout: reply.get(timeout=timeout) is None)
        return stopping.get(timeout=timeout) if block else stopping


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
        _ADOPTING.set(None)  # only the outermost actor a factory builds adopts the cell
        cell.bind(self)
        self._cell = cell
        self.actor_urn = cell.urn
        self.actor_inbox = cell
        self.actor_stopped = cell.stopped
        self._actor_ref = cell.ref

    @staticmethod
    def _create_actor_inbox() -> Cell:
        adopting = _ADOPTING.get()
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
        if message.__class__ is _AwaitBuilt:
            return None
        return super()._handle_receive(message)

    def on_receive(self, message: Any) -> Any:
        """pykka logs an unexpected message with its repr; its contents may be secret."""
        _log.warning("unexpected_message", actor=self._cell.name, message_type=type_name(message))

    def can_passivate(self) -> bool:
        """Whether an idle entity may be stopped now to free memory (it is rebuilt on the next
        message). Veto while work is in flight that only this instance remembers."""
        return True
