"""`Cell`: one actor's identity across incarnations (mailbox, ref, supervision links, stats)
and the loop that runs it on a dispatcher thread."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pykka
import structlog
from pykka import messages

from runtime.dispatcher import Ask, Mailbox
from runtime.errors import Internal, Overloaded
from runtime.lifecycle import (
    ADOPTING,
    CURRENT_SYSTEM,
    FATAL,
    NO_ACTOR,
    NOT_PLAIN,
    PASSIVATED,
    RESTARTING,
    RUNNING,
    STARTING,
    STOPPED,
    Adopt,
    ChildFailed,
    ChildStopped,
    Gone,
    Passivate,
    Restart,
    State,
    Terminate,
    set_current_system,
)
from runtime.ref import Ref

if TYPE_CHECKING:
    from runtime.actor import Actor
    from runtime.system import ActorSystem

_log = structlog.get_logger("runtime.actor")


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
        "first_factory",
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
        self.first_factory: Callable[[], Actor] | None = None  # builds only the first incarnation
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
        return self.post_control(Restart())

    def request_terminate(self) -> bool:
        return self.post_control(Terminate())

    def request_passivation(self, idle_after: float) -> bool:
        if self.passivation_requested:
            return False
        self.passivation_requested = True
        return self.post_control(Passivate(idle_after))

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
            if message.__class__ in NOT_PLAIN:
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
            if isinstance(command, Restart):
                self._restart()
            elif isinstance(command, Terminate):
                self._terminate()
            elif isinstance(command, Passivate):
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
        factory, self.first_factory = self.first_factory or self.factory, None
        if factory is None:
            raise Internal(f"{self.name!r} has no factory to build it from")
        token = ADOPTING.set(self)
        # A dispatcher worker already has its system current (set once per thread, see
        # ActorSystem): setting it again for every actor built would only cost two context writes.
        undo = None if CURRENT_SYSTEM.get() is self.system else set_current_system(self.system)
        try:
            actor = factory()
        finally:
            if undo is not None:
                undo()
            ADOPTING.reset(token)
        if actor is not self.actor or self.actor is None:
            raise Internal(f"the factory of {self.name!r} must construct and return a new actor")
        return actor

    # --- failure ---------------------------------------------------------------------------------

    def fail(self, error: BaseException, message: Any = Gone) -> None:
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
        if message is not Gone:
            self.system.dead_letters.crashed(
                actor=self.name, actor_class=actor_class, message=message, error=error
            )
        _log.error("actor_failed", actor=self.name, actor_class=actor_class, exc_info=error)
        self._call_hook("on_failure", type(error), error, error.__traceback__)
        if isinstance(error, FATAL):
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
        self.ref._actor_weakref = NO_ACTOR
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
        actor, self.actor = self.actor, None  # a passivated entity must free its memory
        self.state = state
        self.stopped.set()
        self.ref._actor_weakref = NO_ACTOR
        tells = _answer(left)  # answers the asks
        if tells:  # most actors stop idle: no dead-letter bookkeeping for nothing
            actor_class = type(actor).__name__ if actor is not None else self.kind
            self.system.dead_letters.dropped(
                actor=self.name, actor_class=actor_class, messages=tells, reason=reason
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
