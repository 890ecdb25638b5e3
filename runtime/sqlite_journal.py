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
A batch is decided in memory from two queries, then written with one statement per table
(`runtime.journal_batch`, which runs inside the transaction this module opens).
Reads run one statement each on a pool of reader connections (`sqlite_store.ReaderPool`).

The file is created with mode 0600 before SQLite opens it (it holds per-flow secrets); SQLite
gives its -wal and -shm files the same mode.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

from runtime.errors import Internal, PayflowError, VersionConflict
from runtime.journal import (
    ID_NAMESPACE,
    AppendRequest,
    LoadedStream,
    Snapshot,
    StoredEvent,
    StreamHead,
)
from runtime.journal_batch import Binding, apply_all, apply_alone, encode, encode_request
from runtime.sqlite_store import (
    SELECT_EVENTS,
    SELECT_HEAD,
    SELECT_LOAD_HEAD,
    SELECT_OWNER,
    SELECT_VERSION,
    UPSERT_SNAPSHOT,
    ReaderPool,
    connect,
    create_private_file,
    immediate_transaction,
    prepare_schema,
    storage_errors,
)

DEFAULT_BUSY_TIMEOUT = 5.0


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
        encoded = [encode_request(request) for request in requests]
        with self._writing() as conn:
            try:
                results, bound = apply_all(conn, requests, encoded, self._owners)
            except sqlite3.IntegrityError:
                # The stored rows disagree with what the checks read (a file written by other
                # means): start over, one request per savepoint, so only the culprit fails.
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                alone = [
                    apply_alone(conn, request, rows, self._owners)
                    for request, rows in zip(requests, encoded, strict=True)
                ]
                results = [result for result, _ in alone]
                bound = [binding for _, bindings in alone for binding in bindings]
        # Committed (the transaction above did not raise): the names are bound for good.
        if bound:
            self._remember(*bound)
        return results

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """See `Journal.save_snapshot`: refuses a snapshot ahead of the stored stream."""
        payload = encode(snapshot.payload)
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

    def _remember(self, *bound: Binding) -> None:
        """Keep (namespace, name) -> stream bindings known to be committed, oldest out first."""
        with self._owners_lock:
            for key, owner in bound:
                if len(self._owners) >= _OWNERS_CACHED:
                    del self._owners[next(iter(self._owners))]  # the oldest entry
                self._owners[key] = owner

    def heads(
        self, *, tags: Collection[str] | None = None, updated_since: float | None = None
    ) -> list[StreamHead]:
        """See `Journal.heads`: ordered by last update, then stream id."""
        # json_each binds any number of tags as ONE parameter: no SQL built from input. A
        # missing filter binds NULL, which the IS NULL test lets through.
        where = (
            " WHERE (?1 IS NULL OR tag IN (SELECT value FROM json_each(?1)))"
            " AND (?2 IS NULL OR updated_at >= ?2)"
        )
        tag_list = None if tags is None else json.dumps(list(tags))
        order = " ORDER BY updated_at, stream_id"
        rows = self._readers.read(SELECT_HEAD + where + order, (tag_list, updated_since))
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


# --- read helpers --------------------------------------------------------------------------------

_OWNERS_CACHED = 100_000  # bound aliases kept in memory (~200 B each)
_NO_LIMIT = 2**63 - 1  # the largest SQLite integer: "every later event"


def _head_from_row(row: tuple[Any, ...]) -> StreamHead:
    stream_id, version, tag, updated_at = row
    return StreamHead(stream_id=stream_id, version=version, tag=tag, updated_at=updated_at)
