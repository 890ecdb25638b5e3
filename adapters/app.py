"""The application behind the bridge, the control socket and the webhook endpoint.

For a client request (already shape-checked by the codec) it applies the rest of the contract's
validation order that needs no flow state in memory: `not_found` (the journal's "id" alias
namespace), then `forbidden` (the flow token; the API key for `create_flow` and
`attach_booking`). Then it hands the command to the flow's actor as a `ClientCommand` and awaits
its reply; the actor checks `version_conflict` and `invalid_transition`, persists, and answers.
`create_flow` goes straight to a new flow actor: its append binds the flow's aliases or is
refused, so the journal is read only for a refused create (a repeated key, a taken pre_id).

`join` is answered from the journal: every status after `since` (each the fold of the events up
to its version), then the current one. The session joins the flow's room BEFORE the journal is
read, so a status published meanwhile is buffered for it by the socket manager and released
after the reply, deduplicated by version: no gap, no repeat (see actors/socket_core.py).
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog

from actors.commands import Ack, Command, Created, CreateFlow, FlowRequest, Join, Leave, Reply
from actors.flow_core import Flow, apply, event_from_record
from actors.flow_journal import resolve_flow
from actors.flow_view import status_view
from actors.messages import IDEMPOTENCY_NAMESPACE, ClientCommand, StatusPublisher
from actors.provider import ProviderEvent
from actors.socket_manager import SocketManager
from actors.tokens import flow_token, verify_token
from adapters.codec import encode_status
from adapters.loop_handoff import handoff_for
from adapters.metrics import Metrics
from adapters.session import Session
from runtime.dispatcher import as_asyncio
from runtime.errors import (
    AliasConflict,
    Forbidden,
    Internal,
    NotFound,
    Overloaded,
    PayflowError,
    VersionConflict,
)
from runtime.journal import Journal
from runtime.system import ActorSystem

FLOW_ID_PREFIX = "flw_"
REPLY_TIMEOUT_S = 30.0  # a flow actor answers in milliseconds; this only bounds a lost reply
_PROVEN_PER_SESSION = 256  # (flow_id, token) pairs a connection keeps as already verified


def _log() -> Any:
    return structlog.get_logger("payflowd.app")


class DomainPort(Protocol):
    """What the application needs of adapters/domain.py's `Domain`."""

    def send(self, flow_id: str, message: object) -> None: ...

    def create(self, flow_id: str, message: object) -> None: ...

    def route_provider_event(self, event: ProviderEvent) -> bool: ...


class App:
    """`RequestHandler` for the bridge and the provider-event sink (webhooks, feeds)."""

    def __init__(
        self,
        *,
        journal: Journal,
        domain: DomainPort,
        sockets: SocketManager,
        system: ActorSystem,
        metrics: Metrics,
        token_secret: str,
        api_key: str | None = None,
    ) -> None:
        self._journal = journal
        self._domain = domain
        self._sockets = sockets
        self._system = system
        self._metrics = metrics
        self._secret = token_secret
        self._api_key = api_key
        self._replies: _Replies | None = None
        self.draining = False

    # --- RequestHandler ------------------------------------------------------------------------

    async def opened(self, session: Session) -> None:
        self._sockets.opened(session, _remote(session))

    async def closed(self, session: Session) -> None:
        session.joined.clear()
        self._sockets.closed(session.id)

    async def handle(self, session: Session, command: Command) -> Reply | Mapping[str, Any]:
        # The dispatch is inlined: a coroutine level costs a frame per request and per resume.
        try:
            if isinstance(command, CreateFlow):
                return await self._create(session, command)
            flow_id = resolve_flow(self._journal, command.id)
            if isinstance(command, Leave):
                return self._leave(session, flow_id, command.expect_version)
            self._authorise(session, flow_id, command)
            if isinstance(command, Join):
                return await self._join(session, flow_id, command)
            reply = await self._ask(flow_id, command)
            if not isinstance(reply, Ack):
                raise Internal(f"flow answered {type(reply).__name__} to {command.TYPE}")
        except PayflowError as error:
            self._metrics.error(error.code)
            raise
        return reply

    def _authorise(self, session: Session, flow_id: str, command: FlowRequest) -> None:
        """`forbidden` unless the token is the flow's (and the API key, for attach_booking).

        A pair this connection already proved is not hashed again: a client sends the same
        token with every command, and the HMAC was ~2% of the loop thread. Only proven pairs are
        kept, so a wrong token is always hashed and compared, and refused."""
        proven = (flow_id, command.token)
        if proven not in session.verified:
            if not verify_token(self._secret, flow_id, command.token):
                raise Forbidden("missing or wrong token for this flow")
            if len(session.verified) >= _PROVEN_PER_SESSION:
                session.verified.clear()  # bounded; a flow dropped here is just hashed again
            session.verified.add(proven)
        if command.TYPE == "attach_booking":
            self._check_api_key(getattr(command, "api_key", None))

    def _check_api_key(self, given: str | None) -> None:
        expected = self._api_key
        if expected is not None and not (
            given is not None and secrets.compare_digest(given.encode(), expected.encode())
        ):
            raise Forbidden("this request needs the daemon's API key")

    async def _ask(self, flow_id: str, command: Command, *, new: bool = False) -> object:
        """Hand the command to the flow actor and await its one reply without blocking the loop
        (`new`: start the actor of a flow_id just made up, see `DomainPort.create`)."""
        replies = self._replies_on(asyncio.get_running_loop())
        answer, reply = replies.expect()
        try:
            message = ClientCommand(command=command, reply=reply)
            (self._domain.create if new else self._domain.send)(flow_id, message)
            result = await answer
        finally:
            replies.forget(answer)
        if isinstance(result, PayflowError):
            raise result
        return result

    def _replies_on(self, loop: asyncio.AbstractEventLoop) -> _Replies:
        replies = self._replies
        if replies is None or replies.loop is not loop:
            replies = self._replies = _Replies(loop)
        return replies

    # --- create, join, leave -------------------------------------------------------------------

    async def _create(self, session: Session, command: CreateFlow) -> Created:
        """Create first, read only if refused: the append binds the flow's aliases atomically
        and is refused (`AliasConflict`) if one is taken, so the common create reads nothing."""
        self._check_api_key(command.api_key)
        if self.draining:
            return self._created_for(session, self._earlier_flow_or_refuse(command))
        flow_id = FLOW_ID_PREFIX + secrets.token_urlsafe(16)
        try:
            reply = await self._ask(flow_id, command, new=True)
        except PayflowError:
            # A repeated idempotency key (an earlier or a racing create) returns that flow; a
            # pre_id taken without it is `conflict`; anything else stands as it was refused.
            existing = self._idempotent_flow(command)
            if existing is None:
                raise
            return self._created_for(session, existing)
        if not isinstance(reply, Created):
            raise Internal(f"flow answered {type(reply).__name__} to create_flow")
        self._follow(session, flow_id, reply.version)
        return reply  # its token is the flow's, made with the domain's secret: the one we hold

    def _earlier_flow_or_refuse(self, command: CreateFlow) -> str:
        """While draining, a repeated create still gets its flow; a new one is refused."""
        existing = self._idempotent_flow(command)
        if existing is None:
            raise Overloaded("the daemon is draining and takes no new flows")
        return existing

    def _idempotent_flow(self, command: CreateFlow) -> str | None:
        """The flow an earlier create with this key made; a pre_id taken without it: conflict."""
        key = command.idempotency_key
        if key is not None:
            flow_id = self._journal.resolve(key, IDEMPOTENCY_NAMESPACE)
            if flow_id is not None:
                return flow_id
        if command.pre_id is not None and self._journal.resolve(command.pre_id) is not None:
            raise AliasConflict(f"pre_id {command.pre_id!r} is already bound to another flow")
        return None

    def _created_for(self, session: Session, flow_id: str) -> Created:
        head = self._journal.head(flow_id)
        if head is None:
            raise Internal(f"idempotency key bound to a flow without events: {flow_id}")
        self._follow(session, flow_id, head.version)
        token = flow_token(self._secret, flow_id)
        return Created(flow_id=flow_id, token=token, state=head.tag or "", version=head.version)

    def _follow(self, session: Session, flow_id: str, version: int) -> None:
        """Join the creating connection to its flow, live from `version` on."""
        session.joined.add(flow_id)
        self._sockets.begin_join(session, flow_id)
        # After the bridge queued `created` (see `_join`): a later status never overtakes it.
        asyncio.get_running_loop().call_soon(
            self._sockets.finish_join, session.id, flow_id, version
        )

    async def _join(self, session: Session, flow_id: str, command: Join) -> Mapping[str, Any]:
        await as_asyncio(self._sockets.begin_join(session, flow_id))
        try:
            current, missed = await asyncio.to_thread(
                self._views, flow_id, command.since, command.expect_version
            )
        except BaseException:
            self._sockets.leave(session.id, flow_id)
            raise
        for view in missed:
            session.send(encode_status(view))
        session.joined.add(flow_id)
        # call_soon runs after this coroutine's caller has queued our reply on the session (no
        # await lies between), so statuses buffered during the catch-up follow the reply.
        asyncio.get_running_loop().call_soon(
            self._sockets.finish_join, session.id, flow_id, current["version"]
        )
        return current

    def _views(
        self, flow_id: str, since: int | None, expect_version: int | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The current status, and every status with since < version < current, oldest first."""
        flow = Flow.initial(flow_id)
        missed: list[dict[str, Any]] = []
        for stored in self._journal.events(flow_id):
            flow = apply(flow, event_from_record(stored.kind, stored.payload, stored.at))
            if since is not None and since < flow.version:
                missed.append(status_view(flow))
        if flow.version == 0:
            raise NotFound(f"flow {flow_id!r} has no events")
        if expect_version not in (None, flow.version):
            raise VersionConflict(f"flow is at version {flow.version}")
        current = missed.pop() if missed else status_view(flow)
        return current, missed

    def _leave(self, session: Session, flow_id: str, expect_version: int | None) -> Ack:
        head = self._journal.head(flow_id)
        version = head.version if head is not None else 0
        if expect_version not in (None, version):  # refused like any command: nothing changes
            raise VersionConflict(
                f"flow is at version {version}, not {expect_version}",
                expected=expect_version,
                actual=version,
            )
        session.joined.discard(flow_id)
        self._sockets.leave(session.id, flow_id)
        return Ack(flow_id=flow_id, version=version)

    # --- provider events (webhooks, feeds, dummy pushes) ----------------------------------------

    def start_draining(self) -> None:
        """Refuse new flows from now on; flows already running carry on (`payflowctl drain`)."""
        self.draining = True
        _log().info("draining")

    async def deliver_event(self, event: ProviderEvent) -> bool:
        """The event sink of the feeds and the webhook endpoint: route it to the flow's tracker
        (False: no flow knows its intent). Routing reads the journal, so it runs off the loop."""
        return await asyncio.to_thread(self._domain.route_provider_event, event)


class _Replies:
    """The flow replies awaited on one loop, and ONE timer bounding them all.

    `asyncio.timeout` per request cost a Timeout, a timer handle in the loop's heap and its
    cancellation: about as much again as the rest of an ask. Every reply is given the same
    `REPLY_TIMEOUT_S`, so the deadlines, kept in insertion order, are also in deadline order:
    a sweep every `_SWEEP_S` expires the overdue ones from the front and stops at the first that
    is not. A reply is lost only if its actor failed while handling it (a bug)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._handoff = handoff_for(loop)  # replies of many flows share one loop wake-up
        self._deadlines: dict[asyncio.Future[object], float] = {}
        self._sweep: asyncio.TimerHandle | None = None

    def expect(self) -> tuple[asyncio.Future[object], Callable[[object], None]]:
        """A future for one reply, and the callback (any thread) that settles it."""
        answer: asyncio.Future[object] = self.loop.create_future()
        self._deadlines[answer] = self.loop.time() + REPLY_TIMEOUT_S
        if self._sweep is None:
            self._sweep = self.loop.call_later(_SWEEP_S, self._expire_overdue)
        # A partial, not a closure: one Python frame less on the dispatcher per reply.
        return answer, functools.partial(self._handoff.call, _settle, answer)

    def forget(self, answer: asyncio.Future[object]) -> None:
        self._deadlines.pop(answer, None)

    def _expire_overdue(self) -> None:
        now = self.loop.time()
        overdue = []
        for answer, deadline in self._deadlines.items():
            if deadline > now:
                break
            overdue.append(answer)
        for answer in overdue:
            del self._deadlines[answer]
            if not answer.done():
                answer.set_exception(Internal(f"no reply from the flow in {REPLY_TIMEOUT_S} s"))
        self._sweep = (
            self.loop.call_later(_SWEEP_S, self._expire_overdue) if self._deadlines else None
        )


_SWEEP_S = 1.0


class MeteredPublisher:
    """`StatusPublisher` that times each flow's state changes, then hands the status on.

    Every persisted version is published (whether or not anyone watches), so the time between
    two statuses of different states is the time the flow spent in the first one.

    No lock: a flow's statuses come from its one actor, one message at a time (a new incarnation
    starts after the old one stopped), so an entry is never touched by two threads at once, and
    each dict operation on it is atomic."""

    def __init__(self, inner: StatusPublisher, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._entered: dict[str, tuple[str, float]] = {}

    def publish(self, flow_id: str, view: Mapping[str, Any]) -> None:
        state = view["state"]
        previous = self._entered.get(flow_id)
        if previous is None or previous[0] != state:
            at = view["updated_at"] or 0.0
            if state in _FINISHED_STATES:
                if previous is not None:
                    del self._entered[flow_id]
            else:
                self._entered[flow_id] = (state, at)
            if previous is not None:
                self._metrics.observe_transition(previous[0], state, max(at - previous[1], 0.0))
        self._inner.publish(flow_id, view)


_FINISHED_STATES = frozenset({"COMPLETED", "CANCELLED", "EXPIRED"})


def _settle(answer: asyncio.Future[object], result: object) -> None:
    if not answer.done():
        answer.set_result(result)


def _remote(session: Session) -> str:
    remote = session.remote
    if isinstance(remote, tuple) and len(remote) >= 2:
        return f"{remote[0]}:{remote[1]}"
    return str(remote)
