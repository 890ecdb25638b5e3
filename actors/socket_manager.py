"""The socket manager: the one owner of the client session / flow room table (DESIGN.md).

A thin actor shell around `actors.socket_core.Rooms`: every change and every fan-out is one
message in its mailbox, so the table is never touched by two threads. `publish` (the flow actors'
`StatusPublisher` port) encodes a status ONCE and hands the same bytes to every session in the
room; a session's `send` is thread-safe and never blocks (a slow reader is cut off by its own
bounded queue, not by us), so one slow client cannot hold up a room.

The shell speaks to the edges through what it is given: `encode` (the wire codec lives in
adapters) and `tell_flow(flow_id, message)` (the domain's entity registry), so this module
imports nothing from adapters.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import pykka

from actors.messages import ClientPresence
from actors.socket_core import Presence, Rooms
from runtime.actor import Actor, Ref
from runtime.dispatcher import DispatchFuture


class SessionLike(Protocol):
    """What the socket manager needs of a client connection (adapters.session.Session)."""

    @property
    def id(self) -> str: ...

    def send(self, frame: bytes) -> bool: ...


Encode = Callable[[Mapping[str, Any]], bytes]
TellFlow = Callable[[str, object], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    """One client session as `payflowctl sockets` shows it."""

    session_id: str
    remote: str
    flows: int


# --- messages (private: callers use the `SocketManager` facade) ---------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Opened:
    session: SessionLike
    remote: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _BeginJoin:
    session: SessionLike
    flow_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _FinishJoin:
    session_id: str
    flow_id: str
    up_to: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Leave:
    session_id: str
    flow_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _Closed:
    session_id: str


class _Published:
    """Statuses published and not yet fanned out, in order; filled by any thread, emptied by
    the actor. One `_PublishBatch` message stands for all of them: with thousands of flows ready
    to run, the one socket manager got one dispatcher turn per round of them and fell behind by
    a message per status (payflow-bench, 10,000 flows in flight); now a turn takes every status
    published so far. Taking a status earlier than its mailbox turn is safe: it was durable
    before it was published, and a joining session reads the journal after its `_BeginJoin`."""

    RENOTIFY_AFTER_S = 1.0  # a batch message lost with a crashed incarnation is sent again

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._views: list[tuple[str, Mapping[str, Any]]] = []
        self._since = 0.0

    def add(self, flow_id: str, view: Mapping[str, Any]) -> bool:
        """Queue a status; True when the actor must be told (a new batch, or a stale one)."""
        now = time.monotonic()
        with self._lock:
            self._views.append((flow_id, view))
            if len(self._views) > 1 and now - self._since < self.RENOTIFY_AFTER_S:
                return False
            self._since = now
            return True

    def take(self) -> list[tuple[str, Mapping[str, Any]]]:
        with self._lock:
            views, self._views = self._views, []
        return views


@dataclass(frozen=True, slots=True, kw_only=True)
class _PublishBatch:
    published: _Published


@dataclass(frozen=True, slots=True, kw_only=True)
class _Sessions:
    """Ask: the sessions as `SessionInfo`, for the control socket."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _RoomSize:
    """Ask: how many sessions are joined to one flow."""

    flow_id: str


# Immutable, so one of each is shared by every flow (two presence changes per watched flow).
_ATTACHED: Final = ClientPresence(attached=True)
_DETACHED: Final = ClientPresence(attached=False)


class SocketManagerActor(Actor):
    """Owns `Rooms` and the session objects; see the module docstring."""

    def __init__(self, *, encode: Encode, tell_flow: TellFlow) -> None:
        super().__init__()
        self._encode = encode
        self._tell_flow = tell_flow
        self._rooms: Rooms[bytes] = Rooms()
        self._sessions: dict[str, tuple[SessionLike, str]] = {}

    def on_receive(self, message: Any) -> Any:  # noqa: PLR0911 (one branch per message type)
        match message:
            case _PublishBatch(published=published):
                return self._publish(published.take())
            case _BeginJoin(session=session, flow_id=flow_id):
                self._sessions.setdefault(session.id, (session, ""))
                return self._presence(self._rooms.begin_join(session.id, flow_id))
            case _FinishJoin(session_id=session_id, flow_id=flow_id, up_to=up_to):
                return self._send(
                    session_id, self._rooms.finish_join(session_id, flow_id, up_to=up_to)
                )
            case _Leave(session_id=session_id, flow_id=flow_id):
                return self._presence(self._rooms.leave(session_id, flow_id))
            case _Closed(session_id=session_id):
                self._sessions.pop(session_id, None)
                for change in self._rooms.drop_session(session_id):
                    self._presence(change)
                return None
            case _Opened(session=session, remote=remote):
                self._sessions[session.id] = (session, remote)
                return None
            case _Sessions():
                return self._session_infos()
            case _RoomSize(flow_id=flow_id):
                return len(self._rooms.members(flow_id))
        return super().on_receive(message)

    def _publish(self, views: list[tuple[str, Mapping[str, Any]]]) -> None:
        # One loop for the whole batch with its lookups bound once: it runs for every status.
        rooms, sessions, encode = self._rooms, self._sessions, self._encode
        for flow_id, view in views:
            if not rooms.has_members(flow_id):
                continue  # nobody watches: do not even encode
            frame = encode(view)
            for session_id in rooms.deliver(flow_id, int(view["version"]), frame):
                entry = sessions.get(session_id)
                if entry is not None:
                    entry[0].send(frame)

    def _send(self, session_id: str, frames: list[bytes]) -> None:
        entry = self._sessions.get(session_id)
        if entry is None:
            return
        for frame in frames:
            entry[0].send(frame)

    def _presence(self, change: Presence | None) -> None:
        if change is not None:
            self._tell_flow(change.flow_id, _ATTACHED if change.attached else _DETACHED)

    def _session_infos(self) -> list[SessionInfo]:
        return [
            SessionInfo(
                session_id=session_id, remote=remote, flows=len(self._rooms.flows_of(session_id))
            )
            for session_id, (_session, remote) in self._sessions.items()
        ]


class SocketManager:
    """Thread-safe facade of the socket manager actor; implements `StatusPublisher`.

    Tells return at once; the `*_async` asks are awaitable on the asyncio loop without blocking
    it, the plain asks block (call them from worker threads only, e.g. the control socket's).
    """

    def __init__(self, ref: Ref[SocketManagerActor]) -> None:
        self.ref = ref
        self._published = _Published()
        self._post = ref.cell.post_unbounded  # a ref keeps its cell for life: bound once

    def publish(self, flow_id: str, view: Mapping[str, Any]) -> None:
        if self._published.add(flow_id, view):
            self._tell(_PublishBatch(published=self._published))

    def opened(self, session: SessionLike, remote: str) -> None:
        self._tell(_Opened(session=session, remote=remote))

    def begin_join(self, session: SessionLike, flow_id: str) -> DispatchFuture[None]:
        """A future completed once the session is a catching-up member: publish calls made
        after that are buffered for it, so the journal may be read from then on."""
        future = self.ref.ask(_BeginJoin(session=session, flow_id=flow_id), block=False)
        assert isinstance(future, DispatchFuture)  # what every runtime actor's ask returns
        return future

    def finish_join(self, session_id: str, flow_id: str, up_to: int) -> None:
        self._tell(_FinishJoin(session_id=session_id, flow_id=flow_id, up_to=up_to))

    def leave(self, session_id: str, flow_id: str) -> None:
        self._tell(_Leave(session_id=session_id, flow_id=flow_id))

    def closed(self, session_id: str) -> None:
        self._tell(_Closed(session_id=session_id))

    def sessions(self, timeout: float = 5.0) -> list[SessionInfo]:
        result: list[SessionInfo] = self.ref.ask(_Sessions(), block=True, timeout=timeout)
        return result

    def room_size(self, flow_id: str, timeout: float = 5.0) -> int:
        result: int = self.ref.ask(_RoomSize(flow_id=flow_id), block=True, timeout=timeout)
        return result

    def _tell(self, message: object) -> None:
        # Past the mailbox bound. Each of these follows something already admitted and bounded
        # upstream (a durable event, a connection the bridge accepted), and refusing it would
        # fail the flow that publishes after persisting, or leak a closed session in its rooms:
        # with 10,000 flows in flight the bound was reached and flows crashed (payflow-bench).
        with contextlib.suppress(pykka.ActorDeadError):  # stopping: nobody is left to send to
            self._post(message)
