"""Random event sequences against the transition table, with journal and snapshot replays.

The machine throws arbitrary events (allowed or not) and provider status reports at one flow and
records every applied event the way the journal will: as a JSON text of (kind, payload, at). At
every step the live flow must equal the flow rebuilt from those records, both from scratch and
from the latest snapshot plus the records after it.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.flow_core import (
    CANCEL_REQUEST_STATES,
    TRANSITIONS,
    EventType,
    Flow,
    FlowEvent,
    FlowState,
    allowed_events,
    apply,
    event_to_record,
    events_for_provider_status,
    flow_from_snapshot,
    flow_to_snapshot,
    replay_records,
)
from actors.provider import PaymentError
from runtime.errors import InvalidTransition
from tests.actors.flows import STATUSES, T0, event_strategy

# The journal holds JSON text; a record that does not survive json is a bug we want to see.
StoredRecord = tuple[str, dict[str, Any], float]

_errors = st.none() | st.builds(
    PaymentError, code=st.sampled_from(["card_declined", "expired_card"]), message=st.text()
)
_next_actions = st.none() | st.just({"type": "use_stripe_sdk"})


class FlowJournalMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.flow = Flow.initial("flow-h")
        self.journal: list[str] = []
        self.snapshot: tuple[int, str] = (0, json.dumps(flow_to_snapshot(self.flow)))
        self.clock = T0
        self.final: Flow | None = None  # the flow as it was when it became terminal

    def _tick(self) -> float:
        self.clock += 0.25
        return self.clock

    def _offer(self, event: FlowEvent) -> bool:
        """Apply `event` if the table allows it; check what happened either way."""
        before = self.flow
        before_fields = flow_to_snapshot(before)
        allowed = event.event_type in allowed_events(before)
        try:
            after = apply(before, event)
        except InvalidTransition:
            assert not allowed
            assert flow_to_snapshot(self.flow) == before_fields
            return False
        assert allowed
        assert after.state is TRANSITIONS[before.state][event.event_type]
        assert after.version == before.version + 1
        assert flow_to_snapshot(before) == before_fields
        self.flow = after
        self.journal.append(json.dumps(event_to_record(event)))
        return True

    @rule(data=st.data(), event_type=st.sampled_from(list(EventType)))
    def any_event(self, data: st.DataObject, event_type: EventType) -> None:
        self._offer(data.draw(event_strategy(event_type, self.flow, self._tick())))

    @precondition(lambda self: not self.flow.is_terminal)
    @rule(data=st.data())
    def allowed_event(self, data: st.DataObject) -> None:
        event_type = data.draw(st.sampled_from(sorted(allowed_events(self.flow))))
        assert self._offer(data.draw(event_strategy(event_type, self.flow, self._tick())))

    # Cancel and expire are allowed almost everywhere and end the flow (a cancel request blocks
    # what the customer may do next); without a rule that moves forward, most runs would never
    # see a payment at all.
    @precondition(lambda self: bool(_forward(self.flow)))
    @rule(data=st.data())
    def forward_event(self, data: st.DataObject) -> None:
        event_type = data.draw(st.sampled_from(_forward(self.flow)))
        assert self._offer(data.draw(event_strategy(event_type, self.flow, self._tick())))

    @rule(status=st.sampled_from(STATUSES), error=_errors, next_action=_next_actions)
    def provider_reports(
        self, status: str, error: PaymentError | None, next_action: dict[str, Any] | None
    ) -> None:
        before = self.flow
        events = events_for_provider_status(
            before, status, at=self._tick(), next_action=next_action, error=error
        )
        if before.is_terminal:
            assert events == []
        for event in events:
            assert self._offer(event), f"{status} produced {event} that {self.flow.state} refuses"
        assert _rank(self.flow.state) >= _rank(before.state)
        if self.flow.provider_status == status:  # the same report again is no news
            assert events_for_provider_status(self.flow, status, at=self._tick()) == []

    @rule()
    def take_snapshot(self) -> None:
        self.snapshot = (len(self.journal), json.dumps(flow_to_snapshot(self.flow)))

    @invariant()
    def version_counts_applied_events(self) -> None:
        assert self.flow.state in FlowState
        assert self.flow.version == len(self.journal)

    @invariant()
    def terminal_flows_never_change(self) -> None:
        if self.final is not None:
            assert self.flow == self.final
        elif self.flow.is_terminal:
            self.final = self.flow

    @invariant()
    def fields_match_the_state(self) -> None:
        flow = self.flow
        assert (flow.next_action is not None) is (flow.state is FlowState.REQUIRES_ACTION)
        assert (flow.error is not None) is (flow.state is FlowState.FAILED)
        if flow.state in {FlowState.PAYMENT_PROCESSING, FlowState.REQUIRES_ACTION}:
            assert flow.intent_id is not None
        if flow.cancel_requested:  # a request is answered in the state it was made in
            assert flow.state in CANCEL_REQUEST_STATES
            assert flow.intent_id is not None

    # A rule rather than an invariant: replaying the whole journal after every step made the
    # test quadratic; checked at random points and always at the end it catches the same bugs.
    @rule()
    def journal_replays_to_the_live_flow(self) -> None:
        records = [_stored(text) for text in self.journal]
        assert replay_records(records, start=Flow.initial("flow-h")) == self.flow
        position, snapshot_text = self.snapshot
        restored = flow_from_snapshot(json.loads(snapshot_text))
        assert replay_records(records[position:], start=restored) == self.flow

    def teardown(self) -> None:
        self.journal_replays_to_the_live_flow()
        note_event(
            f"ended in {self.flow.state}"
        )  # --hypothesis-show-statistics: is it reaching deep?


def _forward(flow: Flow) -> list[EventType]:
    ending = {EventType.CANCEL_REQUESTED, EventType.CANCELLED, EventType.EXPIRED}
    return sorted(allowed_events(flow) - ending)


def _stored(text: str) -> StoredRecord:
    kind, payload, at = json.loads(text)
    return kind, payload, at


def _rank(state: FlowState) -> int:
    # Forward order; PROCESSING and REQUIRES_ACTION share a rank because 3-D Secure alternates.
    order = [
        {FlowState.INITIAL},
        {FlowState.PRE_BOOKING},
        {FlowState.PAYMENT_PENDING},
        {FlowState.PAYMENT_ACTIVE},
        {FlowState.PAYMENT_PROCESSING, FlowState.REQUIRES_ACTION},
        {FlowState.COMPLETED, FlowState.FAILED, FlowState.CANCELLED, FlowState.EXPIRED},
    ]
    return next(rank for rank, states in enumerate(order) if state in states)


FlowJournalMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_flow_journal_machine = FlowJournalMachine.TestCase
