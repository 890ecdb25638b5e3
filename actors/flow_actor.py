"""The `PaymentFlow` actor: the one owner of a flow's state, a thin shell around flow_process.

It loads its flow from the journal when it starts (snapshot + later events, see
actors/flow_journal.py, which also builds the append a decision becomes) and sets going
whatever the persisted state was waiting for (`flow_process.resume`); a flow started for a
create (`brand_new`: its id was just made, the journal cannot hold anything of it) skips that.
Each message becomes a `Decision`; the decision's events go to the group committer WITHOUT
blocking the dispatcher, and until the append is durable (`_Persisted` comes back as a message)
every other message waits in a stash, in order. Once durable: update the state, reply, publish,
then act. Effects never run before their cause is on disk.

Passivation is refused while anything only this instance remembers is pending: an append, a
provider call, a retry timer, the preservation timer, or attached clients (their presence is not
persisted, so the flow stays live while anyone watches it). A flow loaded again after a restart
has no clients, and `resume` starts its preservation window.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pykka
import structlog

from actors import flow_process as fp
from actors.commands import Ack, Created, CreateFlow
from actors.flow_core import EventType, Flow, status_view
from actors.flow_journal import STATE_NAMES, append_request, load_flow
from actors.messages import (
    ClientCommand,
    ClientPresence,
    EffectRunner,
    ProviderCall,
    ProviderObservation,
    ProviderOp,
    ProviderResult,
    StatusPublisher,
    StopTracking,
    TerminalNotifier,
    TrackIntent,
)
from actors.tokens import flow_token
from runtime import failpoints
from runtime.actor import Actor
from runtime.errors import Internal, PayflowError, VersionConflict
from runtime.group_commit import GroupCommitter, Outcome
from runtime.journal import Journal
from runtime.scheduler import Scheduler, TimerHandle

# One proxy per module: binding it per actor is cheap, a fresh get_logger per actor was not
# (a visible cost of starting a flow's two actors, profiled under payflow-bench).
_LOG = structlog.get_logger(__name__)


FAILPOINT_BEFORE_PROVIDER_CALL = "after_persist_before_provider_call"


@dataclass(frozen=True, slots=True, kw_only=True)
class Wake:
    """Load the flow (and resume it) without asking anything else: `Domain.recover` sends it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpiryDue:
    generation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryCall:
    call: ProviderCall


@dataclass(frozen=True, slots=True, kw_only=True)
class _Persisted:
    outcome: Outcome  # the new version, or why the append was refused


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowDeps:
    """Everything a flow actor talks to; one instance shared by every flow."""

    journal: Journal
    committer: GroupCommitter
    effects: EffectRunner
    publisher: StatusPublisher
    tell_tracker: Callable[[str, object], None]
    scheduler: Scheduler
    token_secret: str = ""
    notifier: TerminalNotifier | None = None
    retry_limit: int = 1
    preserve_window: float = 300.0
    call_retry_delay: float = 2.0
    snapshot_every: int = 20
    clock: Callable[[], float] = time.time
    # The limits above as a decision context, built once: each message takes it `at` its time.
    limits: fp.Context = field(init=False)

    def __post_init__(self) -> None:
        limits = fp.Context(
            now=0.0,
            retry_limit=self.retry_limit,
            preserve_window=self.preserve_window,
            call_retry_delay=self.call_retry_delay,
        )
        object.__setattr__(self, "limits", limits)  # a frozen dataclass sets fields this way


@dataclass(slots=True)
class _Append:
    before: Flow
    decision: fp.Decision
    command: ClientCommand | None


class _Unbounded:
    """Answers to our own calls and appends skip the mailbox bound: they are bounded by what we
    asked for, and dropping one would leave the flow waiting forever."""

    def __init__(self, actor: Actor) -> None:
        self._cell = actor.actor_ref.cell

    def tell(self, message: object) -> None:
        # Runs on the committer and loop threads for every append and provider answer: a plain
        # try costs nothing when nothing is raised, `contextlib.suppress` builds an object.
        try:  # noqa: SIM105 - see above
            self._cell.post_unbounded(message)
        except pykka.ActorDeadError:
            pass  # stopped meanwhile: the next incarnation re-derives it from the journal


class FlowActor(Actor):
    def __init__(self, flow_id: str, deps: FlowDeps, *, brand_new: bool = False) -> None:
        super().__init__()
        self.flow_id = flow_id
        self._load_on_start = not brand_new
        self.flow = Flow.initial(flow_id)
        self._deps = deps
        self._append: _Append | None = None
        self._stash: deque[Any] = deque()
        self._calls: set[str] = set()
        self._retries: dict[str, TimerHandle] = {}
        self._expiry: TimerHandle | None = None
        self._expiry_generation = 0
        self._attached = False
        self._self = _Unbounded(self)
        self._log = _LOG.bind(flow_id=flow_id)

    # --- lifecycle ------------------------------------------------------------------------------

    def on_start(self) -> None:
        if self._load_on_start:  # else: an initial flow has nothing stored and nothing to resume
            self.flow = load_flow(self._deps.journal, self.flow_id)
            self._act(fp.resume(self.flow, self._ctx()), ())

    def on_stop(self) -> None:
        self._cancel_expiry()
        for handle in self._retries.values():
            handle.cancel()

    def can_passivate(self) -> bool:
        busy = self._append or self._stash or self._calls or self._retries or self._expiry
        return not busy and not self._attached

    def _ctx(self) -> fp.Context:
        deps = self._deps
        return deps.limits.at(deps.clock())

    # --- messages -------------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Persisted):
            self._on_persisted(message.outcome)
        elif self._append is not None:
            self._stash.append(message)
        else:
            self._handle(message)
        while self._append is None and self._stash:
            self._handle(self._stash.popleft())

    def _handle(self, message: Any) -> None:
        ctx = self._ctx()
        match message:
            case ClientCommand():
                self._command(message, ctx)
            case ClientPresence():
                self._attached = message.attached
                self._decided(fp.on_presence(self.flow, message.attached, ctx))
            case ProviderObservation():
                self._decided(fp.on_observation(self.flow, message, ctx))
            case ProviderResult():
                self._provider_result(message, ctx)
            case ExpiryDue():
                self._expiry_due(message, ctx)
            case RetryCall():
                self._retries.pop(message.call.idempotency_key or "", None)
                if fp.is_pending(self.flow, message.call):
                    self._call(message.call)
            case Wake():
                pass  # loading the flow (on_start) was the point
            case _:
                super().on_receive(message)

    def _command(self, message: ClientCommand, ctx: fp.Context) -> None:
        decision = fp.decide(self.flow, message.command, ctx)
        if decision.error is not None:
            self._reply(message, decision.error)
            return
        self._decided(decision, message)

    def _provider_result(self, result: ProviderResult, ctx: fp.Context) -> None:
        call = result.call
        self._calls.discard(call.idempotency_key or "")
        if result.error is not None:
            self._log.warning(
                "provider_call_failed",
                op=call.op.value,
                error_code=result.error.code,
                error=str(result.error),
            )
        self._decided(fp.on_provider_result(self.flow, result, ctx))

    def _expiry_due(self, message: ExpiryDue, ctx: fp.Context) -> None:
        if message.generation != self._expiry_generation or self._attached:
            return  # a client came back, or a newer window replaced this one
        self._expiry = None
        self._decided(fp.on_expiry(self.flow, ctx))

    # --- persisting -----------------------------------------------------------------------------

    def _decided(self, decision: fp.Decision, command: ClientCommand | None = None) -> None:
        if not decision.events:
            if command is not None:  # accepted with nothing to persist (a repeated cancel)
                self._reply(command, self._success(command))
            self._act(decision.effects, ())
            return
        request = append_request(self.flow_id, self.flow, decision, self._deps.snapshot_every)
        self._append = _Append(before=self.flow, decision=decision, command=command)
        self._deps.committer.submit_then(
            request, lambda outcome: self._self.tell(_Persisted(outcome=outcome))
        )

    def _on_persisted(self, outcome: Outcome) -> None:
        pending, self._append = self._append, None
        if pending is None:
            raise Internal("an append completed that this flow did not start")
        if isinstance(outcome, PayflowError):
            self._append_failed(pending, outcome)
            return
        if isinstance(outcome, BaseException):
            raise outcome  # the journal failed: the supervisor restarts us from the journal
        steps = pending.decision.steps
        self.flow = steps[-1]
        self._log_events(pending.decision, steps)
        if pending.command is not None:
            self._reply(pending.command, self._success(pending.command))
        self._act(pending.decision.effects, steps)

    def _append_failed(self, pending: _Append, error: PayflowError) -> None:
        if pending.before.version == 0:
            # A create refused, mostly on an alias (a repeated idempotency key or pre_id): the
            # application answers it from the journal; this instance has nothing to look after.
            self._log.info("create_refused", error_code=error.code)
        else:
            self._log.warning("append_refused", error_code=error.code, error=str(error))
        if pending.command is not None:
            self._reply(pending.command, error)
        if isinstance(error, VersionConflict) or pending.command is None:
            # Our copy may be stale, or the provider's news was lost: reload and re-derive the
            # pending call and the tracking (the tracker resends what the flow has not got).
            self.flow = load_flow(self._deps.journal, self.flow_id)
            resync = (*fp.pending_calls(self.flow), *_tracking(self.flow))
            self._act(resync, ())
        if self.flow.version == 0:
            # No flow exists under this id: leave now (if idle, as any passivation) rather than
            # linger until the idle sweep, counted among the live flows.
            self._cell.request_passivation(0.0)

    # --- replies and logs ---------------------------------------------------------------------

    def _success(self, message: ClientCommand) -> Created | Ack:
        command, flow = message.command, self.flow
        if isinstance(command, CreateFlow):
            token = flow_token(self._deps.token_secret, flow.flow_id)
            return Created(
                ref=command.ref,
                flow_id=flow.flow_id,
                token=token,
                state=flow.state.value,
                version=flow.version,
            )
        return Ack(ref=command.ref, flow_id=flow.flow_id, version=flow.version)

    def _reply(self, message: ClientCommand, answer: object) -> None:
        try:
            message.reply(answer)
        except Exception:  # noqa: BLE001 - a vanished client must not take the flow down
            self._log.exception("reply_failed", command=message.command.TYPE)

    def _log_events(self, decision: fp.Decision, steps: Sequence[Flow]) -> None:
        # Keywords passed straight (no facts dict to unpack): eight lines per flow come here.
        info = self._log.info
        for event, flow in zip(decision.events, steps, strict=True):
            name, state = _EVENT_NAMES[event.event_type], STATE_NAMES[flow.state]
            if flow.error is not None:
                self._log_failure(name, flow)
            elif flow.intent_id is not None:
                info(name, version=flow.version, state=state, intent_id=flow.intent_id)
            else:
                info(name, version=flow.version, state=state)

    def _log_failure(self, name: str, flow: Flow) -> None:
        facts: dict[str, Any] = {"version": flow.version, "state": STATE_NAMES[flow.state]}
        if flow.intent_id is not None:
            facts["intent_id"] = flow.intent_id
        if flow.error is not None:
            facts["error_code"] = flow.error.code
        self._log.info(name, **facts)

    # --- effects --------------------------------------------------------------------------------

    def _act(self, effects: Iterable[fp.Effect], steps: Sequence[Flow]) -> None:
        for effect in effects:
            self._effect(effect, steps)

    def _effect(self, effect: fp.Effect, steps: Sequence[Flow]) -> None:
        match effect:
            case fp.Publish():
                for flow in steps:
                    self._deps.publisher.publish(self.flow_id, status_view(flow))
            case ProviderCall():
                self._call(effect)
            case fp.CallLater():
                self._call_later(effect)
            case TrackIntent() | StopTracking():
                self._deps.tell_tracker(self.flow_id, effect)
            case fp.ScheduleExpiry():
                self._schedule_expiry(effect.delay)
            case fp.CancelExpiry():
                self._cancel_expiry()
            case fp.NotifyTerminal():
                self._notify()
            case fp.Alert():
                self._alert(effect)

    def _alert(self, alert: fp.Alert) -> None:
        log = self._log.error if alert.level is fp.AlertLevel.ERROR else self._log.warning
        log(alert.name.value, intent_id=alert.intent_id, provider_status=alert.provider_status)

    def _call(self, call: ProviderCall) -> None:
        key = call.idempotency_key or ""
        if key in self._calls:
            return  # already on its way; the answer will come
        if call.op is not ProviderOp.RETRIEVE_INTENT:
            failpoints.hit(FAILPOINT_BEFORE_PROVIDER_CALL)
        self._log.info("provider_call", op=call.op.value, idempotency_key=key)
        self._calls.add(key)
        self._deps.effects.provider_call(call, self._self)

    def _call_later(self, effect: fp.CallLater) -> None:
        key = effect.call.idempotency_key or ""
        if key not in self._retries:
            message = RetryCall(call=effect.call)
            handle = self._deps.scheduler.schedule_once(effect.delay, self.actor_ref, message)
            self._retries[key] = handle

    def _schedule_expiry(self, delay: float) -> None:
        self._cancel_expiry()
        message = ExpiryDue(generation=self._expiry_generation)
        self._expiry = self._deps.scheduler.schedule_once(delay, self.actor_ref, message)

    def _cancel_expiry(self) -> None:
        self._expiry_generation += 1
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _notify(self) -> None:
        if self._deps.notifier is not None:
            view = status_view(self.flow)
            self._deps.notifier.flow_terminal(view, intent_id=self.flow.intent_id)


# Enum members' `.value` is a Python-level property: read on every event a flow logs.
_EVENT_NAMES: dict[EventType, str] = {kind: kind.value for kind in EventType}


def _tracking(flow: Flow) -> tuple[fp.Effect, ...]:
    return tuple(e for e in fp.resume(flow, fp.Context(now=0.0)) if isinstance(e, TrackIntent))
