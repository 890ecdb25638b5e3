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
Reads use a small pool of extra connections: in WAL mode readers never wait for the writer's
fsync (benchmarks/journal_bench.py measures reads under write load both ways).

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
    connect,
    create_private_file,
    immediate_transaction,
    prepare_schema,
    read_transaction,
    storage_errors,
)

DEFAULT_BUSY_TIMEOUT = 5.0

_INSERT_EVENT = "INSERT INTO events (stream_id, version, kind, payload, at) VALUES (?, ?, ?, ?, ?)"
# A request without a tag keeps the stream's current one (COALESCE), so only the writer that
# knows the state has to say it.
_UPSERT_STREAM = """INSERT INTO streams (stream_id, version, tag, updated_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version,
    tag = COALESCE(excluded.tag, streams.tag), updated_at = excluded.updated_at"""
# An older snapshot saved late (a slow actor) must never replace a newer one.
_UPSERT_SNAPSHOT = """INSERT INTO snapshots (stream_id, version, payload) VALUES (?, ?, ?)
    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, payload = excluded.payload
    WHERE excluded.version >= snapshots.version"""
_SELECT_HEAD = "SELECT stream_id, version, tag, updated_at FROM streams"
_SELECT_EVENTS = """SELECT stream_id, version, kind, payload, at FROM events
    WHERE stream_id = ? AND version > ? ORDER BY version"""

# One encoder for every payload: json.dumps builds a new one per call when given options.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

_EncodedEvents = list[tuple[str, str, float]]  # (kind, payload JSON, at) per event


class SQLiteJournal:
    """`runtime.journal.Journal` on one SQLite file; safe to share between threads."""

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    ) -> None:
        self._path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle_readers: list[sqlite3.Connection] = []
        self._closed = False
        # Bound aliases, as read: a binding is never changed or removed once committed (by any
        # process), so a name found once is answered from memory after. Names not found are
        # never cached: they may be bound at any moment.
        self._owners: dict[tuple[str, str], str] = {}
        self._owners_lock = threading.Lock()
        create_private_file(self._path)
        with storage_errors():
            self._writer = connect(self._path, busy_timeout=busy_timeout)
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
        """See `Journal.append_batch`: one transaction, one savepoint per request."""
        if not requests:
            return []
        encoded = [_encode_events(request) for request in requests]
        with self._writing() as conn:
            results = [
                rows if isinstance(rows, PayflowError) else _apply_isolated(conn, request, rows)
                for request, rows in zip(requests, encoded, strict=True)
            ]
        # Committed (the transaction above did not raise): the names are bound for good.
        for request, result in zip(requests, results, strict=True):
            if not isinstance(result, PayflowError):
                for alias in request.aliases:
                    self._remember((alias.namespace, alias.name), request.stream_id)
        return results

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """See `Journal.save_snapshot`: refuses a snapshot ahead of the stored stream."""
        payload = _encode(snapshot.payload)
        with self._writing() as conn:
            current = _stream_version(conn, snapshot.stream_id)
            if not 1 <= snapshot.version <= current:
                raise VersionConflict(
                    f"snapshot of {snapshot.stream_id!r} at version {snapshot.version} "
                    f"but the stream is at {current}",
                    expected=snapshot.version,
                    actual=current,
                )
            conn.execute(_UPSERT_SNAPSHOT, (snapshot.stream_id, snapshot.version, payload))

    def meta(self, key: str, default: Callable[[], str]) -> str:
        """See `Journal.meta`: the first value ever stored under `key` wins, in any process."""
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return str(row[0])
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
        """See `Journal.load`: snapshot and later events read in one consistent transaction."""
        with self._reading() as conn:
            head = _fetch_head(conn, stream_id)
            if head is None:
                return None
            snapshot = _fetch_snapshot(conn, stream_id)
            after = snapshot.version if snapshot is not None else 0
            events = _fetch_events(conn, stream_id, after)
        return LoadedStream(
            stream_id=stream_id, version=head.version, snapshot=snapshot, events=events
        )

    def events(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        """See `Journal.events`."""
        with self._reading() as conn:
            return _fetch_events(conn, stream_id, after_version)

    def resolve(self, name: str, namespace: str = ID_NAMESPACE) -> str | None:
        """See `Journal.resolve`. Every request names its flow, so bound names are cached
        (profiled under payflow-bench: a read transaction per request on the I/O loop)."""
        key = (namespace, name)
        owner = self._owners.get(key)
        if owner is not None:
            return owner
        with self._reading() as conn:
            owner = _alias_owner(conn, namespace, name)
        if owner is not None:
            self._remember(key, owner)
        return owner

    def _remember(self, key: tuple[str, str], owner: str) -> None:
        with self._owners_lock:
            if len(self._owners) >= _OWNERS_CACHED:
                del self._owners[next(iter(self._owners))]  # the oldest entry
            self._owners[key] = owner

    def heads(self, *, tags: Collection[str] | None = None) -> list[StreamHead]:
        """See `Journal.heads`: ordered by last update, then stream id."""
        order = " ORDER BY updated_at, stream_id"
        with self._reading() as conn:
            if tags is None:
                rows = conn.execute(_SELECT_HEAD + order).fetchall()
            else:
                # json_each binds any number of tags as ONE parameter: no SQL built from input.
                where = " WHERE tag IN (SELECT value FROM json_each(?))"
                query = _SELECT_HEAD + where + order
                rows = conn.execute(query, (json.dumps(list(tags)),)).fetchall()
        return [_head_from_row(row) for row in rows]

    def tag_counts(self) -> dict[str | None, int]:
        """See `Journal.tag_counts`: one aggregate query, whatever the number of streams (the
        daemon's gauges ask every second; building every head was O(all flows ever))."""
        with self._reading() as conn:
            rows = conn.execute("SELECT tag, COUNT(*) FROM streams GROUP BY tag").fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def head(self, stream_id: str) -> StreamHead | None:
        """See `Journal.head`."""
        with self._reading() as conn:
            return _fetch_head(conn, stream_id)

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection; waits for a write in progress. Idempotent."""
        with self._pool_lock:
            if self._closed:
                return
            self._closed = True
            idle, self._idle_readers = self._idle_readers, []
        for conn in idle:
            conn.close()
        with self._write_lock:
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

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A pooled reader inside one read transaction, so multi-query reads are consistent."""
        conn = self._take_reader()
        try:
            with storage_errors(), read_transaction(conn):
                yield conn
        finally:
            self._return_reader(conn)

    def _take_reader(self) -> sqlite3.Connection:
        with self._pool_lock:
            if self._closed:
                raise Internal("the journal is closed")
            if self._idle_readers:
                return self._idle_readers.pop()
        with storage_errors():
            conn = connect(self._path, busy_timeout=self._busy_timeout)
            conn.execute("PRAGMA query_only = ON")
        return conn

    def _return_reader(self, conn: sqlite3.Connection) -> None:
        with self._pool_lock:
            if not self._closed:
                self._idle_readers.append(conn)
                return
        conn.close()


# --- the write path ----------------------------------------------------------------------------


def _apply_isolated(
    conn: sqlite3.Connection, request: AppendRequest, rows: _EncodedEvents
) -> int | PayflowError:
    """Apply one request under its own savepoint, so its failure leaves the batch untouched."""
    conn.execute("SAVEPOINT request")
    try:
        version = _apply(conn, request, rows)
    except PayflowError as error:
        conn.execute("ROLLBACK TO request")
        conn.execute("RELEASE request")
        return error
    conn.execute("RELEASE request")
    return version


def _apply(conn: sqlite3.Connection, request: AppendRequest, rows: _EncodedEvents) -> int:
    current = _stream_version(conn, request.stream_id)
    if current != request.expected_version:
        raise VersionConflict(
            f"stream {request.stream_id!r} is at version {current}, "
            f"expected {request.expected_version}",
            expected=request.expected_version,
            actual=current,
        )
    _bind_aliases(conn, request)
    versioned = [
        (request.stream_id, current + offset, kind, payload, at)
        for offset, (kind, payload, at) in enumerate(rows, start=1)
    ]
    try:
        conn.executemany(_INSERT_EVENT, versioned)
    except sqlite3.IntegrityError as error:
        raise VersionConflict(
            f"stream {request.stream_id!r} moved during the append",
            expected=request.expected_version,
        ) from error
    new_version = current + len(rows)
    conn.execute(_UPSERT_STREAM, (request.stream_id, new_version, request.tag, rows[-1][2]))
    if request.snapshot is not None:
        snapshot = (request.stream_id, new_version, _encode(request.snapshot))
        conn.execute(_UPSERT_SNAPSHOT, snapshot)
    return new_version


def _bind_aliases(conn: sqlite3.Connection, request: AppendRequest) -> None:
    for alias in request.aliases:
        owner = _alias_owner(conn, alias.namespace, alias.name)
        if owner == request.stream_id:
            continue  # re-binding to the same stream: a retried append stays harmless
        # The message never names the owner: that would hand another flow's id to a client.
        taken = AliasConflict(f"{alias.namespace} {alias.name!r} is already bound elsewhere")
        if owner is not None:
            raise taken
        try:
            conn.execute(
                "INSERT INTO aliases (namespace, name, stream_id) VALUES (?, ?, ?)",
                (alias.namespace, alias.name, request.stream_id),
            )
        except sqlite3.IntegrityError as error:
            raise taken from error


def _encode_events(request: AppendRequest) -> _EncodedEvents | PayflowError:
    """Serialise outside the write lock; a bad payload fails its own request, not the batch."""
    try:
        return [(event.kind, _encode(event.payload), event.at) for event in request.events]
    except Internal as error:
        return error


def _encode(payload: Mapping[str, Any]) -> str:
    try:
        return _ENCODER.encode(dict(payload))
    except (TypeError, ValueError) as error:
        # json's messages name the offending type, never the value: safe for secrets.
        raise Internal(f"payload is not JSON-safe: {error}") from error


# --- queries ---------------------------------------------------------------------------------

_OWNERS_CACHED = 100_000  # bound aliases kept in memory (~200 B each)


def _stream_version(conn: sqlite3.Connection, stream_id: str) -> int:
    row = conn.execute("SELECT version FROM streams WHERE stream_id = ?", (stream_id,)).fetchone()
    return int(row[0]) if row is not None else 0


def _alias_owner(conn: sqlite3.Connection, namespace: str, name: str) -> str | None:
    row = conn.execute(
        "SELECT stream_id FROM aliases WHERE namespace = ? AND name = ?", (namespace, name)
    ).fetchone()
    return str(row[0]) if row is not None else None


def _fetch_head(conn: sqlite3.Connection, stream_id: str) -> StreamHead | None:
    row = conn.execute(_SELECT_HEAD + " WHERE stream_id = ?", (stream_id,)).fetchone()
    return _head_from_row(row) if row is not None else None


def _head_from_row(row: tuple[Any, ...]) -> StreamHead:
    stream_id, version, tag, updated_at = row
    return StreamHead(stream_id=stream_id, version=version, tag=tag, updated_at=updated_at)


def _fetch_snapshot(conn: sqlite3.Connection, stream_id: str) -> Snapshot | None:
    row = conn.execute(
        "SELECT version, payload FROM snapshots WHERE stream_id = ?", (stream_id,)
    ).fetchone()
    if row is None:
        return None
    return Snapshot(stream_id=stream_id, version=row[0], payload=json.loads(row[1]))


def _fetch_events(conn: sqlite3.Connection, stream_id: str, after: int) -> list[StoredEvent]:
    rows = conn.execute(_SELECT_EVENTS, (stream_id, after))
    return [
        StoredEvent(stream_id=sid, version=version, kind=kind, payload=json.loads(text), at=at)
        for sid, version, kind, text, at in rows
    ]
