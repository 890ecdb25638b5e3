"""The SQLite journal's write path: a batch of appends decided in memory, then written at once.

`runtime.sqlite_journal` owns the connections, the write lock and the transaction; this module
owns what happens inside it. Payloads are serialised before the lock is taken (`encode_request`).
Then the whole batch is checked against state read in two queries (`stream_versions`,
`alias_owners`) and every accepted row goes out with one statement per table (`Batch.write`).
A refused request writes nothing, so the batch needs no savepoint per request (profiled: the
statements run per request were most of the group-commit thread). Only when the stored rows
disagree with what the checks read (a file written by other means) does each request run alone
in a savepoint (`apply_alone`), so that only the culprit fails.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime.errors import AliasConflict, Internal, PayflowError, VersionConflict
from runtime.journal import AppendRequest
from runtime.sqlite_store import (
    INSERT_ALIAS,
    INSERT_EVENT,
    SELECT_OWNER,
    SELECT_OWNERS,
    SELECT_VERSION,
    SELECT_VERSIONS,
    UPSERT_SNAPSHOT,
    UPSERT_STREAM,
)

Encoded = tuple[list[tuple[str, str, float]], str | None]  # (kind, payload, at) rows, snapshot
Binding = tuple[tuple[str, str], str]  # (namespace, name) -> stream id

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


def encode_request(request: AppendRequest) -> Encoded | PayflowError:
    """Serialise outside the write lock; a bad payload fails its own request, not the batch."""
    try:
        rows = [(event.kind, encode(event.payload), event.at) for event in request.events]
        snapshot = None if request.snapshot is None else encode(request.snapshot)
    except Internal as error:
        return error
    return rows, snapshot


def encode(payload: Mapping[str, Any]) -> str:
    """`payload` as compact JSON; `Internal` if it is not JSON-safe."""
    as_dict = payload if type(payload) is dict else dict(payload)
    try:
        if _ENCODE_CHUNKS is None:  # an interpreter without the C accelerator
            return _ENCODER.encode(as_dict)
        return "".join(_ENCODE_CHUNKS(as_dict, 0))
    except (TypeError, ValueError, RecursionError) as error:
        # json's messages name the offending type, never the value: safe for secrets.
        raise Internal(f"payload is not JSON-safe: {error}") from error


def apply_all(
    conn: sqlite3.Connection,
    requests: Sequence[AppendRequest],
    encoded: Sequence[Encoded | PayflowError],
    known_owners: Mapping[tuple[str, str], str],
) -> tuple[list[int | PayflowError], list[Binding]]:
    """Check every request in memory against state read in two queries, then write all the
    accepted rows with one statement per table. Also returns the names the admitted requests
    bind, to remember once committed. `known_owners`: bindings known to be committed."""
    admitted = [
        r for r, e in zip(requests, encoded, strict=True) if not isinstance(e, PayflowError)
    ]
    batch = Batch(
        versions=stream_versions(conn, admitted),
        owners=alias_owners(conn, admitted, known_owners),
    )
    results = [
        rows if isinstance(rows, PayflowError) else batch.admit(request, rows)
        for request, rows in zip(requests, encoded, strict=True)
    ]
    batch.write(conn)
    return results, batch.bound


def apply_alone(
    conn: sqlite3.Connection,
    request: AppendRequest,
    encoded: Encoded | PayflowError,
    known_owners: Mapping[tuple[str, str], str],
) -> tuple[int | PayflowError, list[Binding]]:
    """`apply_all` for one request in its own savepoint: a row the stored file refuses fails
    this request only."""
    if isinstance(encoded, PayflowError):
        return encoded, []
    conn.execute("SAVEPOINT request")
    try:
        (result,), bound = apply_all(conn, [request], [encoded], known_owners)
    except sqlite3.IntegrityError as error:
        conn.execute("ROLLBACK TO request")
        result, bound = Internal(f"the stored journal refused the append: {error}"), []
    conn.execute("RELEASE request")
    return result, bound


def alias_owners(
    conn: sqlite3.Connection,
    requests: Sequence[AppendRequest],
    known_owners: Mapping[tuple[str, str], str],
) -> dict[tuple[str, str], str]:
    """Owners of every name the batch binds: from `known_owners` when there (a binding never
    changes), the others in ONE query. Names found unbound are absent."""
    owners: dict[tuple[str, str], str] = {}
    unknown: list[tuple[str, str]] = []
    for key in {(a.namespace, a.name) for request in requests for a in request.aliases}:
        owner = known_owners.get(key)
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


def stream_versions(conn: sqlite3.Connection, requests: Sequence[AppendRequest]) -> dict[str, int]:
    """The stored version of every stream the batch appends to (absent: a new stream), in ONE
    query: the writer holds the write lock, so nothing moves them until the commit."""
    streams = {request.stream_id for request in requests}
    versions: dict[str, int] = {}
    for stream_id in [s for s in streams if "\x00" in s]:  # see alias_owners
        streams.discard(stream_id)
        versions.update(conn.execute(SELECT_VERSION, (stream_id,)).fetchall())
    if streams:
        versions.update(conn.execute(SELECT_VERSIONS, (json.dumps(list(streams)),)).fetchall())
    return versions


@dataclass(slots=True)
class Batch:
    """A batch being decided in memory: each admitted request moves `versions` and `owners`
    (so a later request sees it) and queues its rows; `write` stores them all at the end."""

    versions: dict[str, int]
    owners: dict[tuple[str, str], str]
    aliases: list[tuple[str, str, str]] = field(default_factory=list)
    events: list[tuple[str, int, str, str, float]] = field(default_factory=list)
    streams: list[tuple[str, int, str | None, float]] = field(default_factory=list)
    snapshots: list[tuple[str, int, str]] = field(default_factory=list)
    bound: list[Binding] = field(default_factory=list)  # every name an admitted request binds

    def admit(self, request: AppendRequest, encoded: Encoded) -> int | PayflowError:
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
