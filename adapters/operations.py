"""What `payflowctl` sees: the daemon's `ControlApi` over the journal, the actor system, the
socket manager and the feeds. Plain methods: the control server runs them on a worker thread,
so blocking journal reads are fine here (never on the event loop)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from actors.flow_core import Flow, apply, event_from_record
from actors.flow_journal import load_flow, resolve_flow
from actors.socket_manager import SocketManager
from adapters.control_protocol import JsonObject
from adapters.feeds import FEED_TAG
from adapters.metrics import Metrics
from runtime.errors import NotFound
from runtime.introspection import tree
from runtime.journal import Journal, StreamHead
from runtime.system import ActorSystem


class FeedStates(Protocol):
    """The upstream feeds as `payflowctl sockets` rows (adapters/feeds.py)."""

    def rows(self) -> list[JsonObject]: ...


class Operations:
    """`ControlApi` for payflowctl."""

    def __init__(
        self,
        *,
        journal: Journal,
        system: ActorSystem,
        sockets: SocketManager,
        metrics: Metrics,
        start_draining: Callable[[], None],
        feeds: FeedStates | None = None,
        restart_flow: Callable[[str], list[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._journal = journal
        self._system = system
        self._sockets = sockets
        self._metrics = metrics
        self._start_draining = start_draining
        self.feeds = feeds
        self._restart_flow = restart_flow
        self._clock = clock
        self._started = clock()

    def status(self) -> JsonObject:
        return {
            "uptime_s": round(self._clock() - self._started, 3),
            "flows": self.flow_counts(),
            "actors": len(self._system),
            "sockets": len(self.sockets()),
            "errors_per_min": self._metrics.errors_per_minute(),
        }

    def flow_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for tag, count in self._journal.tag_counts().items():
            if tag != FEED_TAG:
                counts[tag or "UNKNOWN"] += count
        return dict(counts)

    def tree(self) -> JsonObject:
        return tree(self._system).to_dict()

    def ps(self, state: str | None) -> list[JsonObject]:
        return [self._row(self._fold(head.stream_id)) for head in self._flow_heads(state)]

    def _flow_heads(self, state: str | None) -> list[StreamHead]:
        heads = self._journal.heads(tags=[state] if state else None)
        return [head for head in heads if head.tag != FEED_TAG]

    def inspect(self, id: str) -> JsonObject:
        flow = self._fold(resolve_flow(self._journal, id))
        return {
            **self._row(flow),
            "amount": flow.amount,
            "currency": flow.currency,
            "attempts": flow.attempts,
            "history": self.history(flow.flow_id),
            "tracker": {"intent_id": flow.intent_id, "provider_status": flow.provider_status},
            "sessions": self._sockets.room_size(flow.flow_id),
        }

    def history(self, id: str) -> list[JsonObject]:
        flow_id = resolve_flow(self._journal, id)
        flow, rows = Flow.initial(flow_id), []
        for stored in self._journal.events(flow_id):
            flow = apply(flow, event_from_record(stored.kind, stored.payload, stored.at))
            rows.append(
                {
                    "version": stored.version,
                    "event": stored.kind,
                    "state": flow.state.value,
                    "at": stored.at,
                }
            )
        return rows

    def sockets(self) -> list[JsonObject]:
        clients: list[JsonObject] = [
            {
                "kind": "client",
                "id": info.session_id,
                "url": None,
                "remote": info.remote,
                "state": "open",
                "reconnects": 0,
                "flows": info.flows,
            }
            for info in self._sockets.sessions()
        ]
        return clients + (self.feeds.rows() if self.feeds is not None else [])

    def restart(self, id: str) -> JsonObject:
        flow_id = self._journal.resolve(id)
        if flow_id is not None and self._restart_flow is not None:
            return {"restarted": self._restart_flow(flow_id), "flow_id": flow_id}
        refs = [ref for ref in self._system.actors() if ref.cell.name == id]
        if not refs:
            raise NotFound(f"no flow and no actor is known by {id!r}")
        restarted = [id for ref in refs if self._system.restart(ref)]
        return {"restarted": restarted, "flow_id": None}

    def drain(self) -> JsonObject:
        self._start_draining()
        active = sum(n for state, n in self.flow_counts().items() if state in _ACTIVE_STATES)
        return {"draining": True, "flows_in_flight": active}

    def _fold(self, flow_id: str) -> Flow:
        flow = load_flow(self._journal, flow_id)
        if flow.version == 0:
            raise NotFound(f"no flow {flow_id!r}")
        return flow

    @staticmethod
    def _row(flow: Flow) -> JsonObject:
        return {
            "flow_id": flow.flow_id,
            "booking_id": flow.booking_id,
            "pre_id": flow.pre_id,
            "state": flow.state.value,
            "version": flow.version,
            "updated_at": flow.updated_at,
        }


_ACTIVE_STATES: Sequence[str] = (
    "PRE_BOOKING",
    "PAYMENT_PENDING",
    "PAYMENT_ACTIVE",
    "PAYMENT_PROCESSING",
    "REQUIRES_ACTION",
)
