"""Group commit over a real SQLite journal: batching, per-request errors, flushing on close."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from runtime.errors import AliasConflict, Internal, PayflowError, VersionConflict
from runtime.group_commit import GroupCommitter
from runtime.journal import Alias, AppendRequest, NewEvent
from runtime.sqlite_journal import SQLiteJournal

WAIT_S = 30.0


def req(stream: str, expected: int, *, alias: str | None = None) -> AppendRequest:
    event = NewEvent(kind="e", payload={"expected": expected}, at=1.0)
    aliases = [Alias(name=alias)] if alias else []
    return AppendRequest(
        stream_id=stream, expected_version=expected, events=[event], aliases=aliases
    )


class GatedJournal(SQLiteJournal):
    """A real journal whose first batch waits for `release`, so the test decides what queues up
    behind it; records the size of every batch it is handed."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batch_sizes: list[int] = []

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[int | PayflowError]:
        self.batch_sizes.append(len(requests))
        self.entered.set()
        assert self.release.wait(WAIT_S)
        return super().append_batch(requests)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(db: Path) -> Iterator[GatedJournal]:
    with GatedJournal(db) as opened:
        yield opened


def test_concurrent_submitters_each_get_their_own_version(journal: GatedJournal) -> None:
    journal.release.set()

    def submitter(stream: str) -> list[int]:
        return [committer.submit(req(stream, n)).result(WAIT_S) for n in range(10)]

    with GroupCommitter(journal) as committer, ThreadPoolExecutor(16) as pool:
        per_stream = list(pool.map(submitter, [f"s{n}" for n in range(16)]))
    assert per_stream == [list(range(1, 11))] * 16
    assert all(len(journal.events(f"s{n}")) == 10 for n in range(16))
    assert committer.requests == 160
    assert sum(journal.batch_sizes) == 160


def test_requests_queued_behind_a_commit_share_one_batch(journal: GatedJournal, db: Path) -> None:
    with SQLiteJournal(db) as other_writer:
        other_writer.append(req("taken-by", 0, alias="bk-1"))
    with GroupCommitter(journal, max_batch=20) as committer:
        first = committer.submit(req("first", 0))
        assert journal.entered.wait(WAIT_S)
        queued = [committer.submit(req(f"s{n}", 0)) for n in range(47)]
        stale = committer.submit(req("first", 0))  # behind "first": its version moved
        taken = committer.submit(req("thief", 0, alias="bk-1"))
        journal.release.set()
        versions = [future.result(WAIT_S) for future in [first, *queued]]
        assert isinstance(stale.exception(WAIT_S), VersionConflict)
        assert isinstance(taken.exception(WAIT_S), AliasConflict)
    assert versions == [1] * 48
    assert journal.batch_sizes == [1, 20, 20, 9]
    assert journal.head("thief") is None
    assert committer.batches == 4


def test_close_commits_everything_submitted_and_stops_the_thread(journal: GatedJournal) -> None:
    journal.release.set()
    committer = GroupCommitter(journal, name="close-test-writer")
    futures = [committer.submit(req(f"s{n}", 0)) for n in range(100)]
    committer.close()
    assert all(future.done() for future in futures)
    assert [future.result() for future in futures] == [1] * 100
    assert "close-test-writer" not in {thread.name for thread in threading.enumerate()}
    with pytest.raises(Internal):
        committer.submit(req("late", 0))
    committer.close()  # idempotent


def test_a_request_cancelled_while_queued_is_not_written(journal: GatedJournal) -> None:
    with GroupCommitter(journal) as committer:
        first = committer.submit(req("first", 0))
        assert journal.entered.wait(WAIT_S)
        cancelled = committer.submit(req("cancelled", 0))
        assert cancelled.cancel()
        journal.release.set()
        assert first.result(WAIT_S) == 1
    assert journal.head("cancelled") is None


def test_a_storage_failure_reaches_every_submitter(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "journal.db")
    with GroupCommitter(journal) as committer:
        journal.close()
        futures: list[Future[int]] = [committer.submit(req(f"s{n}", 0)) for n in range(5)]
        assert all(isinstance(f.exception(WAIT_S), Internal) for f in futures)
        # The writer thread survived the failure and still answers.
        assert isinstance(committer.submit(req("again", 0)).exception(WAIT_S), Internal)


def test_asyncio_callers_await_without_blocking_the_loop(journal: GatedJournal) -> None:
    journal.release.set()

    async def main(committer: GroupCommitter) -> list[int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        versions = await asyncio.gather(*(committer.append(req(f"s{n}", 0)) for n in range(20)))
        ticking.cancel()
        assert ticks > 0  # the loop kept running while the commits were in flight
        return list(versions)

    with GroupCommitter(journal) as committer:
        assert asyncio.run(main(committer)) == [1] * 20


def test_close_from_a_future_callback_does_not_deadlock(journal: GatedJournal) -> None:
    journal.release.set()
    committer = GroupCommitter(journal, name="callback-close-writer")
    first = committer.submit(req("s", 0))
    first.add_done_callback(lambda _: committer.close())  # runs on the writer thread
    assert first.result(WAIT_S) == 1
    committer.close()
    assert "callback-close-writer" not in {thread.name for thread in threading.enumerate()}


def test_max_batch_must_be_positive(journal: GatedJournal) -> None:
    with pytest.raises(Internal):
        GroupCommitter(journal, max_batch=0)


def test_submit_then_calls_back_with_the_version_or_the_requests_own_error(
    journal: GatedJournal,
) -> None:
    outcomes: dict[str, object] = {}
    done = threading.Event()

    def recorder(name: str) -> Callable[[object], None]:
        def record(outcome: object) -> None:
            outcomes[name] = outcome
            if len(outcomes) == 3:
                done.set()

        return record

    with GroupCommitter(journal) as committer:
        committer.submit_then(req("s", 0, alias="bk"), recorder("first"))
        committer.submit_then(req("s", 0), recorder("stale"))
        committer.submit_then(req("t", 0, alias="bk"), recorder("taken"))
        journal.release.set()
        assert done.wait(WAIT_S)
    assert outcomes["first"] == 1
    assert isinstance(outcomes["stale"], VersionConflict)
    assert isinstance(outcomes["taken"], AliasConflict)
    assert journal.resolve("bk") == "s"
