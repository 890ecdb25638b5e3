"""The `StatusTracker` actor: one per tracked flow, the only poller of its intent.

It polls the provider through the `EffectRunner` on scheduler timers (one pending timer at a
time, cancelled when tracking stops), takes pushed events (webhooks, feeds, dummy pushes) as
`PushedStatus`, merges both with `tracker_core.ingest`, and tells the flow only real forward
changes as `ProviderObservation`. A push that needs details a push cannot carry (next_action,
last_error) triggers an immediate poll instead of being forwarded bare.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from actors import tracker_core as tc
from actors.messages import (
    EffectRunner,
    ProviderCall,
    ProviderObservation,
    ProviderOp,
    ProviderResult,
    PushedStatus,
    PushHealth,
    StopTracking,
    TrackIntent,
)
from runtime.actor import Actor
from runtime.scheduler import Scheduler, TimerHandle

# One proxy per module: binding it per actor is cheap, a fresh get_logger per actor was not
# (a visible cost of starting a flow's two actors, profiled under payflow-bench).
_LOG = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Poll:
    generation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerDeps:
    effects: EffectRunner
    scheduler: Scheduler
    tell_flow: Callable[[str, object], None]
    policy: tc.PollPolicy = field(default_factory=tc.PollPolicy)
    push_healthy: Callable[[], bool] = lambda: True
    clock: Callable[[], float] = time.time


class TrackerActor(Actor):
    def __init__(self, flow_id: str, deps: TrackerDeps) -> None:
        super().__init__()
        self.flow_id = flow_id
        self._deps = deps
        self.tracker = tc.idle(push_healthy=deps.push_healthy())
        self._timer: TimerHandle | None = None
        self._generation = 0
        self._polling = False
        self._log = _LOG.bind(flow_id=flow_id)

    def on_stop(self) -> None:
        self._cancel_timer()

    def can_passivate(self) -> bool:
        return not self.tracker.active and not self._polling

    def on_receive(self, message: Any) -> Any:
        match message:
            case TrackIntent():
                self.tracker = tc.track(self.tracker, message.intent_id, message.status)
                self._schedule()
            case StopTracking():
                self.tracker = tc.stop(self.tracker)
                self._cancel_timer()
            case PushHealth():
                self.tracker = tc.with_push_health(self.tracker, message.healthy)
                self._schedule()
            case PushedStatus():
                self._pushed(message)
            case Poll():
                if message.generation == self._generation:
                    self._poll()
            case ProviderResult():
                self._polled(message)
            case _:
                super().on_receive(message)

    def _pushed(self, message: PushedStatus) -> None:
        event = message.event
        if event.status in tc.DETAIL_STATUSES and event.intent_id == self.tracker.intent_id:
            self.tracker, new = tc.remember(self.tracker, event.event_id)
            if new and self.tracker.active:
                self._poll()
            return
        report = tc.Report(
            intent_id=event.intent_id,
            status=event.status,
            created=event.created,
            event_id=event.event_id,
        )
        self._ingest(report, source=event.source)

    def _poll(self) -> None:
        intent_id = self.tracker.intent_id
        if self._polling or intent_id is None or not self.tracker.active:
            return
        self._cancel_timer()
        self._polling = True
        call = ProviderCall(
            op=ProviderOp.RETRIEVE_INTENT, flow_id=self.flow_id, intent_id=intent_id
        )
        self._deps.effects.provider_call(call, self.actor_ref)

    def _polled(self, result: ProviderResult) -> None:
        self._polling = False
        intent = result.intent
        if intent is None:
            code = result.error.code if result.error is not None else "none"
            self._log.warning("poll_failed", error_code=code)
            self.tracker = tc.polled(self.tracker)
        else:
            report = tc.Report(
                intent_id=intent.intent_id,
                status=intent.status,
                created=self._deps.clock(),
                next_action=intent.next_action,
                error=intent.last_error,
            )
            if not self._ingest(report, source="poll"):
                self.tracker = tc.polled(self.tracker)
        self._schedule()

    def _ingest(self, report: tc.Report, *, source: str) -> bool:
        self.tracker, forward = tc.ingest(self.tracker, report)
        if forward is None:
            return False
        self._log.info("provider_status_seen", status=forward.status, source=source)
        observation = ProviderObservation(
            intent_id=forward.intent_id,
            status=forward.status,
            next_action=forward.next_action,
            error=forward.error,
            source=source,
        )
        self._deps.tell_flow(self.flow_id, observation)
        return True

    def _schedule(self) -> None:
        self._cancel_timer()
        delay = tc.next_poll_delay(self.tracker, self._deps.policy)
        if delay is not None and not self._polling:
            message = Poll(generation=self._generation)
            self._timer = self._deps.scheduler.schedule_once(delay, self.actor_ref, message)

    def _cancel_timer(self) -> None:
        self._generation += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
