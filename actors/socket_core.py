"""The pure core of the socket manager: which client session is in which flow's room.

No I/O here (no pykka, websockets or msgpack): the socket manager actor owns one `Rooms` value and
does what its answers say. Frames are opaque values to this module (the shell stores encoded
bytes), so the core decides *who* gets *which version*, never how it is sent.

Joining without a gap. A session joining a flow first becomes a *catching-up* member (`begin_join`)
BEFORE the application reads the flow's history from the journal. While it catches up, statuses
published for the flow are buffered for it instead of sent, because the replay frames (read
from the journal) must reach it first. `finish_join(up_to=v)` then releases the buffered statuses
newer than `v` (the version the replay ended at), and from there on a member only gets versions
higher than the last one it got: a status can be neither lost nor repeated nor reordered.

Presence. The flow actor must know when its room gains its first client or loses its last one
(it preserves a flow nobody watches for a while, then expires it): `begin_join`, `leave` and
`drop_session` say so by returning a `Presence` change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

F = TypeVar("F")  # a published frame, opaque here


@dataclass(frozen=True, slots=True, kw_only=True)
class Presence:
    """A flow's room gained its first client (`attached`) or lost its last one."""

    flow_id: str
    attached: bool


@dataclass(slots=True)
class _Member(Generic[F]):
    """One session in one room: the last version it got, and what waits while it catches up."""

    last_version: int = 0
    catching_up: bool = True
    buffered: list[tuple[int, F]] = field(default_factory=list)


class Rooms(Generic[F]):
    """flow_id -> the sessions joined to it, and for each the versions it has been sent."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, _Member[F]]] = {}
        self._sessions: dict[str, set[str]] = {}

    # --- membership ------------------------------------------------------------------------------

    def begin_join(self, session_id: str, flow_id: str) -> Presence | None:
        """Make the session a catching-up member; a rejoin restarts its catch-up.

        Returns the presence change when the room had no client before."""
        room = self._rooms.setdefault(flow_id, {})
        first = not room
        room[session_id] = _Member()
        self._sessions.setdefault(session_id, set()).add(flow_id)
        return Presence(flow_id=flow_id, attached=True) if first else None

    def finish_join(self, session_id: str, flow_id: str, *, up_to: int) -> list[F]:
        """The session got every version up to `up_to`: the buffered frames newer than that,
        oldest first, to send now. Empty if the session is no longer a member."""
        member = self._rooms.get(flow_id, {}).get(session_id)
        if member is None:
            return []
        pending = sorted(member.buffered, key=lambda item: item[0])
        member.buffered = []
        member.catching_up = False
        member.last_version = max(member.last_version, up_to)
        released: list[F] = []
        for version, frame in pending:
            if version > member.last_version:
                member.last_version = version
                released.append(frame)
        return released

    def leave(self, session_id: str, flow_id: str) -> Presence | None:
        """Remove one membership; the presence change when the room is now empty."""
        room = self._rooms.get(flow_id)
        if room is None or room.pop(session_id, None) is None:
            return None
        flows = self._sessions.get(session_id)
        if flows is not None:
            flows.discard(flow_id)
            if not flows:
                del self._sessions[session_id]
        if room:
            return None
        del self._rooms[flow_id]
        return Presence(flow_id=flow_id, attached=False)

    def drop_session(self, session_id: str) -> list[Presence]:
        """The session closed: leave every room it was in."""
        changes = [self.leave(session_id, flow_id) for flow_id in sorted(self.flows_of(session_id))]
        return [change for change in changes if change is not None]

    # --- fan-out ---------------------------------------------------------------------------------

    def deliver(self, flow_id: str, version: int, frame: F) -> list[str]:
        """The sessions to send this status to now (every one gets the same `frame`, so only
        their ids are returned: no object per delivery, on every status's path).
        Catching-up members buffer it; live members get it only if it is newer than what they
        have (a replayed or late status is never sent twice)."""
        recipients: list[str] = []
        room = self._rooms.get(flow_id)
        if room is None:
            return recipients
        for session_id, member in room.items():
            if member.catching_up:
                member.buffered.append((version, frame))
            elif version > member.last_version:
                member.last_version = version
                recipients.append(session_id)
        return recipients

    # --- reading ---------------------------------------------------------------------------------

    def has_members(self, flow_id: str) -> bool:
        """Whether anyone watches the flow: asked for every status, so no set is built."""
        return bool(self._rooms.get(flow_id))

    def members(self, flow_id: str) -> frozenset[str]:
        return frozenset(self._rooms.get(flow_id, {}))

    def flows_of(self, session_id: str) -> frozenset[str]:
        return frozenset(self._sessions.get(session_id, ()))

    def room_sizes(self) -> dict[str, int]:
        """flow_id -> how many sessions are joined to it."""
        return {flow_id: len(room) for flow_id, room in self._rooms.items()}

    def __iter__(self) -> Iterator[str]:
        """The flow ids that have at least one session."""
        return iter(list(self._rooms))
