"""The embedded journal backend: one SQLite file in WAL mode.

Durability: `PRAGMA synchronous=FULL`. In WAL mode FULL fsyncs the write-ahead log on every
commit, so once `append` returns the events survive a process crash AND a power loss or kernel
panic. `NORMAL` would fsync only at checkpoints: it survives a process crash, but a power loss
may drop the last commits, and "persist the event, then act" would then have acted (charged a
card, answered `ack`) on events that no longer exist. Throughput comes from group commit
(`runtime.group_commit`: many appends, one transaction, one fsync), not from weaker syncing.

Concurrency: writes go through one connection guarded by a lock and run as `BEGIN IMMEDIATE`
transactions, which take SQLite's write lock up front. The stream's version is compared inside
that transaction, so the check is race-free across threads AND across processes that open the
same file; the primary keys of `events` and `aliases` catch anything that slipped past anyway.
A batch is decided in memory from two queries, then written with one statement per table.
Reads run one statement each on a pool of reader connections (`sqlite_store.ReaderPool`).

The file is created with mode 0600 before SQLite opens it (it holds per-flow secrets); SQLite
gives its -wal and -shm files the same mode.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from runtime.errors import AliasConflict, Internal, PayflowError, VersionConflict
from runtime.journal import (
    ID_NAMESPACE,
    AppendRequest,
    LoadedStream,
    Snapshot,
    StoredEvent,
    StreamHead,
)
from runtime.sqlite_store import (
    INSERT_ALIAS,
    INSERT_EVENT,
    SELECT_EVENTS,
    SELECT_HEAD,
    SELECT_LOAD_HEAD,
    SELECT_OWNER,
    SELECT_OWNERS,
    SELECT_VERSION,
    SELECT_VERSIONS,
    UPSERT_SNAPSHOT,
    UPSERT_STREAM,
    ReaderPool,
    connect,
    create_private_file,
    immediate_transaction,
    prepare_schema,
    storage_errors,
)

DEFAULT_BUSY_TIMEOUT = 5.0

# One encoder for every payload: json.dumps builds a new one per call when given options, and
# JSONEncoder.encode still builds a C encoder per call (profiled: most of the committer's JSON
# time). The C encoder is built once here with the same options; no markers, so a cyclic payload
# ends in RecursionError instead of ValueError (both refused below).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_ENCODE_CHUNKS: Callable[[dict[str, Any], int], list[str]] | None = (
    None
    if _C_MAKE_ENCODER is None
    else _C_MAKE_ENCODER(
        None,
        _ENCODER.default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        False,
    )
)


class SQLiteJournal:
    """`runtime.journal.Journal` on one SQLite file; safe to share between threads."""

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    ) -> None:
        path = os.fspath(path)
        self._write_lock = threading.Lock()
        self._closed = False  # guarded by _write_lock
        self._readers = ReaderPool(path, busy_timeout=busy_timeout)
        # Bound aliases, as read: a binding is never changed or removed once committed (by any
        # process), so a name found once is answered from memory after. Names not found are
        # never cached: they may be bound at any moment.
        self._owners: dict[tuple[str, str], str] = {}
        self._owners_lock = threading.Lock()
        create_private_file(path)
        with storage_errors():
            self._writer = connect(path, busy_timeout=busy_timeout)
            try:
                prepare_schema(self._writer, busy_timeout=busy_timeout)
            except BaseException:
                self._writer.close()
                raise

    # --- writes -----------------------------------------------------------------------------

    def append(self, request: AppendRequest) -> int:
        """See `Journal.append`: one transaction, nothing written on a conflict."""
        (result,) = self.append_batch([request])
        if isinstance(result, PayflowError):
            raise result
        return result

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[int | PayflowError]:
        """See `Journal.append_batch`: one transaction, each request checked on its own."""
        if not requests:
            return []
        encoded = [_encode_request(request) for request in requests]
        with self._writing() as conn:
            try:
                results, bound = self._apply_all(conn, requests, encoded)
            except sqlite3.IntegrityError:
                # The stored rows disagree with what the checks read (a file written by other
                # means): start over, one request per savepoint, so only the culprit fails.
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                alone = [
                    self._apply_alone(conn, *pair) for pair in zip(requests, encoded, strict=True)
                ]
                results = [result for result, _ in alone]
                bound = [binding for _, bindings in alone for binding in bindings]
        # Committed (the transaction above did not raise): the names are bound for good.
        if bound:
            self._remember(*bound)
        return results

    def _apply_all(
        self,
        conn: sqlite3.Connection,
        requests: Sequence[AppendRequest],
        encoded: Sequence[_Encoded | PayflowError],
    ) -> tuple[list[int | PayflowError], list[_Binding]]:
        """Check every request in memory against state read in two queries, then write all the
        accepted rows with one statement per table. A refused request writes nothing, so the
        batch needs no savepoint per request (profiled: the statements run per request were
        most of the group-commit thread). Also returns the names the admitted requests bind,
        to remember once committed."""
        admitted = [
            r for r, e in zip(requests, encoded, strict=True) if not isinstance(e, PayflowError)
        ]
        batch = _Batch(
            versions=_stream_versions(conn, admitted), owners=self._alias_owners(conn, admitted)
        )
        results = [
            rows if isinstance(rows, PayflowError) else batch.admit(request, rows)
            for request, rows in zip(requests, encoded, strict=True)
        ]
        batch.write(conn)
        return results, batch.bound

    def _apply_alone(
        self, conn: sqlite3.Connection, request: AppendRequest, encoded: _Encoded | PayflowError
    ) -> tuple[int | PayflowError, list[_Binding]]:
        if isinstance(encoded, PayflowError):
            return encoded, []
        conn.execute("SAVEPOINT request")
        try:
            (result,), bound = self._apply_all(conn, [request], [encoded])
        except sqlite3.IntegrityError as error:
            conn.execute("ROLLBACK TO request")
            result, bound = Internal(f"the stored journal refused the append: {error}"), []
        conn.execute("RELEASE request")
        return result, bound

    def _alias_owners(
        self, conn: sqlite3.Connection, requests: Sequence[AppendRequest]
    ) -> dict[tuple[str, str], str]:
        """Owners of every name the batch binds: from memory when known (a binding never
        changes), the others in ONE query. Names found unbound are absent."""
        owners: dict[tuple[str, str], str] = {}
        unknown: list[tuple[str, str]] = []
        for key in {(a.namespace, a.name) for request in requests for a in request.aliases}:
            owner = self._owners.get(key)
            if owner is not None:
                owners[key] = owner
            elif "\x00" in key[0] or "\x00" in key[1]:
                # SQLite's JSON functions cut text at a NUL: ask for such a name by itself.
                rows = conn.execute(SELECT_OWNER, key).fetchall()
                owners.update((key, owner) for (owner,) in rows)
            else:
                unknown.append(key)
        if unknown:
            rows = conn.execute(SELECT_OWNERS, (json.dumps(unknown),)).fetchall()
            owners.update(((namespace, name), owner) for namespace, name, owner in rows)
        return owners

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """See `Journal.save_snapshot`: refuses a snapshot ahead of the stored stream."""
        payload = _encode(snapshot.payload)
        with self._writing() as conn:
            row = conn.execute(SELECT_VERSION, (snapshot.stream_id,)).fetchone()
            current = row[1] if row is not None else 0
            if not 1 <= snapshot.version <= current:
                raise VersionConflict(
                    f"snapshot of {snapshot.stream_id!r} at version {snapshot.version} "
                    f"but the stream is at {current}",
                    expected=snapshot.version,
                    actual=current,
                )
            conn.execute(UPSERT_SNAPSHOT, (snapshot.stream_id, snapshot.version, payload))

    def meta(self, key: str, default: Callable[[], str]) -> str:
        """See `Journal.meta`: the first value ever stored under `key` wins, in any process."""
        rows = self._readers.read("SELECT value FROM meta WHERE key = ?", (key,))
        if rows:
            return str(rows[0][0])
        candidate = default()
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, candidate),
            )
            stored = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(stored[0])

    # --- reads ------------------------------------------------------------------------------

    def load(self, stream_id: str) -> LoadedStream | None:
        """See `Journal.load`. No read transaction: the first query reads the version and the
        snapshot together, and events 1..version never change once committed, so the second
        query, bounded by that version, completes the same state whatever commits in between."""
        heads = self._readers.read(SELECT_LOAD_HEAD, (stream_id,))
        if not heads:
            return None
        ((version, snapshot_version, snapshot_payload),) = heads
        snapshot = None
        if snapshot_version is not None:
            payload = json.loads(snapshot_payload)
            snapshot = Snapshot(stream_id=stream_id, version=snapshot_version, payload=payload)
        after = snapshot_version or 0
        events = self._events(stream_id, after, version) if after < version else []
        return LoadedStream(stream_id=stream_id, version=version, snapshot=snapshot, events=events)

    def events(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        """See `Journal.events`."""
        return self._events(stream_id, after_version, _NO_LIMIT)

    def _events(self, stream_id: str, after: int, upto: int) -> list[StoredEvent]:
        rows = self._readers.read(SELECT_EVENTS, (stream_id, after, upto))
        return [
            StoredEvent(stream_id=stream_id, version=v, kind=kind, payload=json.loads(text), at=at)
            for v, kind, text, at in rows
        ]

    def resolve(self, name: str, namespace: str = ID_NAMESPACE) -> str | None:
        """See `Journal.resolve`. Every request names its flow, so bound names are cached
        (profiled under payflow-bench: a read transaction per request on the I/O loop)."""
        key = (namespace, name)
        owner = self._owners.get(key)
        if owner is not None:
            return owner
        rows = self._readers.read(SELECT_OWNER, key)
        if not rows:
            return None
        owner = str(rows[0][0])
        self._remember((key, owner))
        return owner

    def resolve_known(self, name: str, namespace: str = ID_NAMESPACE) -> str | None:
        """See `Journal.resolve_known`: the bindings this journal committed or read before."""
        return self._owners.get((namespace, name))

    def _remember(self, *bound: _Binding) -> None:
        """Keep (namespace, name) -> stream bindings known to be committed, oldest out first."""
        with self._owners_lock:
            for key, owner in bound:
                if len(self._owners) >= _OWNERS_CACHED:
                    del self._owners[next(iter(self._owners))]  # the oldest entry
                self._owners[key] = owner

    def heads(self, *, tags: Collection[str] | None = None) -> list[StreamHead]:
        """See `Journal.heads`: ordered by last update, then stream id."""
        order = " ORDER BY updated_at, stream_id"
        if tags is None:
            rows = self._readers.read(SELECT_HEAD + order, ())
        else:
            # json_each binds any number of tags as ONE parameter: no SQL built from input.
            where = " WHERE tag IN (SELECT value FROM json_each(?))"
            rows = self._readers.read(SELECT_HEAD + where + order, (json.dumps(list(tags)),))
        return [_head_from_row(row) for row in rows]

    def tag_counts(self) -> dict[str | None, int]:
        """See `Journal.tag_counts`: one aggregate query, whatever the number of streams (the
        daemon's gauges ask every second; building every head was O(all flows ever))."""
        rows = self._readers.read("SELECT tag, COUNT(*) FROM streams GROUP BY tag", ())
        return {row[0]: int(row[1]) for row in rows}

    def head(self, stream_id: str) -> StreamHead | None:
        """See `Journal.head`."""
        rows = self._readers.read(SELECT_HEAD + " WHERE stream_id = ?", (stream_id,))
        return _head_from_row(rows[0]) if rows else None

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection; waits for a write in progress. Idempotent."""
        self._readers.close()
        with self._write_lock:
            if not self._closed:
                self._closed = True
                self._writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- connections ------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction on the writer connection, committed unless the body raises."""
        with self._write_lock, storage_errors():
            if self._closed:
                raise Internal("the journal is closed")
            with immediate_transaction(self._writer) as conn:
                yield conn


# --- the write path ----------------------------------------------------------------------------

_Encoded = tuple[list[tuple[str, str, float]], str | None]  # (kind, payload, at) rows, snapshot
_Binding = tuple[tuple[str, str], str]  # (namespace, name) -> stream id


def _encode_request(request: AppendRequest) -> _Encoded | PayflowError:
    """Serialise outside the write lock; a bad payload fails its own request, not the batch."""
    try:
        rows = [(event.kind, _encode(event.payload), event.at) for event in request.events]
        snapshot = None if request.snapshot is None else _encode(request.snapshot)
    except Internal as error:
        return error
    return rows, snapshot


def _encode(payload: Mapping[str, Any]) -> str:
    as_dict = payload if type(payload) is dict else dict(payload)
    try:
        if _ENCODE_CHUNKS is None:  # an interpreter without the C accelerator
            return _ENCODER.encode(as_dict)
        return "".join(_ENCODE_CHUNKS(as_dict, 0))
    except (TypeError, ValueError, RecursionError) as error:
        # json's messages name the offending type, never the value: safe for secrets.
        raise Internal(f"payload is not JSON-safe: {error}") from error


def _stream_versions(conn: sqlite3.Connection, requests: Sequence[AppendRequest]) -> dict[str, int]:
    """The stored version of every stream the batch appends to (absent: a new stream), in ONE
    query: the writer holds the write lock, so nothing moves them until the commit."""
    streams = {request.stream_id for request in requests}
    versions: dict[str, int] = {}
    for stream_id in [s for s in streams if "\x00" in s]:  # see _alias_owners
        streams.discard(stream_id)
        versions.update(conn.execute(SELECT_VERSION, (stream_id,)).fetchall())
    if streams:
        versions.update(conn.execute(SELECT_VERSIONS, (json.dumps(list(streams)),)).fetchall())
    return versions


@dataclass(slots=True)
class _Batch:
    """A batch being decided in memory: each admitted request moves `versions` and `owners`
    (so a later request sees it) and queues its rows; `write` stores them all at the end."""

    versions: dict[str, int]
    owners: dict[tuple[str, str], str]
    aliases: list[tuple[str, str, str]] = field(default_factory=list)
    events: list[tuple[str, int, str, str, float]] = field(default_factory=list)
    streams: list[tuple[str, int, str | None, float]] = field(default_factory=list)
    snapshots: list[tuple[str, int, str]] = field(default_factory=list)
    bound: list[_Binding] = field(default_factory=list)  # every name an admitted request binds

    def admit(self, request: AppendRequest, encoded: _Encoded) -> int | PayflowError:
        """The request's new version with its rows queued, or its error with nothing queued."""
        stream_id = request.stream_id
        current = self.versions.get(stream_id, 0)
        if current != request.expected_version:
            return VersionConflict(
                f"stream {stream_id!r} is at version {current}, "
                f"expected {request.expected_version}",
                expected=request.expected_version,
                actual=current,
            )
        refused = self._refused_alias(request)
        if refused is not None:
            return refused
        self._bind(request)
        rows, snapshot = encoded
        version = self.versions[stream_id] = current + len(rows)
        self.events.extend(
            (stream_id, current + offset, kind, payload, at)
            for offset, (kind, payload, at) in enumerate(rows, start=1)
        )
        self.streams.append((stream_id, version, request.tag, rows[-1][2]))
        if snapshot is not None:
            self.snapshots.append((stream_id, version, snapshot))
        return version

    def _refused_alias(self, request: AppendRequest) -> AliasConflict | None:
        for alias in request.aliases:
            owner = self.owners.get((alias.namespace, alias.name))
            if owner is not None and owner != request.stream_id:
                # The message never names the owner: that would hand a client another flow's id.
                return AliasConflict(f"{alias.namespace} {alias.name!r} is already bound elsewhere")
        return None

    def _bind(self, request: AppendRequest) -> None:
        """Queue the names not yet bound; binding one again to the same stream is a no-op, so a
        retried append stays harmless."""
        for alias in request.aliases:
            key = (alias.namespace, alias.name)
            self.bound.append((key, request.stream_id))
            if key not in self.owners:
                self.owners[key] = request.stream_id
                self.aliases.append((alias.namespace, alias.name, request.stream_id))

    def write(self, conn: sqlite3.Connection) -> None:
        """One statement per table. Every row was checked above, so the UNIQUE keys of aliases
        and events can only refuse rows written by other means (the caller handles that)."""
        if self.aliases:
            conn.executemany(INSERT_ALIAS, self.aliases)
        conn.executemany(INSERT_EVENT, self.events)
        conn.executemany(UPSERT_STREAM, self.streams)
        if self.snapshots:
            conn.executemany(UPSERT_SNAPSHOT, self.snapshots)


# --- reads ---------------------------------------------------------------------------------------

_OWNERS_CACHED = 100_000  # bound aliases kept in memory (~200 B each)
_NO_LIMIT = 2**63 - 1  # the largest SQLite integer: "every later event"


def _head_from_row(row: tuple[Any, ...]) -> StreamHead:
    stream_id, version, tag, updated_at = row
    return StreamHead(stream_id=stream_id, version=version, tag=tag, updated_at=updated_at)
