"""The journal: the one durable record of what happened, knowing nothing of payments.

A journal holds *streams* of events. Each stream has a version that starts at 0 (no events) and
grows by exactly 1 per stored event, so the versions of a stream are always 1..N with no gap.
Writers append with the version they last saw (`expected_version`, 0 for a new stream); if the
stream moved meanwhile the append raises `VersionConflict` and writes nothing. That is the
optimistic concurrency the domain builds on: persist the event, then act.

Aliases are names bound to a stream in the same transaction as its events, one name per
namespace. The "id" namespace is shared by every kind of public id (flow_id, pre_id,
booking_id), so one name can never reach two streams; "idempotency" holds create keys. Binding a
name that already names another stream raises `AliasConflict` and writes nothing; binding it
again to the same stream is a no-op, so a retried append stays harmless.

`Journal` is a Protocol so that the embedded SQLite backend and a future shared PostgreSQL
backend are interchangeable: keep it small, and keep SQL out of it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from runtime.errors import Internal, PayflowError

ID_NAMESPACE = "id"
"""flow_id, pre_id and booking_id share this namespace: one name, at most one stream."""

IDEMPOTENCY_NAMESPACE = "idempotency"
"""Client-chosen create keys; a repeated key resolves to the stream it created first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An event to append. `payload` must be JSON-safe (str keys; str, int, float, bool, None,
    lists and maps of those); `at` is epoch seconds, chosen by the caller so replays agree."""

    kind: str
    payload: Mapping[str, Any]
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    """An event as the journal returns it, with its place in its stream."""

    stream_id: str
    version: int
    kind: str
    payload: Mapping[str, Any]
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Alias:
    """A name bound to a stream, unique within its namespace."""

    name: str
    namespace: str = ID_NAMESPACE


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendRequest:
    """Append `events` to `stream_id` if it is still at `expected_version`, binding `aliases`.

    `tag` is a short label stored on the stream head (the domain keeps the flow state there so
    listing flows by state needs no replay); None leaves the current tag unchanged.
    `snapshot`, when given, is the stream's state after these events, saved in the same
    transaction: no fsync of its own, and never out of step with the events it summarises.
    """

    stream_id: str
    expected_version: int
    events: Sequence[NewEvent]
    aliases: Sequence[Alias] = ()
    tag: str | None = None
    snapshot: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        # An append without events would bind aliases or move the tag without a version change,
        # which no reader could ever notice or replay: refuse it where the bug is.
        if not self.events:
            raise Internal("an append must carry at least one event")
        if self.expected_version < 0:
            raise Internal("expected_version must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamHead:
    """A stream's current version, tag and the `at` of its latest event."""

    stream_id: str
    version: int
    tag: str | None
    updated_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A fold of a stream's events 1..version, saved by the domain to shorten replays."""

    stream_id: str
    version: int
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedStream:
    """What a replay needs: the latest snapshot (if any) and only the events after it."""

    stream_id: str
    version: int
    snapshot: Snapshot | None
    events: Sequence[StoredEvent]


class Journal(Protocol):
    """Durable, version-checked event storage. Every method is safe to call from any thread.

    Storage failures surface as `runtime.errors` types: `Overloaded` when the store stayed busy
    past its timeout (retry with backoff), `Internal` for anything else.
    """

    def append(self, request: AppendRequest) -> int:
        """Store the request in one durable transaction and return the stream's new version.

        Raises `VersionConflict` or `AliasConflict`; on either, nothing of the request is written.
        """
        ...

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[int | PayflowError]:
        """Store many requests in ONE durable transaction (one fsync).

        Each request is checked on its own, in order (a later request sees the earlier ones):
        the result at index i is its new version, or the error that left it unwritten. A storage
        failure is raised instead, and then nothing of the batch is written.
        """
        ...

    def load(self, stream_id: str) -> LoadedStream | None:
        """The latest snapshot and the events after it, or None for an unknown stream."""
        ...

    def events(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        """Events with version > after_version, oldest first (for since-replay and history)."""
        ...

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep `snapshot` unless a newer one is stored; it may not be ahead of the stream."""
        ...

    def resolve(self, name: str, namespace: str = ID_NAMESPACE) -> str | None:
        """The stream a name is bound to, or None."""
        ...

    def resolve_known(self, name: str, namespace: str = ID_NAMESPACE) -> str | None:
        """The stream a name is bound to if this process already knows it, without I/O (safe
        on the event loop); None means "not known here", not "unbound": ask `resolve`."""
        ...

    def heads(
        self, *, tags: Collection[str] | None = None, updated_since: float | None = None
    ) -> list[StreamHead]:
        """Every stream head, or only those whose tag is in `tags` and (with `updated_since`)
        whose latest event is at or after that epoch time."""
        ...

    def tag_counts(self) -> dict[str | None, int]:
        """How many streams carry each tag (None: no tag), counted where the streams are."""
        ...

    def head(self, stream_id: str) -> StreamHead | None:
        """One stream's head, or None for an unknown stream."""
        ...

    def meta(self, key: str, default: Callable[[], str]) -> str:
        """The value stored under `key`; if none, store `default()` atomically and return it.

        Concurrent callers (threads or processes) all get the same value.
        """
        ...

    def close(self) -> None:
        """Release the storage. Idempotent; later calls on the journal raise `Internal`."""
        ...
