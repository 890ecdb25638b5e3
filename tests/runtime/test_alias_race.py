"""Eight writers race to bind ONE booking id: exactly one wins, the journal stays consistent.

Each racer first commits a `created` event on its own stream, then (all released together) tries
to append `booking_attached` with the booking id as alias. The losers must get AliasConflict and
keep no trace of the failed append.

This module does not import pytest, so the 8 spawned interpreters that import it start fast.
"""

from __future__ import annotations

import multiprocessing
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.synchronize import Barrier
from pathlib import Path

from runtime.errors import AliasConflict
from runtime.journal import Alias, AppendRequest, NewEvent
from runtime.sqlite_journal import SQLiteJournal

RACERS = 8
BOOKING = "BK-2024-000042"
WAIT_S = 60.0  # generous: 8 spawned interpreters start on 2 shared cores


def created(stream: str) -> AppendRequest:
    event = NewEvent(kind="created", payload={"stream": stream}, at=1.0)
    return AppendRequest(stream_id=stream, expected_version=0, events=[event])


def attach_booking(stream: str) -> AppendRequest:
    event = NewEvent(kind="booking_attached", payload={"booking_id": BOOKING}, at=2.0)
    return AppendRequest(
        stream_id=stream, expected_version=1, events=[event], aliases=[Alias(name=BOOKING)]
    )


def race_once(journal: SQLiteJournal, index: int, wait: Callable[[], object]) -> str:
    """Commit this racer's own stream, wait for the start signal, then try to bind the booking."""
    stream = f"flow-{index}"
    journal.append(created(stream))
    wait()
    try:
        journal.append(attach_booking(stream))
    except AliasConflict:
        return "conflict"
    return "won"


def racer_process(
    path: str, index: int, start: Barrier, results: multiprocessing.Queue[str]
) -> None:
    with SQLiteJournal(path) as journal:
        outcome = race_once(journal, index, lambda: start.wait(WAIT_S))
    results.put(f"{index}:{outcome}")


def assert_one_winner_and_consistent(path: Path, outcomes: dict[int, str]) -> None:
    winners = [index for index, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    assert sorted(outcomes.values()).count("conflict") == RACERS - 1
    with SQLiteJournal(path) as journal:
        assert journal.resolve(BOOKING) == f"flow-{winners[0]}"
        for index in range(RACERS):
            kinds = [event.kind for event in journal.events(f"flow-{index}")]
            expected = ["created", "booking_attached"] if index in winners else ["created"]
            assert kinds == expected, index
            head = journal.head(f"flow-{index}")
            assert head is not None
            assert head.version == len(expected)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM aliases").fetchone() == (1,)
    finally:
        conn.close()


def test_eight_processes_race_for_one_booking_id(tmp_path: Path) -> None:
    path = tmp_path / "race.db"  # not created here: the racers also race to create the schema
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(RACERS)
    results: multiprocessing.Queue[str] = ctx.Queue()
    racers = [
        ctx.Process(target=racer_process, args=(str(path), index, start, results))
        for index in range(RACERS)
    ]
    for process in racers:
        process.start()
    try:
        lines = [results.get(timeout=WAIT_S) for _ in range(RACERS)]
    except queue.Empty as missing:
        raise AssertionError("a racer process never reported") from missing
    finally:
        for process in racers:
            process.join(timeout=WAIT_S)
    assert [process.exitcode for process in racers] == [0] * RACERS
    outcomes = {int(index): outcome for index, outcome in (line.split(":") for line in lines)}
    assert_one_winner_and_consistent(path, outcomes)


def test_eight_threads_with_their_own_journals_race_for_one_booking_id(tmp_path: Path) -> None:
    race_in_threads(tmp_path / "race.db", journal_count=RACERS)


def test_eight_threads_sharing_one_journal_race_for_one_booking_id(tmp_path: Path) -> None:
    race_in_threads(tmp_path / "race.db", journal_count=1)


def race_in_threads(path: Path, journal_count: int) -> None:
    count = journal_count
    journals = [SQLiteJournal(path) for _ in range(count)]
    start = threading.Barrier(RACERS)
    try:
        with ThreadPoolExecutor(RACERS) as pool:
            futures = {
                index: pool.submit(
                    race_once, journals[index % count], index, lambda: start.wait(WAIT_S)
                )
                for index in range(RACERS)
            }
            outcomes = {index: future.result(timeout=WAIT_S) for index, future in futures.items()}
    finally:
        for journal in journals:
            journal.close()
    assert_one_winner_and_consistent(path, outcomes)
