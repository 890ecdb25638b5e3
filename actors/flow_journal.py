"""A flow as the journal holds it: how it is found and loaded, and what an append of it carries.

Pure (no pykka, no I/O of its own: the journal is passed in). Loading is the latest snapshot
plus the events after it (`load_flow`); any of a flow's names leads to it (`resolve_flow`).
A decision's events become one `AppendRequest` (`append_request`), which also binds the
decision's aliases, tags the stream with the flow's new state and, every `snapshot_every`
versions, carries a snapshot in the same transaction.
"""

from __future__ import annotations

from actors.flow_core import (
    Flow,
    FlowEvent,
    FlowState,
    event_to_record,
    flow_from_snapshot,
    flow_to_snapshot,
    replay_records,
)
from actors.flow_decisions import Decision
from runtime.errors import NotFound
from runtime.journal import Alias, AppendRequest, Journal, NewEvent

# Enum members' `.value` is a Python-level property: these are read on every event a flow logs
# and on every append (the stream's tag).
STATE_NAMES: dict[FlowState, str] = {state: state.value for state in FlowState}


def resolve_flow(journal: Journal, any_id: str) -> str:
    """The flow a flow_id, booking_id or pre_id names (one namespace); `NotFound` if none."""
    flow_id = journal.resolve(any_id)
    if flow_id is None:
        raise NotFound(f"no flow is known by {any_id!r}")
    return flow_id


def load_flow(journal: Journal, flow_id: str) -> Flow:
    """The flow as the journal has it: its latest snapshot plus the events after it."""
    loaded = journal.load(flow_id)
    start = Flow.initial(flow_id)
    if loaded is None:
        return start
    if loaded.snapshot is not None:
        start = flow_from_snapshot(loaded.snapshot.payload)
    return replay_records(((e.kind, e.payload, e.at) for e in loaded.events), start=start)


def append_request(
    flow_id: str, before: Flow, decision: Decision, snapshot_every: int
) -> AppendRequest:
    """The append that persists `decision` (which has events), taken from `before`.

    A snapshot rides on the append that crosses a multiple of `snapshot_every` (one
    transaction: no fsync of its own, and loading later replays at most that many events)."""
    after = decision.steps[-1]  # decided from `before`: the flow after its events
    crossed = after.version // snapshot_every > before.version // snapshot_every
    return AppendRequest(
        stream_id=flow_id,
        expected_version=before.version,
        events=[_new_event(event) for event in decision.events],
        aliases=[Alias(name=name, namespace=space) for name, space in decision.aliases],
        tag=STATE_NAMES[after.state],
        snapshot=flow_to_snapshot(after) if crossed else None,
    )


def _new_event(event: FlowEvent) -> NewEvent:
    kind, payload, at = event_to_record(event)
    return NewEvent(kind=kind, payload=payload, at=at)
