"""The status tracker's pure core: merge polled and pushed provider statuses, plan the polls.

Polls, webhooks and feeds report the same intent independently, late, repeatedly and out of
order. `ingest` turns that into the short list of real, forward changes the flow must hear:

- a pushed event already seen (by event id, a bounded memory) is dropped;
- a report older than the newest one applied (`created`) is dropped;
- a status ranked below the applied one is dropped (`RANK`), except a failure
  (`requires_payment_method` after the payment started: a decline or failed 3-D Secure), which
  is forward when it comes from a strictly newer report;
- a repeat of the applied status is dropped;
- after a final status (succeeded, canceled, requires_capture) nothing is forwarded any more.

Polling is data too: `next_poll_delay` starts fast (a payment usually settles within seconds),
doubles while nothing changes, is capped lower while push channels are unhealthy (polls are then
the only news), and is None once tracking stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from actors.provider import IntentStatus, PaymentError

_I = IntentStatus
RANK: Mapping[str, int] = {
    _I.REQUIRES_PAYMENT_METHOD: 0,
    _I.REQUIRES_CONFIRMATION: 0,
    _I.REQUIRES_ACTION: 1,
    _I.PROCESSING: 2,
    _I.REQUIRES_CAPTURE: 3,
    _I.SUCCEEDED: 3,
    _I.CANCELED: 3,
}
FINAL_RANK = 3
SEEN_EVENTS_KEPT = 64  # a replayed webhook older than this many later events is still stale
# A push carries the status alone; for these the flow needs what only a poll returns
# (`next_action` for 3-D Secure, `last_error` for a decline), so a push of one triggers a poll.
DETAIL_STATUSES: frozenset[str] = frozenset({_I.REQUIRES_ACTION, _I.REQUIRES_PAYMENT_METHOD})


@dataclass(frozen=True, slots=True, kw_only=True)
class PollPolicy:
    first: float = 0.5  # seconds before the first poll
    cap: float = 30.0  # the slowest poll while push channels work
    unhealthy_cap: float = 5.0  # the slowest poll while they do not


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """One observation of the intent: a poll (event_id None) or a pushed event."""

    intent_id: str
    status: str
    created: float  # epoch seconds: the event's time, or when the poll was answered
    event_id: str | None = None
    next_action: Mapping[str, Any] | None = None
    error: PaymentError | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Tracker:
    """What one flow's tracker knows. `intent_id` None: not tracking."""

    intent_id: str | None = None
    status: str | None = None  # the status last applied (forwarded or given by the flow)
    created: float = 0.0  # `created` of the newest applied report
    seen: tuple[str, ...] = ()  # event ids already ingested, newest last
    quiet_polls: int = 0  # polls since the last change: drives the backoff
    push_healthy: bool = True

    @property
    def active(self) -> bool:
        return self.intent_id is not None and RANK.get(self.status or "", 0) < FINAL_RANK


def track(tracker: Tracker, intent_id: str, status: str | None) -> Tracker:
    """Track `intent_id` from the flow's `status` for it. The flow is the truth: when it says a
    status other than the one applied here (a lost update), start afresh from the flow's."""
    if tracker.intent_id == intent_id and tracker.status == status:
        return tracker
    return Tracker(intent_id=intent_id, status=status, push_healthy=tracker.push_healthy)


def idle(*, push_healthy: bool) -> Tracker:
    """A tracker tracking nothing. Values, so one of each serves every flow's tracker."""
    return _IDLE_HEALTHY if push_healthy else _IDLE_UNHEALTHY


_IDLE_HEALTHY = Tracker(push_healthy=True)
_IDLE_UNHEALTHY = Tracker(push_healthy=False)


def stop(tracker: Tracker) -> Tracker:
    return idle(push_healthy=tracker.push_healthy)


def ingest(tracker: Tracker, report: Report) -> tuple[Tracker, Report | None]:
    """The tracker after `report`, and the report if it is a real forward change (else None)."""
    if not tracker.active or report.intent_id != tracker.intent_id:
        return tracker, None
    if report.event_id is not None:
        tracker, new = remember(tracker, report.event_id)
        if not new:
            return tracker, None
    if report.created < tracker.created or not _forward(tracker, report):
        return tracker, None
    # Built field by field: `dataclasses.replace` walks `fields()` on every call, and every
    # status a flow's tracker forwards comes through here.
    applied = Tracker(
        intent_id=tracker.intent_id,
        status=report.status,
        created=report.created,
        seen=tracker.seen,
        quiet_polls=0,
        push_healthy=tracker.push_healthy,
    )
    return applied, report


def remember(tracker: Tracker, event_id: str) -> tuple[Tracker, bool]:
    """Note a pushed event id; False if it was seen before (a duplicate delivery)."""
    if event_id in tracker.seen:
        return tracker, False
    seen = (*tracker.seen, event_id)[-SEEN_EVENTS_KEPT:]
    remembered = Tracker(
        intent_id=tracker.intent_id,
        status=tracker.status,
        created=tracker.created,
        seen=seen,
        quiet_polls=tracker.quiet_polls,
        push_healthy=tracker.push_healthy,
    )
    return remembered, True


def _forward(tracker: Tracker, report: Report) -> bool:
    current = RANK.get(tracker.status or "", 0)
    seen = RANK.get(report.status)
    if seen is None:
        return False  # a status we do not know says nothing we can act on
    if report.status == _I.REQUIRES_PAYMENT_METHOD and current > 0:
        return report.created > tracker.created  # the attempt failed after it started
    if report.status == tracker.status:
        return False
    return seen > current or (seen == current and seen == 0)


def polled(tracker: Tracker) -> Tracker:
    """A poll brought nothing new: the next one waits longer."""
    return replace(tracker, quiet_polls=tracker.quiet_polls + 1)


def with_push_health(tracker: Tracker, healthy: bool) -> Tracker:
    return replace(tracker, push_healthy=healthy)


def next_poll_delay(tracker: Tracker, policy: PollPolicy) -> float | None:
    """Seconds until the next poll, or None when there is nothing (left) to poll."""
    if not tracker.active:
        return None
    cap = policy.cap if tracker.push_healthy else policy.unhealthy_cap
    return min(cap, policy.first * 2.0 ** min(tracker.quiet_polls, 32))
