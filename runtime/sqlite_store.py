"""SQLite plumbing under the journal: schema, durable connections, transactions, error mapping.

Kept apart from `runtime.sqlite_journal` so that module reads as journal semantics only.
See `runtime.sqlite_journal` for why the durability setting is `synchronous=FULL`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from runtime.errors import Internal, Overloaded, PayflowError

SCHEMA_VERSION = 1

# WITHOUT ROWID: every table is looked up by its primary key only, so storing rows inside the key
# b-tree saves a second b-tree to search on each read and to write on each commit.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        stream_id TEXT NOT NULL, version INTEGER NOT NULL CHECK (version >= 1),
        kind TEXT NOT NULL, payload TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (stream_id, version)) WITHOUT ROWID""",
    # No index on `tag`: SQLite rewrites an index entry whenever an UPDATE sets its column, which
    # costs every commit one more page to write and fsync (measured: 3.7 -> 2.7 WAL frames per
    # append), while filtering by tag (ps, recovery at start) scans a few thousand heads at most.
    """CREATE TABLE IF NOT EXISTS streams (
        stream_id TEXT NOT NULL PRIMARY KEY, version INTEGER NOT NULL,
        tag TEXT, updated_at REAL NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS aliases (
        namespace TEXT NOT NULL, name TEXT NOT NULL, stream_id TEXT NOT NULL,
        PRIMARY KEY (namespace, name)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS snapshots (
        stream_id TEXT NOT NULL PRIMARY KEY, version INTEGER NOT NULL,
        payload TEXT NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID""",
)


# --- statements (each kept in the connections' statement caches: one text per purpose) ---------

INSERT_ALIAS = "INSERT INTO aliases (namespace, name, stream_id) VALUES (?, ?, ?)"
INSERT_EVENT = "INSERT INTO events (stream_id, version, kind, payload, at) VALUES (?, ?, ?, ?, ?)"
# A request without a tag keeps the stream's current one (COALESCE), so only the writer that
# knows the state has to say it.
UPSERT_STREAM = """INSERT INTO streams (stream_id, version, tag, updated_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version,
    tag = COALESCE(excluded.tag, streams.tag), updated_at = excluded.updated_at"""
# An older snapshot saved late (a slow actor) must never replace a newer one.
UPSERT_SNAPSHOT = """INSERT INTO snapshots (stream_id, version, payload) VALUES (?, ?, ?)
    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, payload = excluded.payload
    WHERE excluded.version >= snapshots.version"""
SELECT_HEAD = "SELECT stream_id, version, tag, updated_at FROM streams"
SELECT_EVENTS = """SELECT version, kind, payload, at FROM events
    WHERE stream_id = ? AND version > ? AND version <= ? ORDER BY version"""
SELECT_LOAD_HEAD = """SELECT s.version, n.version, n.payload FROM streams AS s
    LEFT JOIN snapshots AS n ON n.stream_id = s.stream_id WHERE s.stream_id = ?"""
SELECT_VERSION = "SELECT stream_id, version FROM streams WHERE stream_id = ?"
SELECT_OWNER = "SELECT stream_id FROM aliases WHERE namespace = ? AND name = ?"
# Many keys as ONE parameter (a JSON array) keeps a single cached statement for every batch size.
SELECT_VERSIONS = (
    "SELECT stream_id, version FROM streams WHERE stream_id IN (SELECT value FROM json_each(?))"
)
SELECT_OWNERS = """SELECT namespace, name, stream_id FROM aliases WHERE (namespace, name) IN
    (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))"""


def create_private_file(path: str) -> None:
    """Create the database file as 0600 before SQLite does (SQLite would honour only the umask).

    SQLite creates the -wal and -shm files with the mode of the database file. A file that
    already exists keeps its mode: the operator may have chosen it.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    # SQLite fsyncs the directory when it creates the WAL, but not for a main file it did not
    # create: without this, a power loss could drop the file's name while its WAL survives.
    _fsync_directory(os.path.dirname(os.path.abspath(path)))


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def connect(path: str, *, busy_timeout: float) -> sqlite3.Connection:
    """A connection with the journal's durability: every commit fsyncs the WAL."""
    # isolation_level=None: the sqlite3 module must not open transactions behind our back; each
    # transaction here is an explicit BEGIN. `timeout` is SQLite's busy timeout, which also
    # makes writers in other processes wait for the write lock instead of failing at once.
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class ReaderPool:
    """Read-only connections shared by every thread. In WAL mode readers never wait for the
    writer's fsync (benchmarks/journal_bench.py measures reads under write load both ways)."""

    def __init__(self, path: str, *, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    def read(self, query: str, parameters: Sequence[object]) -> list[Any]:
        """Every row of ONE query. In WAL mode a single statement outside BEGIN reads one
        consistent snapshot; the BEGIN/ROLLBACK around each read it replaced cost two statements
        and a context manager per read (profiled under load: ~5% of the daemon's CPU)."""
        conn = self._take()
        try:
            return conn.execute(query, parameters).fetchall()
        except sqlite3.Error as error:
            raise storage_error(error) from error
        finally:
            self._give_back(conn)

    def close(self) -> None:
        """Close the idle connections now, the busy ones as they come back. Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise Internal("the journal is closed")
            if self._idle:
                return self._idle.pop()
        with storage_errors():
            conn = connect(self._path, busy_timeout=self._busy_timeout)
            conn.execute("PRAGMA query_only = ON")
        return conn

    def _give_back(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()


def prepare_schema(conn: sqlite3.Connection, *, busy_timeout: float) -> None:
    """Switch the file to WAL and create the tables; safe when several processes race to do it."""
    mode = _switch_to_wal(conn, busy_timeout)
    if mode != "wal":
        raise Internal(f"the journal needs WAL mode; this file system gave {mode!r}")
    with immediate_transaction(conn):
        (found,) = conn.execute("PRAGMA user_version").fetchone()
        _refuse_newer_schema(found)
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> str:
    """`PRAGMA journal_mode = WAL`, retried while another process holds the file.

    Leaving rollback mode needs an exclusive lock, and SQLite answers BUSY at once instead of
    calling its busy handler (waiting could deadlock two converters), so processes opening a new
    file together would fail. There is no notification to wait on: poll with a deadline.
    """
    deadline = time.monotonic() + busy_timeout
    pause = 0.001
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        else:
            return str(mode)


def is_busy(error: sqlite3.Error) -> bool:
    """True for "the file is locked by someone else": retrying later may succeed."""
    return error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _refuse_newer_schema(found: int) -> None:
    if found > SCHEMA_VERSION:
        raise Internal(f"journal schema {found} is newer than this payflowd ({SCHEMA_VERSION})")


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE (take the write lock now, so reads inside see the latest commit), then
    COMMIT, or ROLLBACK if the body raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def storage_errors() -> Iterator[None]:
    """Translate sqlite3 errors at the boundary into the caller's vocabulary (retry or not)."""
    try:
        yield
    except sqlite3.Error as error:
        raise storage_error(error) from error


def storage_error(error: sqlite3.Error) -> PayflowError:
    """`Overloaded` if the file stayed locked past the busy timeout (retry later), else
    `Internal`. The hot paths call this from a plain `except` rather than `storage_errors()`."""
    if isinstance(error, sqlite3.OperationalError) and is_busy(error):
        return Overloaded("the journal stayed busy past its timeout; retry later")
    return Internal(f"journal storage failed: {error}")
