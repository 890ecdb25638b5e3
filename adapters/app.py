"""The application behind the bridge, the control socket and the webhook endpoint.

For a client request (already shape-checked by the codec) it applies the rest of the contract's
validation order that needs no flow state in memory: `not_found` (the journal's "id" alias
namespace), then `forbidden` (the flow token; the API key for `create_flow` and
`attach_booking`). Then it hands the command to the flow's actor as a `ClientCommand` and awaits
its reply; the actor checks `version_conflict` and `invalid_transition`, persists, and answers.

`join` is answered from the journal: every status after `since` (each the fold of the events up
to its version), then the current one. The session joins the flow's room BEFORE the journal is
read, so a status published meanwhile is buffered for it by the socket manager and released
after the reply, deduplicated by version: no gap, no repeat (see actors/socket_core.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import structlog

from actors.commands import Ack, Command, Created, CreateFlow, FlowRequest, Join, Leave, Reply
from actors.flow_actor import resolve_flow
from actors.flow_core import Flow, apply, event_from_record
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


def _log() -> Any:
    return structlog.get_logger("payflowd.app")


class DomainPort(Protocol):
    """What the application needs of adapters/domain.py's `Domain`."""

    def send(self, flow_id: str, message: object) -> None: ...

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
        self.draining = False

    # --- RequestHandler ------------------------------------------------------------------------

    async def opened(self, session: Session) -> None:
        self._sockets.opened(session, _remote(session))

    async def closed(self, session: Session) -> None:
        session.joined.clear()
        self._sockets.closed(session.id)

    async def handle(self, session: Session, command: Command) -> Reply | Mapping[str, Any]:
        try:
            return await self._dispatch(session, command)
        except PayflowError as error:
            self._metrics.error(error.code)
            raise

    async def _dispatch(self, session: Session, command: Command) -> Reply | Mapping[str, Any]:
        if isinstance(command, CreateFlow):
            return await self._create(session, command)
        flow_id = resolve_flow(self._journal, command.id)
        if isinstance(command, Leave):
            return self._leave(session, flow_id)
        self._authorise(flow_id, command)
        if isinstance(command, Join):
            return await self._join(session, flow_id, command)
        reply = await self._ask(flow_id, command)
        if not isinstance(reply, Ack):
            raise Internal(f"flow answered {type(reply).__name__} to {command.TYPE}")
        return reply

    def _authorise(self, flow_id: str, command: FlowRequest) -> None:
        if not verify_token(self._secret, flow_id, command.token):
            raise Forbidden("missing or wrong token for this flow")
        if command.TYPE == "attach_booking":
            self._check_api_key(getattr(command, "api_key", None))

    def _check_api_key(self, given: str | None) -> None:
        expected = self._api_key
        if expected is not None and not (
            given is not None and secrets.compare_digest(given.encode(), expected.encode())
        ):
            raise Forbidden("this request needs the daemon's API key")

    async def _ask(self, flow_id: str, command: Command) -> object:
        """Hand the command to the flow actor and await its one reply without blocking the loop."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[object] = loop.create_future()
        handoff = handoff_for(loop)  # replies of many flows share one loop wake-up

        def reply(result: object) -> None:
            handoff.call(_settle, answer, result)

        self._domain.send(flow_id, ClientCommand(command=command, reply=reply))
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            result = await answer
        if isinstance(result, PayflowError):
            raise result
        return result

    # --- create, join, leave -------------------------------------------------------------------

    async def _create(self, session: Session, command: CreateFlow) -> Created:
        self._check_api_key(command.api_key)
        existing = self._idempotent_flow(command)
        if existing is None:
            if self.draining:
                raise Overloaded("the daemon is draining and takes no new flows")
            flow_id = FLOW_ID_PREFIX + secrets.token_urlsafe(16)
            try:
                reply = await self._ask(flow_id, command)
            except AliasConflict:
                # Two creates with one idempotency key raced: the loser returns the winner's flow.
                existing = self._idempotent_flow(command)
                if existing is None:
                    raise
            else:
                if not isinstance(reply, Created):
                    raise Internal(f"flow answered {type(reply).__name__} to create_flow")
                created = dataclasses.replace(reply, token=flow_token(self._secret, flow_id))
                self._follow(session, flow_id, created.version)
                return created
        return self._created_for(session, existing)

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

    def _leave(self, session: Session, flow_id: str) -> Ack:
        session.joined.discard(flow_id)
        self._sockets.leave(session.id, flow_id)
        head = self._journal.head(flow_id)
        return Ack(flow_id=flow_id, version=head.version if head is not None else 0)

    # --- provider events (webhooks, feeds, dummy pushes) ----------------------------------------

    def start_draining(self) -> None:
        """Refuse new flows from now on; flows already running carry on (`payflowctl drain`)."""
        self.draining = True
        _log().info("draining")

    async def deliver_event(self, event: ProviderEvent) -> None:
        """The event sink of the feeds and the webhook endpoint: route it to the flow's tracker.
        Routing reads the journal, so it runs off the event loop."""
        await asyncio.to_thread(self._domain.route_provider_event, event)


class MeteredPublisher:
    """`StatusPublisher` that times each flow's state changes, then hands the status on.

    Every persisted version is published (whether or not anyone watches), so the time between
    two statuses of different states is the time the flow spent in the first one."""

    def __init__(self, inner: StatusPublisher, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._lock = threading.Lock()
        self._entered: dict[str, tuple[str, float]] = {}

    def publish(self, flow_id: str, view: Mapping[str, Any]) -> None:
        state, at = str(view["state"]), float(view["updated_at"] or 0.0)
        with self._lock:
            previous = self._entered.get(flow_id)
            if previous is None or previous[0] != state:
                self._entered[flow_id] = (state, at)
            if state in _FINISHED_STATES:
                del self._entered[flow_id]
        if previous is not None and previous[0] != state:
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
