"""`Ref`: a `pykka.ActorRef` that outlives the restarts of its actor."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

import pykka
from pykka import messages

from runtime.dispatcher import DispatchFuture, refuse_to_block_here
from runtime.lifecycle import NO_ACTOR, AwaitBuilt

if TYPE_CHECKING:
    from runtime.cell import Cell

A = TypeVar("A", bound=pykka.Actor)

# --- refs ----------------------------------------------------------------------------------------


class Ref(pykka.ActorRef[A]):
    """A `pykka.ActorRef` that stays valid across restarts of its actor.

    It exists before its actor does (an entity is built on the dispatcher when first needed), so
    it is constructed from the cell, not from the actor as pykka's is.
    """

    # Until the actor is built (two entities start per payment flow): class-level defaults
    # cost nothing per ref; `Cell.bind` sets the instance's own.
    actor_class = cast(type[A], pykka.Actor)
    _actor_weakref = cast(weakref.ref[A], NO_ACTOR)

    def __init__(self, cell: Cell) -> None:
        self._cell = cell
        self.actor_urn = cell.urn
        self.actor_inbox = cell
        self.actor_stopped = cell.stopped
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
            self.ask(AwaitBuilt())
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
