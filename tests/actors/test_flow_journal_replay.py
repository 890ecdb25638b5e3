"""The live flow equals the flow rebuilt from the real SQLite journal, snapshot or not.

The same random event sequences as the in-memory state machine, but every applied event is
appended to a real journal file (version-checked, tagged with the state) and snapshots are saved
there at random points; loading the stream back (latest snapshot + later events) must rebuild
exactly the live flow, and the stream head must carry its version and state.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.stateful import rule

from actors.flow_core import (
    Flow,
    FlowEvent,
    event_to_record,
    flow_from_snapshot,
    flow_to_snapshot,
    replay_records,
)
from runtime.journal import AppendRequest, NewEvent, Snapshot
from runtime.sqlite_journal import SQLiteJournal
from tests.actors.test_flow_stateful import FlowJournalMachine

FLOW_ID = "flow-h"


class SQLiteJournalMachine(FlowJournalMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="payflowd-replay-"))
        self.store = SQLiteJournal(self.directory / "journal.db")

    def _offer(self, event: FlowEvent) -> bool:
        before = self.flow.version
        applied = super()._offer(event)
        if applied:
            kind, payload, at = event_to_record(event)
            version = self.store.append(
                AppendRequest(
                    stream_id=FLOW_ID,
                    expected_version=before,
                    events=[NewEvent(kind=kind, payload=payload, at=at)],
                    tag=self.flow.state.value,
                )
            )
            assert version == self.flow.version
        return applied

    @rule()
    def save_journal_snapshot(self) -> None:
        if self.flow.version > 0:
            payload = flow_to_snapshot(self.flow)
            snapshot = Snapshot(stream_id=FLOW_ID, version=self.flow.version, payload=payload)
            self.store.save_snapshot(snapshot)

    @rule()
    def sqlite_journal_replays_to_the_live_flow(self) -> None:
        loaded = self.store.load(FLOW_ID)
        if loaded is None:
            assert self.flow.version == 0
            return
        start = (
            flow_from_snapshot(loaded.snapshot.payload)
            if loaded.snapshot is not None
            else Flow.initial(FLOW_ID)
        )
        records = [(event.kind, dict(event.payload), event.at) for event in loaded.events]
        assert replay_records(records, start=start) == self.flow
        head = self.store.head(FLOW_ID)
        assert head is not None
        assert (head.version, head.tag) == (self.flow.version, self.flow.state.value)

    def teardown(self) -> None:
        try:
            self.sqlite_journal_replays_to_the_live_flow()
            super().teardown()
        finally:
            self.store.close()
            shutil.rmtree(self.directory, ignore_errors=True)


SQLiteJournalMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_sqlite_journal_machine = SQLiteJournalMachine.TestCase
