"""The payment domain assembled for tests: a real SQLite journal file, a real ActorSystem, a real
asyncio loop thread running the provider (dummy, or Stripe against localstripe), wired by
`adapters.domain.build_domain` exactly as the daemon wires it.

    with running(tmp_path / "j.db", backend) as h:
        created = h.create()
        h.command(SelectMethod(id=..., token=..., payment_method=h.backend.method(PAYS)))
        h.wait_state(created.flow_id, "PAYMENT_ACTIVE", intent=True)
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.commands import Command, CreateFlow
from actors.messages import ClientCommand
from actors.provider import Provider
from adapters.domain import Domain, DomainSettings, build_domain
from adapters.dummy_provider import DummyProvider
from adapters.effects import LoopThread
from adapters.stripe_provider import StripeProvider
from runtime.journal import StoredEvent
from runtime.sqlite_journal import SQLiteJournal
from runtime.system import ActorSystem
from tests.localstripe import CARD_DECLINES, CARD_NEEDS_3DS, LocalStripe
from tests.waiting import WAIT_S, wait_until

PAYS, DECLINES, NEEDS_3DS = "pays", "declines", "needs_3ds"

View = Mapping[str, Any]


class RecordingPublisher:
    """`StatusPublisher` that keeps every view published, per flow, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._views: dict[str, list[View]] = {}

    def publish(self, flow_id: str, view: Mapping[str, Any]) -> None:
        with self._lock:
            self._views.setdefault(flow_id, []).append(dict(view))

    def views(self, flow_id: str) -> list[View]:
        with self._lock:
            return list(self._views.get(flow_id, []))


@dataclass
class Backend:
    """A provider kind and the ways to drive it that only tests have."""

    name: str
    localstripe: LocalStripe | None = None
    api_base: str | None = None  # localstripe, or a proxy in front of it
    dummy: DummyProvider | None = None
    methods: dict[str, str] = field(default_factory=dict)

    def provider(self, loop: LoopThread) -> Provider:
        if self.localstripe is None:
            if self.dummy is None:
                self.dummy = DummyProvider(push_delay=0.05)
            return self.dummy
        key, base = self.localstripe.api_key, self.api_base or self.localstripe.base_url

        async def build() -> Provider:
            return StripeProvider(key, api_base=base)

        return loop.run(build())

    def method(self, loop: LoopThread, kind: str) -> str:
        if self.localstripe is None:
            dummy = {
                PAYS: "pm_card_visa",
                DECLINES: "pm_card_chargeDeclined",
                NEEDS_3DS: "pm_card_threeDSecure2Required",
            }
            return dummy[kind]
        if kind == PAYS:
            return "pm_card_visa"
        if kind not in self.methods:
            card = CARD_DECLINES if kind == DECLINES else CARD_NEEDS_3DS
            self.methods[kind] = loop.run(self.localstripe.create_card(card))
        return self.methods[kind]

    def authenticate(self, loop: LoopThread, view: View, success: bool) -> None:
        intent_id, secret = str(view["client_secret"]).split("_secret_")[0], view["client_secret"]
        if self.localstripe is None:
            assert self.dummy is not None
            loop.run(self.dummy.authenticate(intent_id, success))
        else:
            loop.run(self.localstripe.authenticate(intent_id, str(secret), success))


@dataclass
class Harness:
    loop: LoopThread
    journal: SQLiteJournal
    system: ActorSystem
    domain: Domain
    publisher: RecordingPublisher
    backend: Backend
    provider: Provider

    def command(self, command: Command, *, flow_id: str | None = None) -> Any:
        """Send a command to its flow (the `id` field, else `flow_id`) and wait for the reply."""
        target = flow_id or str(getattr(command, "id", ""))
        replied = threading.Event()
        answers: list[object] = []

        def reply(answer: object) -> None:
            answers.append(answer)
            replied.set()

        self.domain.send(target, ClientCommand(command=command, reply=reply))
        assert replied.wait(WAIT_S), f"no reply to {command.TYPE}"
        return answers[0]

    def create(self, **fields: Any) -> Any:
        flow_id = fields.pop("flow_id", f"flow_{uuid.uuid4().hex[:12]}")
        command = CreateFlow(amount=fields.pop("amount", 4200), currency="eur", **fields)
        return self.command(command, flow_id=flow_id)

    def method(self, kind: str) -> str:
        return self.backend.method(self.loop, kind)

    def wait_view(self, flow_id: str, match: Callable[[View], bool], what: str = "") -> View:
        def found() -> View | None:
            views = self.publisher.views(flow_id)
            return views[-1] if views and match(views[-1]) else None

        view: View = wait_until(found, what=what or f"a status of {flow_id}")
        return view

    def wait_state(self, flow_id: str, state: str, *, intent: bool = False) -> View:
        return self.wait_view(
            flow_id,
            lambda v: v["state"] == state and (not intent or v["client_secret"] is not None),
            what=f"{flow_id} in {state}",
        )

    def events(self, flow_id: str) -> list[StoredEvent]:
        return self.journal.events(flow_id)

    def kinds(self, flow_id: str) -> list[str]:
        return [event.kind for event in self.events(flow_id)]

    def stop(self) -> None:
        self.system.shutdown()
        self.domain.close()
        self.journal.close()


def start(
    db: Path,
    backend: Backend,
    settings: DomainSettings | None = None,
    *,
    loop: LoopThread | None = None,
    notifier: Any = None,
) -> Harness:
    loop = loop or LoopThread()
    journal = SQLiteJournal(db)
    system = ActorSystem()
    publisher = RecordingPublisher()
    provider = backend.provider(loop)
    domain = build_domain(
        journal,
        system,
        provider,
        loop.loop,
        publisher,
        notifier,
        settings or DomainSettings(),
    )
    return Harness(loop, journal, system, domain, publisher, backend, provider)


@contextmanager
def running(
    db: Path, backend: Backend, settings: DomainSettings | None = None, *, notifier: Any = None
) -> Iterator[Harness]:
    harness = start(db, backend, settings, notifier=notifier)
    try:
        yield harness
    finally:
        harness.stop()
        harness.loop.run(harness.provider.close())
        harness.loop.stop()
