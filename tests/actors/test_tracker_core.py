"""tracker_core: merging polls and pushes, and the poll schedule, as pure functions."""

from __future__ import annotations

from actors import tracker_core as tc
from actors.provider import PaymentError

POLICY = tc.PollPolicy(first=0.5, cap=30.0, unhealthy_cap=5.0)


def _tracking(status: str = "requires_confirmation") -> tc.Tracker:
    return tc.track(tc.Tracker(), "pi_1", status)


def _report(status: str, created: float, event_id: str | None = None) -> tc.Report:
    return tc.Report(intent_id="pi_1", status=status, created=created, event_id=event_id)


def _feed(tracker: tc.Tracker, *reports: tc.Report) -> tuple[tc.Tracker, list[str]]:
    forwarded = []
    for report in reports:
        tracker, forward = tc.ingest(tracker, report)
        if forward is not None:
            forwarded.append(forward.status)
    return tracker, forwarded


def test_duplicates_and_stale_reports_are_dropped() -> None:
    _, forwarded = _feed(
        _tracking(),
        _report("processing", 10, "evt_1"),
        _report("succeeded", 12, "evt_2"),
        _report("succeeded", 12, "evt_2"),
        _report("processing", 10, "evt_1"),
        _report("succeeded", 13),
    )
    assert forwarded == ["processing", "succeeded"]


def test_never_backwards_except_a_newer_failure() -> None:
    tracker, forwarded = _feed(
        _tracking(), _report("processing", 10), _report("requires_action", 11)
    )
    assert forwarded == ["processing"]
    _, failure = _feed(tracker, _report("requires_payment_method", 10))
    assert failure == []  # not newer than what was applied
    _, failure = _feed(tracker, _report("requires_payment_method", 12))
    assert failure == ["requires_payment_method"]


def test_decline_from_a_fresh_intent_is_forwarded_with_its_error() -> None:
    declined = tc.Report(
        intent_id="pi_1",
        status="requires_payment_method",
        created=5,
        error=PaymentError(code="card_declined", message="no"),
    )
    _, forward = tc.ingest(_tracking(), declined)
    assert forward is not None
    assert forward.error is not None


def test_final_status_ends_tracking_and_other_intents_are_ignored() -> None:
    tracker, forwarded = _feed(_tracking(), _report("succeeded", 1))
    assert forwarded == ["succeeded"]
    assert not tracker.active
    assert tc.next_poll_delay(tracker, POLICY) is None
    other = tc.Report(intent_id="pi_2", status="processing", created=9)
    assert tc.ingest(_tracking(), other)[1] is None


def test_poll_backoff_grows_to_a_cap_lower_while_push_is_unhealthy() -> None:
    tracker = _tracking()
    delays = []
    for _ in range(10):
        delays.append(tc.next_poll_delay(tracker, POLICY))
        tracker = tc.polled(tracker)
    assert delays[:3] == [0.5, 1.0, 2.0]
    assert delays[-1] == 30.0
    assert tc.next_poll_delay(tc.with_push_health(tracker, False), POLICY) == 5.0


def test_track_resyncs_to_the_flows_status() -> None:
    tracker, _ = _feed(_tracking(), _report("processing", 3))
    assert tc.track(tracker, "pi_1", "processing") is tracker
    reset = tc.track(tracker, "pi_1", "requires_confirmation")
    assert reset.status == "requires_confirmation"
    assert reset.created == 0.0


def test_seen_event_ids_are_bounded() -> None:
    tracker = _tracking()
    for n in range(tc.SEEN_EVENTS_KEPT + 10):
        tracker, _ = tc.remember(tracker, f"evt_{n}")
    assert len(tracker.seen) == tc.SEEN_EVENTS_KEPT
    assert tc.remember(tracker, f"evt_{tc.SEEN_EVENTS_KEPT + 9}")[1] is False


def test_an_idle_tracker_is_shared_and_tracking_never_changes_it() -> None:
    idle = tc.idle(push_healthy=False)
    assert idle == tc.Tracker(push_healthy=False)
    assert tc.idle(push_healthy=True) == tc.Tracker()
    tracking = tc.track(idle, "pi_1", "requires_confirmation")
    tracking, _ = tc.ingest(tracking, _report("processing", 1.0, "evt_1"))
    assert (tracking.status, tracking.seen, tracking.push_healthy) == (
        "processing",
        ("evt_1",),
        False,
    )
    assert tc.stop(tracking) is tc.idle(push_healthy=False)
    assert idle == tc.Tracker(push_healthy=False)  # the shared value is untouched
