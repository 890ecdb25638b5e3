"""The payment domain wired together: flow and tracker entities, the group committer, the
provider effect runner. The composition root (the daemon) and the tests build it the same way,
through `build_domain`, so there is one place where these parts meet.

    domain = build_domain(journal, system, provider, loop, publisher, notifier, settings)
    domain.recover()                          # load every unfinished flow, resume it
    domain.create(flow_id, ClientCommand(...))  # a create, to a flow_id just made up
    domain.send(flow_id, ClientCommand(...))  # the application, after its own checks
    domain.route_provider_event(event)        # webhooks and feeds (the provider's sink is set)
    ...
    system.shutdown(); domain.close()         # actors first: they may still be appending
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from actors.flow_actor import FlowActor, FlowDeps, Wake
from actors.flow_calls import CANCEL_AFTER_END_STATES
from actors.flow_core import FlowState
from actors.messages import (
    INTENT_NAMESPACE,
    PushedStatus,
    PushHealth,
    StatusPublisher,
    TerminalNotifier,
)
from actors.provider import Provider, ProviderEvent
from actors.tokens import TOKEN_SECRET_KEY, new_token_secret
from actors.tracker_actor import TrackerActor, TrackerDeps
from actors.tracker_core import PollPolicy
from adapters.effects import LatencyCallback, ProviderEffects
from runtime.config import Settings
from runtime.entities import EntityRegistry
from runtime.group_commit import GroupCommitter
from runtime.journal import Journal
from runtime.system import ActorSystem

log = structlog.get_logger(__name__)

FLOW_KIND = "flow"
TRACKER_KIND = "tracker"
# Streams tagged with these states have nothing left to do; every other flow is resumed at start.
FINISHED_TAGS = frozenset({FlowState.COMPLETED, FlowState.CANCELLED, FlowState.EXPIRED})
# A flow's stream is tagged with its state; other streams (a feed's position) are not flows.
UNFINISHED_TAGS = frozenset(state.value for state in FlowState) - FINISHED_TAGS
# A flow that just ended may still owe the provider the cancel of its intent (an expiry, a
# cancel answered before; see actors/flow_calls.py), and a crash between the event and the call
# would lose it. Flows that ended this recently are loaded again at start: a cancel already
# sent goes out again with the same key, which the provider answers as before (Stripe keeps
# idempotency keys for 24 h), and older ones are left alone, so a start does not grow with
# every flow that ever ended.
RECENTLY_ENDED_S = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainSettings:
    preserve_window: float = 300.0
    retry_limit: int = 1
    call_retry_delay: float = 2.0  # after the runner's own retries, before sending again
    snapshot_every: int = 20
    flow_idle_after: float = 60.0  # passivate a flow idle this long (if it may)
    tracker_idle_after: float = 60.0
    poll: PollPolicy = field(default_factory=PollPolicy)

    @classmethod
    def from_settings(cls, settings: Settings) -> DomainSettings:
        return cls(preserve_window=settings.preserve_window, retry_limit=settings.retry_limit)


class Domain:
    """The running domain. `flows` and `trackers` are entity registries keyed by flow_id."""

    flows: EntityRegistry[FlowActor]
    trackers: EntityRegistry[TrackerActor]
    new_flow: Callable[[str], FlowActor]  # the first incarnation of a flow that `create` starts

    def __init__(
        self,
        *,
        journal: Journal,
        committer: GroupCommitter,
        effects: ProviderEffects,
        token_secret: str,
    ) -> None:
        self.journal = journal
        self.committer = committer
        self.effects = effects
        self.token_secret = token_secret
        self.push_healthy = True

    def send(self, flow_id: str, message: object) -> None:
        """Deliver `message` to the flow's actor, loading the flow if it is not live."""
        self.flows.tell(flow_id, message)

    def create(self, flow_id: str, message: object) -> None:
        """Start the actor of a flow whose id was just made up, and deliver `message` (its
        create) to it. The journal cannot hold anything under a fresh id, so it loads nothing;
        a create refused on a taken alias leaves no actor behind (see `FlowActor`)."""
        self.flows.spawn(flow_id, message, self.new_flow)

    def route_provider_event(self, event: ProviderEvent) -> bool:
        """Hand a pushed provider event to the tracker of the flow owning its intent.
        False for an intent no flow knows (answered 2xx all the same). May read the journal."""
        flow_id = self.journal.resolve(event.intent_id, INTENT_NAMESPACE)
        if flow_id is None:
            log.info("provider_event_unrouted", intent_id=event.intent_id, status=event.status)
            return False
        self.trackers.tell(flow_id, PushedStatus(event=event))
        return True

    async def provider_event_sink(self, event: ProviderEvent) -> None:
        """The provider's event sink (`Provider.set_event_sink`). An intent this process bound
        is routed at once; any other needs a journal read, which runs off the event loop."""
        flow_id = self.journal.resolve_known(event.intent_id, INTENT_NAMESPACE)
        if flow_id is not None:
            self.trackers.tell(flow_id, PushedStatus(event=event))
        else:
            await asyncio.to_thread(self.route_provider_event, event)

    def set_push_health(self, healthy: bool) -> None:
        """Push channels came up or went down: live trackers adjust their polling."""
        self.push_healthy = healthy
        for flow_id in self.trackers.live_ids():
            self.trackers.tell(flow_id, PushHealth(healthy=healthy))

    def recover(self) -> int:
        """Load every unfinished flow so it resumes (pending calls, tracking, expiry), and the
        recently ended ones that may still owe a cancel; returns how many were unfinished."""
        unfinished = self.journal.heads(tags=UNFINISHED_TAGS)
        since = time.time() - RECENTLY_ENDED_S
        ended = self.journal.heads(tags=CANCEL_AFTER_END_STATES, updated_since=since)
        for head in (*unfinished, *ended):
            self.flows.tell(head.stream_id, Wake())
        log.info("flows_recovered", count=len(unfinished), recently_ended=len(ended))
        return len(unfinished)

    def close(self) -> None:
        """Stop the passivation sweeps and commit what is queued. Call after the actor system
        has stopped (a flow may append until then)."""
        self.flows.close()
        self.trackers.close()
        self.committer.close()


def build_domain(  # noqa: PLR0917 (the composition root's agreed positional signature)
    journal: Journal,
    system: ActorSystem,
    provider: Provider,
    loop: asyncio.AbstractEventLoop,
    publisher: StatusPublisher,
    notifier: TerminalNotifier | None,
    settings: DomainSettings,
    *,
    on_latency: LatencyCallback | None = None,
) -> Domain:
    """Wire the domain onto `system`; provider calls run on `loop`, pushes are routed."""
    domain = Domain(
        journal=journal,
        committer=GroupCommitter(journal),
        effects=ProviderEffects(provider, loop, on_latency=on_latency),
        token_secret=journal.meta(TOKEN_SECRET_KEY, new_token_secret),
    )
    flow_deps = _flow_deps(domain, system, publisher, notifier, settings)
    tracker_deps = TrackerDeps(
        effects=domain.effects,
        scheduler=system.scheduler,
        tell_flow=_later(lambda: domain.flows.tell),
        policy=settings.poll,
        push_healthy=lambda: domain.push_healthy,
    )
    domain.flows = system.entities(
        FLOW_KIND, lambda fid: FlowActor(fid, flow_deps), idle_after=settings.flow_idle_after
    )
    domain.new_flow = lambda fid: FlowActor(fid, flow_deps, brand_new=True)
    domain.trackers = system.entities(
        TRACKER_KIND,
        lambda fid: TrackerActor(fid, tracker_deps),
        idle_after=settings.tracker_idle_after,
    )
    provider.set_event_sink(domain.provider_event_sink)
    return domain


def _flow_deps(
    domain: Domain,
    system: ActorSystem,
    publisher: StatusPublisher,
    notifier: TerminalNotifier | None,
    settings: DomainSettings,
) -> FlowDeps:
    return FlowDeps(
        journal=domain.journal,
        committer=domain.committer,
        effects=domain.effects,
        publisher=publisher,
        tell_tracker=_later(lambda: domain.trackers.tell),
        scheduler=system.scheduler,
        token_secret=domain.token_secret,
        notifier=notifier,
        retry_limit=settings.retry_limit,
        preserve_window=settings.preserve_window,
        call_retry_delay=settings.call_retry_delay,
        snapshot_every=settings.snapshot_every,
    )


def _later(resolve: Callable[[], Callable[[str, Any], None]]) -> Callable[[str, object], None]:
    """A tell into a registry built after the deps that need it (flows and trackers know
    each other)."""

    def tell(entity_id: str, message: object) -> None:
        resolve()(entity_id, message)

    return tell
