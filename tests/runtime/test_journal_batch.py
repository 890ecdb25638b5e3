"""How a batch is decided in memory and written in one statement per table: every request is
still checked on its own, in order, and a refused one leaves no trace (see test_journal.py for
the single-append guarantees)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import AliasConflict, Internal, VersionConflict
from runtime.journal import IDEMPOTENCY_NAMESPACE, Alias, AppendRequest, NewEvent
from runtime.sqlite_journal import SQLiteJournal
from tests.runtime.test_journal import req, snapshot_of_tables


def test_a_refused_request_does_not_move_its_stream_for_the_next_one(
    journal: SQLiteJournal,
) -> None:
    results = journal.append_batch([req("a", 0, "a1"), req("a", 0, "again"), req("a", 1, "a2")])
    assert results[0] == 1
    assert isinstance(results[1], VersionConflict)
    assert results[1].actual == 1
    assert results[2] == 2
    assert [e.kind for e in journal.events("a")] == ["a1", "a2"]


def test_a_name_bound_earlier_in_the_batch_refuses_another_stream(journal: SQLiteJournal) -> None:
    first = req("a", 0, aliases=(Alias(name="bk"),))
    # The second request's first name is free: it must not be bound when its second one fails.
    second = req("b", 0, aliases=(Alias(name="pre-b"), Alias(name="bk")))
    third = req("c", 0, aliases=(Alias(name="pre-b"),))
    results = journal.append_batch([first, second, third])
    assert results[0] == 1
    assert isinstance(results[1], AliasConflict)
    assert results[2] == 1
    assert journal.resolve("bk") == "a"
    assert journal.resolve("pre-b") == "c"
    assert journal.head("b") is None


def test_a_request_refused_in_the_batch_does_not_bind_its_names(journal: SQLiteJournal) -> None:
    stale = req("a", 5, aliases=(Alias(name="n"),))  # version conflict: its name stays free
    results = journal.append_batch([stale, req("b", 0, aliases=(Alias(name="n"),))])
    assert isinstance(results[0], VersionConflict)
    assert results[1] == 1
    assert journal.resolve("n") == "b"


@pytest.mark.parametrize(
    "name",
    ['quote"s', "nul\x00inside", "\x00", "ctrl\x01\x1f", '["id", "x"]', "émoji 🎟", " ", "\\u0041"],
)
def test_any_name_is_checked_exactly(db: Path, name: str) -> None:
    """Names reach the batch check as JSON: whatever they contain, a taken one is refused."""
    with SQLiteJournal(db) as journal:
        journal.append(req("owner", 0, aliases=(Alias(name=name),)))
    with SQLiteJournal(db) as fresh:  # nothing in memory: the check must read the file
        results = fresh.append_batch(
            [req("thief", 0, aliases=(Alias(name=name),)), req("other", 0)]
        )
        assert isinstance(results[0], AliasConflict)
        assert results[1] == 1
        assert fresh.resolve(name) == "owner"
        assert fresh.head("thief") is None


@pytest.mark.parametrize("stream", ["nul\x00inside", "ctrl\x01", 'q"uote'])
def test_any_stream_id_keeps_its_version(db: Path, stream: str) -> None:
    with SQLiteJournal(db) as journal:
        journal.append(req(stream, 0))
    with SQLiteJournal(db) as fresh:
        results = fresh.append_batch([req(stream, 0), req(stream, 1), req("other", 0)])
        assert isinstance(results[0], VersionConflict)
        assert results[1:] == [2, 1]
        assert [e.version for e in fresh.events(stream)] == [1, 2]


def test_names_are_told_apart_by_namespace_within_a_batch(journal: SQLiteJournal) -> None:
    results = journal.append_batch(
        [
            req("a", 0, aliases=(Alias(name="k"),)),
            req("b", 0, aliases=(Alias(name="k", namespace=IDEMPOTENCY_NAMESPACE),)),
        ]
    )
    assert results == [1, 1]
    assert journal.resolve("k") == "a"
    assert journal.resolve("k", IDEMPOTENCY_NAMESPACE) == "b"


def test_an_unserialisable_snapshot_fails_its_request_only(journal: SQLiteJournal) -> None:
    bad = AppendRequest(
        stream_id="bad",
        expected_version=0,
        events=[NewEvent(kind="x", payload={}, at=1.0)],
        aliases=[Alias(name="bad-name")],
        snapshot={"o": object()},
    )
    results = journal.append_batch([bad, req("good", 0)])
    assert isinstance(results[0], Internal)
    assert results[1] == 1
    assert journal.head("bad") is None
    assert journal.resolve("bad-name") is None


def test_rows_written_by_other_means_fail_only_the_request_they_contradict(
    journal: SQLiteJournal, db: Path
) -> None:
    """An event stored past its stream's head (not something payflowd writes) trips the
    primary key; the batch is then redone request by request, so only that one fails."""
    journal.append(req("broken", 0))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO events VALUES ('broken', 2, 'stray', '{}', 1.0)")
    conn.close()
    results = journal.append_batch(
        [req("a", 0, aliases=(Alias(name="a-name"),)), req("broken", 1), req("a", 1)]
    )
    assert results[0] == 1
    assert isinstance(results[1], Internal)
    assert results[2] == 2
    assert journal.resolve("a-name") == "a"
    head = journal.head("broken")
    assert head is not None
    assert head.version == 1


def test_load_of_a_stream_snapshotted_at_its_head_reads_no_events(journal: SQLiteJournal) -> None:
    journal.append(req("s", 0, "a", "b"))
    snap = AppendRequest(
        stream_id="s",
        expected_version=2,
        events=[NewEvent(kind="c", payload={}, at=3.0)],
        snapshot={"folded": 3},
    )
    journal.append(snap)
    loaded = journal.load("s")
    assert loaded is not None
    assert loaded.version == 3
    assert loaded.snapshot is not None
    assert (loaded.snapshot.version, dict(loaded.snapshot.payload)) == (3, {"folded": 3})
    assert loaded.events == []
    assert [e.version for e in journal.events("s", after_version=1)] == [2, 3]


def test_reads_after_close_are_refused(db: Path) -> None:
    journal = SQLiteJournal(db)
    journal.append(req("s", 0))
    assert journal.head("s") is not None
    journal.close()
    for read in (lambda: journal.head("s"), lambda: journal.load("s"), journal.tag_counts):
        with pytest.raises(Internal):
            read()
    before = snapshot_of_tables(db)
    with pytest.raises(Internal):
        journal.append(req("s", 1))
    assert snapshot_of_tables(db) == before


def test_names_remembered_after_a_redone_batch_are_only_those_committed(
    journal: SQLiteJournal, db: Path
) -> None:
    """The batch redone request by request (see above) remembers the names of the requests that
    committed, and not those of the one rolled back."""
    journal.append(req("broken", 0))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO events VALUES ('broken', 2, 'stray', '{}', 1.0)")
    conn.close()
    journal.append_batch(
        [
            req("a", 0, aliases=(Alias(name="a-name"),)),
            req("broken", 1, aliases=(Alias(name="broken-name"),)),
        ]
    )
    assert journal.resolve_known("a-name") == "a"
    assert journal.resolve_known("broken-name") is None
    assert journal.resolve("broken-name") is None


@pytest.mark.parametrize(
    "payload",
    [
        {"text": 'caf\u00e9 \u2603 \x00 "quoted" \\', "n": -0.0, "big": 10**30, "f": 1e300},
        {"nested": {"list": [1, 2.5, None, True, False, {"deep": []}]}, "empty": {}},
        {1: "int key", 2.5: "float key", None: "none key", False: "bool key"},
    ],
)
def test_payloads_are_stored_as_compact_json_and_read_back(
    journal: SQLiteJournal, db: Path, payload: dict[Any, Any]
) -> None:
    journal.append(
        AppendRequest(
            stream_id="s", expected_version=0, events=[NewEvent(kind="k", payload=payload, at=1.0)]
        )
    )
    conn = sqlite3.connect(db)
    (stored,) = conn.execute("SELECT payload FROM events WHERE stream_id = 's'").fetchone()
    conn.close()
    assert stored == json.dumps(payload, separators=(",", ":"), allow_nan=False)


@pytest.mark.parametrize(
    "payload", [{"nan": float("nan")}, {"inf": float("-inf")}, {"set": {1}}, {(1, 2): "tuple key"}]
)
def test_a_payload_json_cannot_hold_fails_its_request_only(
    journal: SQLiteJournal, payload: dict[Any, Any]
) -> None:
    bad = AppendRequest(
        stream_id="bad", expected_version=0, events=[NewEvent(kind="k", payload=payload, at=1.0)]
    )
    results = journal.append_batch([bad, req("good", 0)])
    assert isinstance(results[0], Internal)
    assert results[1] == 1
    assert journal.head("bad") is None


def test_a_payload_that_contains_itself_fails_its_request_only(journal: SQLiteJournal) -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    bad = AppendRequest(
        stream_id="bad", expected_version=0, events=[NewEvent(kind="k", payload=cyclic, at=1.0)]
    )
    results = journal.append_batch([bad, req("good", 0)])
    assert isinstance(results[0], Internal)
    assert results[1] == 1
