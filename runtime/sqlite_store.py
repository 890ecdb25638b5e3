"""SQLite plumbing under the journal: schema, durable connections, transactions, error mapping.

Kept apart from `runtime.sqlite_journal` so that module reads as journal semantics only.
See `runtime.sqlite_journal` for why the durability setting is `synchronous=FULL`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

from runtime.errors import Internal, Overloaded

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
def read_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read snapshot across several queries (WAL readers never block the writer)."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


@contextmanager
def storage_errors() -> Iterator[None]:
    """Translate sqlite3 errors at the boundary into the caller's vocabulary (retry or not)."""
    try:
        yield
    except sqlite3.OperationalError as error:
        if is_busy(error):
            raise Overloaded("the journal stayed busy past its timeout; retry later") from error
        raise Internal(f"journal storage failed: {error}") from error
    except sqlite3.Error as error:
        raise Internal(f"journal storage failed: {error}") from error
