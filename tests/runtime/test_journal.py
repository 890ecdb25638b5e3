"""The SQLite journal on real files: round trips, conflicts writing nothing, batches, snapshots."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from runtime.errors import AliasConflict, Internal, VersionConflict
from runtime.journal import (
    IDEMPOTENCY_NAMESPACE,
    Alias,
    AppendRequest,
    Journal,
    NewEvent,
    Snapshot,
)
from runtime.sqlite_journal import SQLiteJournal


def ev(kind: str, n: int = 0, at: float = 1000.0) -> NewEvent:
    return NewEvent(kind=kind, payload={"n": n, "nested": {"list": [1, "two", None]}}, at=at)


def req(
    stream: str,
    expected: int,
    *kinds: str,
    aliases: tuple[Alias, ...] = (),
    tag: str | None = None,
) -> AppendRequest:
    events = [ev(kind, n, at=1000.0 + n) for n, kind in enumerate(kinds or ("e",))]
    return AppendRequest(
        stream_id=stream, expected_version=expected, events=events, aliases=aliases, tag=tag
    )


def snapshot_of_tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, read with plain sqlite3 (not through the code under test)."""
    conn = sqlite3.connect(path)
    try:
        tables = ("events", "streams", "aliases", "snapshots", "meta")
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}
    finally:
        conn.close()


def test_sqlite_journal_satisfies_the_protocol(journal: SQLiteJournal) -> None:
    as_protocol: Journal = journal
    assert as_protocol.head("nothing") is None


def test_append_then_load_events_resolve_and_heads_round_trip(journal: SQLiteJournal) -> None:
    flow = Alias(name="flow-1")
    assert journal.append(req("flow-1", 0, "created", "priced", aliases=(flow,), tag="A")) == 2
    assert journal.append(req("flow-1", 2, "paid", tag="B")) == 3

    loaded = journal.load("flow-1")
    assert loaded is not None
    assert (loaded.version, loaded.snapshot) == (3, None)
    assert [(e.version, e.kind) for e in loaded.events] == [
        (1, "created"),
        (2, "priced"),
        (3, "paid"),
    ]
    assert loaded.events[0].payload == {"n": 0, "nested": {"list": [1, "two", None]}}
    assert [e.version for e in journal.events("flow-1", after_version=1)] == [2, 3]
    assert journal.resolve("flow-1") == "flow-1"
    head = journal.head("flow-1")
    assert head is not None
    assert (head.version, head.tag, head.updated_at) == (3, "B", 1000.0)
    assert [h.stream_id for h in journal.heads()] == ["flow-1"]


def test_unknown_stream_and_name_read_as_absent(journal: SQLiteJournal) -> None:
    assert journal.load("ghost") is None
    assert journal.events("ghost") == []
    assert journal.resolve("ghost") is None
    assert journal.heads() == []


def test_data_survives_close_and_reopen(db: Path) -> None:
    with SQLiteJournal(db) as first:
        first.append(req("s", 0, "a", "b", aliases=(Alias(name="pre-1"),), tag="T"))
    with SQLiteJournal(db) as second:
        loaded = second.load("s")
        assert loaded is not None
        assert [e.kind for e in loaded.events] == ["a", "b"]
        assert second.resolve("pre-1") == "s"


def test_append_without_tag_keeps_the_stream_tag(journal: SQLiteJournal) -> None:
    journal.append(req("s", 0, tag="PRE_BOOKING"))
    journal.append(req("s", 1))
    head = journal.head("s")
    assert head is not None
    assert head.tag == "PRE_BOOKING"


def test_heads_filter_by_tag(journal: SQLiteJournal) -> None:
    for stream, tag in (("a", "ACTIVE"), ("b", "DONE"), ("c", "ACTIVE"), ("d", "NEW")):
        journal.append(req(stream, 0, tag=tag))
    assert {h.stream_id for h in journal.heads(tags={"ACTIVE", "NEW"})} == {"a", "c", "d"}
    assert journal.heads(tags=()) == []


def test_heads_filter_by_the_time_of_the_latest_event(journal: SQLiteJournal) -> None:
    journal.append(req("old", 0, "e", tag="DONE"))  # its event at 1000
    journal.append(req("new", 0, "e", "e", "e", tag="DONE"))  # the last at 1002
    journal.append(req("other", 0, "e", "e", "e", tag="ACTIVE"))
    assert {h.stream_id for h in journal.heads(updated_since=1001.0)} == {"new", "other"}
    assert [h.stream_id for h in journal.heads(tags={"DONE"}, updated_since=1001.0)] == ["new"]
    assert {h.stream_id for h in journal.heads(tags={"DONE"})} == {"old", "new"}


@pytest.mark.parametrize("expected", [0, 1, 5])
def test_version_conflict_writes_nothing(journal: SQLiteJournal, db: Path, expected: int) -> None:
    journal.append(req("s", 0, "a", "b"))
    before = snapshot_of_tables(db)
    with pytest.raises(VersionConflict) as caught:
        journal.append(req("s", expected, "c", aliases=(Alias(name="new-name"),), tag="X"))
    assert (caught.value.expected, caught.value.actual) == (expected, 2)
    assert snapshot_of_tables(db) == before
    assert journal.resolve("new-name") is None


def test_alias_conflict_writes_nothing_not_even_the_events(
    journal: SQLiteJournal, db: Path
) -> None:
    journal.append(req("owner", 0, aliases=(Alias(name="bk-1"),)))
    before = snapshot_of_tables(db)
    fresh, taken = Alias(name="pre-9"), Alias(name="bk-1")
    with pytest.raises(AliasConflict) as caught:
        journal.append(req("other", 0, "created", aliases=(fresh, taken), tag="X"))
    assert caught.value.code == "conflict"
    assert "owner" not in str(caught.value)  # never tells a client another flow's id
    assert snapshot_of_tables(db) == before
    assert journal.head("other") is None
    assert journal.resolve("pre-9") is None


def test_rebinding_a_name_to_the_same_stream_is_a_no_op(journal: SQLiteJournal) -> None:
    name = Alias(name="bk-1")
    journal.append(req("s", 0, aliases=(name,)))
    assert journal.append(req("s", 1, aliases=(name, name))) == 2
    assert journal.resolve("bk-1") == "s"


def test_namespaces_are_separate(journal: SQLiteJournal) -> None:
    journal.append(req("a", 0, aliases=(Alias(name="k"),)))
    journal.append(req("b", 0, aliases=(Alias(name="k", namespace=IDEMPOTENCY_NAMESPACE),)))
    assert journal.resolve("k") == "a"
    assert journal.resolve("k", IDEMPOTENCY_NAMESPACE) == "b"


def test_stream_id_is_not_an_alias_by_itself(journal: SQLiteJournal) -> None:
    journal.append(req("flow-7", 0))
    assert journal.resolve("flow-7") is None


def test_batch_with_one_conflict_commits_the_others(journal: SQLiteJournal, db: Path) -> None:
    journal.append(req("busy", 0, aliases=(Alias(name="taken"),)))
    results = journal.append_batch(
        [
            req("a", 0, "a1"),
            req("busy", 0, "stale"),  # version conflict
            req("b", 0, "b1", aliases=(Alias(name="taken"),)),  # alias conflict
            req("a", 1, "a2"),  # sees the earlier request of the same batch
            req("c", 0, "c1", aliases=(Alias(name="c-name"),)),
        ]
    )
    assert results[0] == 1
    assert isinstance(results[1], VersionConflict)
    assert isinstance(results[2], AliasConflict)
    assert results[3:] == [2, 1]
    assert [e.kind for e in journal.events("a")] == ["a1", "a2"]
    assert [e.kind for e in journal.events("busy")] == ["e"]
    assert journal.head("b") is None
    assert journal.resolve("c-name") == "c"


def test_an_empty_batch_is_a_no_op(journal: SQLiteJournal) -> None:
    assert journal.append_batch([]) == []
    assert journal.heads() == []


def test_unserialisable_payload_fails_its_request_only(journal: SQLiteJournal) -> None:
    bad = AppendRequest(
        stream_id="bad",
        expected_version=0,
        events=[NewEvent(kind="x", payload={"o": object()}, at=1)],
    )
    results = journal.append_batch([bad, req("good", 0)])
    assert isinstance(results[0], Internal)
    assert results[1] == 1
    assert journal.head("bad") is None
    with pytest.raises(Internal):
        journal.append(bad)


def test_append_request_refuses_no_events_and_negative_versions() -> None:
    with pytest.raises(Internal):
        AppendRequest(stream_id="s", expected_version=0, events=[])
    with pytest.raises(Internal):
        AppendRequest(stream_id="s", expected_version=-1, events=[ev("e")])


def test_load_returns_the_latest_snapshot_and_only_later_events(journal: SQLiteJournal) -> None:
    journal.append(req("s", 0, "a", "b"))
    journal.save_snapshot(Snapshot(stream_id="s", version=2, payload={"state": "two"}))
    journal.append(req("s", 2, "c", "d"))
    loaded = journal.load("s")
    assert loaded is not None
    assert loaded.snapshot == Snapshot(stream_id="s", version=2, payload={"state": "two"})
    assert [e.version for e in loaded.events] == [3, 4]
    assert loaded.version == 4
    assert [e.version for e in journal.events("s")] == [1, 2, 3, 4]  # history keeps everything


def test_an_older_snapshot_never_replaces_a_newer_one(journal: SQLiteJournal) -> None:
    journal.append(req("s", 0, "a", "b", "c"))
    journal.save_snapshot(Snapshot(stream_id="s", version=3, payload={"v": 3}))
    journal.save_snapshot(Snapshot(stream_id="s", version=1, payload={"v": 1}))
    loaded = journal.load("s")
    assert loaded is not None
    assert loaded.snapshot is not None
    assert loaded.snapshot.version == 3
    assert loaded.events == []


def test_a_snapshot_riding_on_an_append_is_saved_with_it_or_not_at_all(
    journal: SQLiteJournal,
) -> None:
    journal.append(req("s", 0, "a"))
    ride = AppendRequest(stream_id="s", expected_version=1, events=[ev("b"), ev("c")])
    version = journal.append(dataclasses.replace(ride, snapshot={"state": "three"}))
    loaded = journal.load("s")
    assert loaded is not None
    assert loaded.snapshot == Snapshot(stream_id="s", version=version, payload={"state": "three"})
    assert (version, loaded.events) == (3, [])
    stale = dataclasses.replace(ride, snapshot={"state": "never"})  # expects version 1: refused
    (refused,) = journal.append_batch([stale])
    assert isinstance(refused, VersionConflict)
    again = journal.load("s")
    assert again is not None
    assert again.snapshot is not None
    assert again.snapshot.payload == {"state": "three"}


def test_a_snapshot_ahead_of_the_stream_is_refused(journal: SQLiteJournal) -> None:
    journal.append(req("s", 0))
    with pytest.raises(VersionConflict):
        journal.save_snapshot(Snapshot(stream_id="s", version=2, payload={}))
    with pytest.raises(VersionConflict):
        journal.save_snapshot(Snapshot(stream_id="ghost", version=1, payload={}))
    loaded = journal.load("s")
    assert loaded is not None
    assert loaded.snapshot is None


def test_meta_creates_once_and_persists(db: Path) -> None:
    calls: list[int] = []

    def make_secret() -> str:
        calls.append(1)
        return f"secret-{len(calls)}"

    with SQLiteJournal(db) as first:
        assert first.meta("install_secret", make_secret) == "secret-1"
        assert first.meta("install_secret", make_secret) == "secret-1"
    with SQLiteJournal(db) as second:
        assert second.meta("install_secret", make_secret) == "secret-1"
    assert len(calls) == 1


def test_meta_gives_every_racing_writer_the_same_value(db: Path) -> None:
    journals = [SQLiteJournal(db) for _ in range(6)]
    gate = threading.Barrier(len(journals))

    def racer(index: int) -> str:
        gate.wait(timeout=10)
        return journals[index].meta("install_secret", lambda: f"secret-{index}")

    try:
        with ThreadPoolExecutor(len(journals)) as pool:
            values = list(pool.map(racer, range(len(journals))))
    finally:
        for journal in journals:
            journal.close()
    assert len(set(values)) == 1
    assert values[0].startswith("secret-")


def test_file_is_private_whatever_the_umask(db: Path) -> None:
    previous = os.umask(0o000)  # the most permissive umask: only the journal can make it 0600
    try:
        with SQLiteJournal(db) as journal:
            journal.append(req("s", 0))
            for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        os.umask(previous)


def test_journal_runs_in_wal_with_full_sync(journal: SQLiteJournal, db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()
    assert journal._writer.execute("PRAGMA synchronous").fetchone() == (2,)  # 2 = FULL


def test_closed_journal_refuses_work(db: Path) -> None:
    journal = SQLiteJournal(db)
    journal.close()
    journal.close()  # idempotent
    with pytest.raises(Internal):
        journal.append(req("s", 0))
    with pytest.raises(Internal):
        journal.load("s")


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(Internal):
        SQLiteJournal(path)


def test_a_name_resolved_as_unknown_is_found_once_another_process_binds_it(
    journal: SQLiteJournal, db: Path
) -> None:
    """resolve caches bound names; a miss must never be cached, whoever binds the name later."""
    assert journal.resolve("bk-late") is None
    with SQLiteJournal(db) as other:  # another writer on the same file, as a second process
        other.append(req("s", 0, aliases=(Alias(name="bk-late"),)))
    assert journal.resolve("bk-late") == "s"
    assert journal.resolve("bk-late") == "s"  # now from memory: the same answer
    assert journal.resolve("bk-late", IDEMPOTENCY_NAMESPACE) is None


def test_resolve_known_answers_from_memory_only(journal: SQLiteJournal, db: Path) -> None:
    """What the event loop may ask without I/O: names this journal bound or read, nothing else."""
    journal.append(req("mine", 0, aliases=(Alias(name="pi_1", namespace="intent"),)))
    assert journal.resolve_known("pi_1", "intent") == "mine"
    assert journal.resolve_known("pi_1") is None  # another namespace
    with SQLiteJournal(db) as other:  # bound by a second process: unknown here until read
        other.append(req("theirs", 0, aliases=(Alias(name="pi_2", namespace="intent"),)))
    assert journal.resolve_known("pi_2", "intent") is None
    assert journal.resolve("pi_2", "intent") == "theirs"
    assert journal.resolve_known("pi_2", "intent") == "theirs"


def test_tag_counts_count_streams_by_their_latest_tag(journal: SQLiteJournal) -> None:
    assert journal.tag_counts() == {}
    journal.append(req("a", 0, tag="OPEN"))
    journal.append(req("b", 0, tag="OPEN"))
    journal.append(req("a", 1, tag="DONE"))
    journal.append(req("c", 0))
    assert journal.tag_counts() == {"OPEN": 1, "DONE": 1, None: 1}
