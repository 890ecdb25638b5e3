"""SIGKILL a writing process at random moments: the journal must never lose or half-apply a commit.

A child process appends in a loop (single appends with aliases, batches, snapshots) and writes
`<stream> <version>` only after each commit returned. The parent kills it with SIGKILL at a random
moment, 20 times, and after every kill reopens the file and checks what a user relies on: the file
is intact, every stream's versions are 1..N with no gap, nothing is half-applied, and every
version the child reported as committed is there.

This module does not import pytest, so the child (`python -c`, importing it) starts fast.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from runtime.journal import Alias, AppendRequest, NewEvent, Snapshot
from runtime.sqlite_journal import SQLiteJournal

ROUNDS = 20
STREAMS = [f"s{n}" for n in range(4)]
MAX_APPENDS = 100_000  # bounds the child's loop; a round kills it long before
REPO_ROOT = Path(__file__).resolve().parents[2]
CHILD = (
    "import sys; from tests.runtime.test_journal_crash import child_main; child_main(sys.argv[1])"
)


def child_main(path: str) -> None:
    """Append forever (bounded), reporting each committed version on stdout."""
    journal = SQLiteJournal(path)
    versions = {stream: _version(journal, stream) for stream in STREAMS}
    for n in range(MAX_APPENDS):
        stream, other = STREAMS[n % len(STREAMS)], STREAMS[(n + 1) % len(STREAMS)]
        if n % 5 == 4:  # two streams in one transaction
            requests = [_request(s, versions[s], count=2) for s in (stream, other)]
            results = journal.append_batch(requests)
            committed = dict(zip((stream, other), results, strict=True))
        else:
            committed = {stream: journal.append(_request(stream, versions[stream], 1 + n % 3))}
        for name, version in committed.items():
            assert isinstance(version, int)
            versions[name] = version
            # One write(2) per line: a pipe write this small is atomic, so a kill never leaves
            # half a report (print() may issue several writes).
            os.write(sys.stdout.fileno(), f"{name} {version}\n".encode())
        if n % 7 == 6:
            journal.save_snapshot(Snapshot(stream_id=stream, version=versions[stream], payload={}))


def _version(journal: SQLiteJournal, stream: str) -> int:
    head = journal.head(stream)
    return head.version if head is not None else 0


def _request(stream: str, current: int, count: int) -> AppendRequest:
    """`count` events; the alias names the version the append creates, so a checker can tell
    whether an alias exists without its events."""
    events = [
        NewEvent(kind="tick", payload={"v": current + k}, at=float(current + k))
        for k in range(1, count + 1)
    ]
    return AppendRequest(
        stream_id=stream,
        expected_version=current,
        events=events,
        aliases=[Alias(name=f"{stream}@{current + count}")],
        tag=f"v{current + count}",
    )


def run_and_kill(path: Path, rng: random.Random) -> dict[str, int]:
    """Start the child, let it commit a random number of appends, SIGKILL it at a random moment,
    and return the highest version it reported per stream."""
    child = subprocess.Popen(
        # -S: the child needs only the standard library and this checkout; skipping site-packages
        # set-up keeps 20 process starts within a few seconds.
        [sys.executable, "-S", "-c", CHILD, str(path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert child.stdout is not None
    lines: list[str] = []
    try:
        for _ in range(rng.randint(1, 12)):
            lines.append(child.stdout.readline())
            assert lines[-1], "the child stopped before it was killed"
        # The kill moment: a random pause, also a check that the child does not exit by itself.
        try:
            exit_code = child.wait(timeout=rng.uniform(0, 0.004))
        except subprocess.TimeoutExpired:
            exit_code = None
        assert exit_code is None, f"the child exited with {exit_code} before it was killed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        lines.append(child.stdout.read())  # what it committed and reported before dying
        child.stdout.close()
    return _highest_per_stream("".join(lines))


def _highest_per_stream(output: str) -> dict[str, int]:
    highest: dict[str, int] = {}
    for line in output.splitlines():
        stream, version = line.split()
        highest[stream] = max(highest.get(stream, 0), int(version))
    return highest


def assert_consistent(path: Path, reported: dict[str, int]) -> None:
    with SQLiteJournal(path) as journal:  # reopening runs SQLite's WAL recovery
        for stream, version in reported.items():
            assert _version(journal, stream) >= version, f"committed {stream} v{version} lost"
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        heads = dict(conn.execute("SELECT stream_id, version FROM streams").fetchall())
        for stream, head in heads.items():
            rows = conn.execute(
                "SELECT version FROM events WHERE stream_id = ? ORDER BY version", (stream,)
            ).fetchall()
            assert [v for (v,) in rows] == list(range(1, head + 1)), stream
        orphans = conn.execute(
            "SELECT count(*) FROM events WHERE stream_id NOT IN (SELECT stream_id FROM streams)"
        ).fetchone()
        assert orphans == (0,)
        for name, stream in conn.execute("SELECT name, stream_id FROM aliases"):
            owner, version = name.split("@")
            assert owner == stream
            assert heads[stream] >= int(version), f"alias {name} without its events"
        for stream, version in conn.execute("SELECT stream_id, version FROM snapshots"):
            assert version <= heads[stream]
    finally:
        conn.close()


def test_sigkill_never_loses_or_half_applies_a_journal_commit(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    reported: dict[str, int] = {}
    for round_number in range(ROUNDS):
        for stream, version in run_and_kill(path, rng).items():
            reported[stream] = max(reported.get(stream, 0), version)
        try:
            assert_consistent(path, reported)
        except AssertionError as error:
            raise AssertionError(f"round {round_number}, seed {seed}: {error}") from error
    assert sum(reported.values()) > ROUNDS  # the child really committed work in the rounds
