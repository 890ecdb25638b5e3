"""The application layer in-process (real journal, actors, dummy provider, bridge, client):
validation order, the API key, join catch-up, leave, the control API's answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.socket_manager import SocketManager, SocketManagerActor
from adapters.app import App, MeteredPublisher
from adapters.bridge import Bridge
from adapters.client import PayflowClient
from adapters.codec import encode_status
from adapters.domain import Domain, DomainSettings, build_domain
from adapters.dummy_provider import DummyProvider
from adapters.feeds import Feeds
from adapters.metrics import Metrics
from adapters.operations import Operations
from runtime.backoff import Backoff
from runtime.errors import Forbidden, NotFound, PayflowError, VersionConflict
from runtime.sqlite_journal import SQLiteJournal
from runtime.system import ActorSystem
from tests.adapters.test_feeds import FeedServer, until

WAIT = 10.0
API_KEY = "backend-key-123"


@dataclass
class Stack:
    app: App
    ops: Operations
    domain: Domain
    bridge: Bridge
    metrics: Metrics

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.bridge.port}"


@asynccontextmanager
async def stack(tmp_path: Path, api_key: str | None = None) -> AsyncIterator[Stack]:
    journal = SQLiteJournal(tmp_path / "app.db")
    system = ActorSystem()
    provider = DummyProvider()
    metrics = Metrics()
    domains: list[Domain] = []

    def tell_flow(flow_id: str, message: object) -> None:
        domains[0].send(flow_id, message)  # bound once the domain exists

    sockets = SocketManager(
        system.spawn(SocketManagerActor, encode=encode_status, tell_flow=tell_flow)
    )
    domain = build_domain(
        journal,
        system,
        provider,
        asyncio.get_running_loop(),
        MeteredPublisher(sockets, metrics),
        None,
        DomainSettings(),
    )
    domains.append(domain)
    app = App(
        journal=journal,
        domain=domain,
        sockets=sockets,
        system=system,
        metrics=metrics,
        token_secret=domain.token_secret,
        api_key=api_key,
    )
    ops = Operations(
        journal=journal,
        system=system,
        sockets=sockets,
        metrics=metrics,
        start_draining=app.start_draining,
    )
    bridge = Bridge(app, host="127.0.0.1", port=0, on_error=metrics.error)
    await bridge.start()
    try:
        yield Stack(app=app, ops=ops, domain=domain, bridge=bridge, metrics=metrics)
    finally:
        await bridge.stop(drain_timeout=1.0)
        await asyncio.to_thread(system.shutdown, 5.0)
        domain.close()
        await provider.close()
        journal.close()


def run(tmp_path: Path, body: Callable[[Stack], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        async with stack(tmp_path, **options) as running:
            async with asyncio.timeout(WAIT * 2):
                await body(running)

    asyncio.run(main())


def test_not_found_comes_before_forbidden_and_refusals_count_as_errors(tmp_path: Path) -> None:
    async def body(s: Stack) -> None:
        async with PayflowClient(s.url) as client:
            with pytest.raises(NotFound):
                await client.submit("flw_unknown", "pft_wrong")
            created = await client.create_flow(amount=10, currency="eur")
            with pytest.raises(Forbidden):
                await client.submit(created["flow_id"], "pft_wrong")
            with pytest.raises(NotFound):
                await client.leave("flw_unknown")
        assert s.metrics.errors_per_minute() == 3

    run(tmp_path, body)


def test_frames_refused_before_the_app_count_as_errors_by_code(tmp_path: Path) -> None:
    async def body(s: Stack) -> None:
        async with PayflowClient(s.url) as client:
            for bad in ({"type": "nope"}, {"type": "create_flow", "amount": -1}):
                with pytest.raises(PayflowError):
                    await client.request(bad.pop("type"), **bad)
        assert s.metrics.errors_per_minute() == 2
        exposed = s.metrics.render().decode()
        assert 'payflowd_errors_total{code="unknown_type"} 1.0' in exposed
        assert 'payflowd_errors_total{code="invalid_field"} 1.0' in exposed

    run(tmp_path, body)


def test_no_token_is_forbidden_after_not_found_and_leave_checks_expect_version(
    tmp_path: Path,
) -> None:
    # The contract's order: not_found, then forbidden "(a missing or wrong token)"; and "any
    # command may carry expect_version": a `leave` at the wrong version changes nothing.
    async def body(s: Stack) -> None:
        async with PayflowClient(s.url) as client:
            flow_id = (await client.create_flow(amount=10, currency="eur"))["flow_id"]
            for token in ("", None):  # None: the field left out
                with pytest.raises(NotFound):
                    await client.request("submit", id="flw_unknown", token=token)
                with pytest.raises(Forbidden):
                    await client.request("submit", id=flow_id, token=token)
            with pytest.raises(Forbidden):
                await client.request("join", id=flow_id)
            with pytest.raises(VersionConflict):
                await client.request("leave", id=flow_id, expect_version=7)
            assert (await _sessions_of(s, flow_id)) == 1  # still joined: the refusal left it
            left = await client.request("leave", id=flow_id, expect_version=1)
            assert (left["type"], left["version"]) == ("ack", 1)
            assert (await _sessions_of(s, flow_id)) == 0

    run(tmp_path, body)


async def _sessions_of(s: Stack, flow_id: str) -> int:
    # Operations asks actors and waits for their answers: off the loop, as payflowctl's server does.
    return int((await asyncio.to_thread(s.ops.inspect, flow_id))["sessions"])


def test_a_token_proven_once_opens_only_its_flow_and_a_wrong_one_stays_forbidden(
    tmp_path: Path,
) -> None:
    # The connection remembers the (flow, token) pairs it proved: that must never let a proven
    # token open another flow, excuse a wrong token, or skip attach_booking's API key.
    async def body(s: Stack) -> None:
        async with PayflowClient(s.url) as client:
            first = await client.create_flow(amount=10, currency="eur", api_key=API_KEY)
            second = await client.create_flow(amount=20, currency="eur", api_key=API_KEY)
            flow_id, token = first["flow_id"], first["token"]
            assert (await client.join(flow_id, token))["version"] == 1
            with pytest.raises(Forbidden):
                await client.join(second["flow_id"], token)
            with pytest.raises(Forbidden):
                await client.join(flow_id, token[:-1] + ("0" if token[-1] != "0" else "1"))
            with pytest.raises(Forbidden):
                await client.attach_booking(flow_id, token, "bk_p")
            ack = await client.attach_booking(flow_id, token, "bk_p", api_key=API_KEY)
            assert ack["version"] == 2
        assert s.metrics.errors_per_minute() == 3

    run(tmp_path, body, api_key=API_KEY)


def test_the_api_key_guards_create_flow_and_attach_booking(tmp_path: Path) -> None:
    async def body(s: Stack) -> None:
        async with PayflowClient(s.url) as client:
            with pytest.raises(Forbidden):
                await client.create_flow(amount=10, currency="eur")
            with pytest.raises(Forbidden):
                await client.create_flow(amount=10, currency="eur", api_key="guess")
            created = await client.create_flow(amount=10, currency="eur", api_key=API_KEY)
            flow_id, token = created["flow_id"], created["token"]
            with pytest.raises(Forbidden):
                await client.attach_booking(flow_id, token, "bk_1")
            ack = await client.attach_booking(flow_id, token, "bk_1", api_key=API_KEY)
            assert ack["version"] == 2
            # The customer's browser drives the payment with the token alone.
            assert (await client.select_method(flow_id, token, "pm_card_visa"))["version"] == 3

    run(tmp_path, body, api_key=API_KEY)


def test_join_replays_after_since_then_answers_the_current_status(tmp_path: Path) -> None:
    async def body(s: Stack) -> None:
        async with PayflowClient(s.url) as driver:
            created = await driver.create_flow(amount=10, currency="eur", pre_id="pre_j")
            flow_id, token = created["flow_id"], created["token"]
            await driver.attach_booking(flow_id, token, "bk_j")
            await driver.select_method(flow_id, token, "pm_card_visa")
        async with PayflowClient(s.url) as late:
            received: list[dict[str, Any]] = []
            subscription = await late.subscribe("pre_j", token, since=1, callback=received.append)
            current = await late.join("bk_j", token)  # a second join: the current status only
            assert current["version"] >= 3
            async with asyncio.timeout(WAIT):
                while not received or received[-1]["version"] < current["version"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)  # polling what the subscription's callback got
            versions = [status["version"] for status in received]
            assert versions[:2] == [2, 3]
            assert versions == sorted(set(versions))
            with pytest.raises(VersionConflict):
                await late.request("join", id=flow_id, token=token, expect_version=99)
            left = await late.leave(flow_id)
            assert left["flow_id"] == flow_id
            assert left["version"] == current["version"]
            assert subscription.ended

    run(tmp_path, body)


def test_the_control_api_reads_flows_from_the_journal(tmp_path: Path) -> None:
    async def body(s: Stack) -> None:
        async with PayflowClient(s.url) as client:
            created = await client.create_flow(amount=10, currency="eur", pre_id="pre_c")
            await client.attach_booking(created["flow_id"], created["token"], "bk_c")
        rows = await asyncio.to_thread(s.ops.ps, "PAYMENT_PENDING")
        assert [(r["flow_id"], r["pre_id"], r["booking_id"]) for r in rows] == [
            (created["flow_id"], "pre_c", "bk_c")
        ]
        assert await asyncio.to_thread(s.ops.ps, "COMPLETED") == []
        history = await asyncio.to_thread(s.ops.history, "pre_c")
        assert [(h["version"], h["event"], h["state"]) for h in history] == [
            (1, "flow_created", "PRE_BOOKING"),
            (2, "booking_attached", "PAYMENT_PENDING"),
        ]
        status = await asyncio.to_thread(s.ops.status)
        assert status["flows"] == {"PAYMENT_PENDING": 1}
        with pytest.raises(NotFound):
            await asyncio.to_thread(s.ops.inspect, "nope")
        with pytest.raises(NotFound):
            await asyncio.to_thread(s.ops.restart, "nope")

    run(tmp_path, body)


def test_a_feed_in_error_tells_the_trackers_push_is_unhealthy(tmp_path: Path) -> None:
    async def body(s: Stack) -> None:
        server = FeedServer()
        await server.start()
        with SQLiteJournal(tmp_path / "feeds.db") as journal:
            feeds = Feeds(
                [server.url],
                journal=journal,
                on_event=s.app.deliver_event,
                on_health=s.domain.set_push_health,
                backoff=Backoff(base=0.01, cap=0.05, max_retries=1),
            )
            feeds.start()
            await until(lambda: feeds.rows()[0]["state"] == "MONITORING", "monitoring")
            await server.stop()
            await until(lambda: not s.domain.push_healthy, "push marked unhealthy")
            await server.start()
            await until(lambda: s.domain.push_healthy, "push healthy again")
            await feeds.stop()
            await server.stop()

    run(tmp_path, body)
