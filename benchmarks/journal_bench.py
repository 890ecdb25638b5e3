"""Durable append throughput of the SQLite journal, next to a plain sqlite3 loop in the same run.

    .venv/bin/python benchmarks/journal_bench.py [--seconds S] [--rounds R] [--dir DIR]

Every figure is a durable commit rate: WAL + synchronous=FULL, an fsync per commit, on the same
file system (fresh files in DIR, default the current directory, where ./payflowd.db would live).
Each mode warms up, then runs S seconds; modes are interleaved over R rounds (default 3, so drift
on a busy machine hits them alike) and the median is printed with the spread.

  (a) baseline: plain sqlite3, one INSERT per commit, same columns and payload as the journal
  (b) SQLiteJournal.append, one event per call
  (c) GroupCommitter with 64 threads each waiting for its own commit
  (d) SQLiteJournal.append_batch of 100 requests
and, to choose how reads are served, load() calls from 4 threads while a writer appends:
  pooled reader connections (what SQLiteJournal does) vs every read under the writer's lock.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.group_commit import GroupCommitter
from runtime.journal import AppendRequest, NewEvent
from runtime.sqlite_journal import SQLiteJournal

SUBMITTERS = 64
BATCH = 100
READERS = 4
PAYLOAD = {"amount": 4200, "currency": "eur", "intent_id": "pi_3Nq0a1b2c3d4e5f6g7h8", "n": 0}
PAYLOAD_JSON = '{"amount":4200,"currency":"eur","intent_id":"pi_3Nq0a1b2c3d4e5f6g7h8","n":0}'

# A measurement: (fresh file, seconds) -> operations per second.
Measure = Callable[[Path, float], float]


@dataclass(frozen=True, slots=True, kw_only=True)
class Mode:
    label: str
    unit: str
    measure: Measure


class Streams:
    """Hands out append requests that follow each stream's version (no conflicts)."""

    def __init__(self, prefix: str, count: int) -> None:
        self._names = [f"{prefix}-{n}" for n in range(count)]
        self._versions = dict.fromkeys(self._names, 0)
        self._next = 0

    def request(self) -> AppendRequest:
        name = self._names[self._next % len(self._names)]
        self._next += 1
        event = NewEvent(kind="payment_confirmed", payload=PAYLOAD, at=time.time())
        request = AppendRequest(
            stream_id=name, expected_version=self._versions[name], events=[event], tag="ACTIVE"
        )
        self._versions[name] += 1
        return request


def timed(work: Callable[[], int], seconds: float) -> float:
    """Run `work` (returns operations done) for warm-up, then for `seconds`; operations/s."""
    warm_until = time.perf_counter() + min(0.25, seconds / 4)
    while time.perf_counter() < warm_until:
        work()
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += work()
    return done / elapsed


# --- (a) the baseline -----------------------------------------------------------------------


def plain_sqlite(path: Path, seconds: float) -> float:
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: one commit per INSERT
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE events (stream_id TEXT NOT NULL, version INTEGER NOT NULL,"
        " kind TEXT NOT NULL, payload TEXT NOT NULL, at REAL NOT NULL,"
        " PRIMARY KEY (stream_id, version)) WITHOUT ROWID"
    )
    counter = iter(range(1, 10**12))

    def insert_one() -> int:
        version = next(counter)
        row = (f"s-{version % 100}", version, "payment_confirmed", PAYLOAD_JSON, time.time())
        conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)", row)
        return 1

    try:
        return timed(insert_one, seconds)
    finally:
        conn.close()


# --- (b)-(d) the journal --------------------------------------------------------------------


def journal_append(path: Path, seconds: float) -> float:
    streams = Streams("single", 100)

    def append_one() -> int:
        journal.append(streams.request())
        return 1

    with SQLiteJournal(path) as journal:
        return timed(append_one, seconds)


def journal_batch(path: Path, seconds: float) -> float:
    streams = Streams("batch", BATCH)

    def one_batch() -> int:
        results = journal.append_batch([streams.request() for _ in range(BATCH)])
        assert all(isinstance(result, int) for result in results)
        return BATCH

    with SQLiteJournal(path) as journal:
        return timed(one_batch, seconds)


GROUP_BATCHES: list[float] = []  # average requests per commit in each (c) run, for the report


def group_commit(path: Path, seconds: float) -> float:
    with SQLiteJournal(path) as journal, GroupCommitter(journal) as committer:
        run_submitters(committer, min(0.25, seconds / 4))  # warm-up
        batches, requests = committer.batches, committer.requests
        rate = run_submitters(committer, seconds)
        GROUP_BATCHES.append((committer.requests - requests) / (committer.batches - batches))
        return rate


def run_submitters(committer: GroupCommitter, seconds: float) -> float:
    """SUBMITTERS threads, each submitting and waiting for its own commit, on its own stream."""
    stop = threading.Event()
    start = threading.Barrier(SUBMITTERS + 1)

    def submitter(index: int) -> int:
        streams, done = Streams(f"gc-{index}-{time.monotonic_ns()}", 1), 0
        start.wait()
        while not stop.is_set():
            committer.submit(streams.request()).result()
            done += 1
        return done

    with ThreadPoolExecutor(SUBMITTERS) as pool:
        futures = [pool.submit(submitter, index) for index in range(SUBMITTERS)]
        start.wait()
        began = time.perf_counter()
        stop.wait(seconds)  # the measurement window itself
        stop.set()
        total = sum(future.result() for future in futures)
        return total / (time.perf_counter() - began)


# --- reads under write load -----------------------------------------------------------------


class _WriterConnectionReads:
    """Reads on the journal's writer connection, under its lock (the `ReaderPool` interface)."""

    def __init__(self, journal: SQLiteJournal) -> None:
        self._journal = journal

    def read(self, query: str, parameters: Sequence[object]) -> list[Any]:
        journal = self._journal
        with journal._write_lock:
            return journal._writer.execute(query, parameters).fetchall()

    def close(self) -> None:
        """Nothing of its own to close: the writer connection is the journal's."""


class ReadsUnderWriterLock(SQLiteJournal):
    """The alternative design: every read on the writer connection, under the writer's lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._readers.close()
        self._readers = _WriterConnectionReads(self)  # type: ignore[assignment]


def reads_while_writing(journal_type: type[SQLiteJournal]) -> Measure:
    def measure(path: Path, seconds: float) -> float:
        with journal_type(path) as journal:
            streams = Streams("read", 50)
            for _ in range(10):
                journal.append_batch([streams.request() for _ in range(50)])
            return loads_per_second(journal, streams, seconds)

    return measure


def loads_per_second(journal: SQLiteJournal, streams: Streams, seconds: float) -> float:
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            journal.append(streams.request())

    def reader(index: int) -> int:
        done = 0
        while not stop.is_set():
            assert journal.load(f"read-{(index + done) % 50}") is not None
            done += 1
        return done

    with ThreadPoolExecutor(READERS + 1) as pool:
        writing = pool.submit(writer)
        readers = [pool.submit(reader, index) for index in range(READERS)]
        began = time.perf_counter()
        stop.wait(seconds)  # the measurement window itself
        stop.set()
        total = sum(future.result() for future in readers)
        writing.result()
        return total / (time.perf_counter() - began)


# --- report ---------------------------------------------------------------------------------

APPENDS = [
    Mode(label="(a) plain sqlite3, 1 row per commit", unit="appends/s", measure=plain_sqlite),
    Mode(label="(b) journal.append, 1 event", unit="appends/s", measure=journal_append),
    Mode(label=f"(c) GroupCommitter, {SUBMITTERS} threads", unit="appends/s", measure=group_commit),
    Mode(label=f"(d) append_batch of {BATCH}", unit="appends/s", measure=journal_batch),
]
READS = [
    Mode(
        label=f"load(), {READERS} readers + 1 writer: pooled readers",
        unit="loads/s",
        measure=reads_while_writing(SQLiteJournal),
    ),
    Mode(
        label=f"load(), {READERS} readers + 1 writer: writer's lock",
        unit="loads/s",
        measure=reads_while_writing(ReadsUnderWriterLock),
    ),
]


def run_all(
    modes: list[Mode], directory: Path, seconds: float, rounds: int
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {mode.label: [] for mode in modes}
    for round_number in range(rounds):
        for mode in modes:
            with tempfile.TemporaryDirectory(dir=directory, prefix=".journal-bench-") as scratch:
                path = Path(scratch) / f"{round_number}.db"
                results[mode.label].append(mode.measure(path, seconds))
    return results


def print_table(title: str, modes: list[Mode], results: dict[str, list[float]]) -> None:
    baseline = statistics.median(results[modes[0].label])
    print(f"\n{title}")
    print(f"{'mode':<48} {'median':>10} {'unit':<10} {'min-max':>17} {'vs first':>9}")
    for mode in modes:
        runs = results[mode.label]
        median = statistics.median(runs)
        spread = f"{min(runs):,.0f}-{max(runs):,.0f}"
        ratio = median / baseline
        print(f"{mode.label:<48} {median:>10,.0f} {mode.unit:<10} {spread:>17} {ratio:>8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per mode (median printed)")
    parser.add_argument("--dir", type=Path, default=Path(), help="where the fresh files go")
    args = parser.parse_args()
    directory = args.dir.resolve()
    print(
        f"SQLite {sqlite3.sqlite_version}, WAL + synchronous=FULL, files in {directory}, "
        f"{os.cpu_count()} CPUs, {args.seconds:g} s per run, "
        f"median of {args.rounds} interleaved runs"
    )
    print_table(
        "durable appends (ratio to the plain sqlite3 loop)",
        APPENDS,
        run_all(APPENDS, directory, args.seconds, args.rounds),
    )
    print(f"(c) requests per commit: median {statistics.median(GROUP_BATCHES):.1f}")
    print_table(
        "reads while a writer appends (ratio to pooled readers)",
        READS,
        run_all(READS, directory, args.seconds, args.rounds),
    )


if __name__ == "__main__":
    main()
