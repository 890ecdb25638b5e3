"""The Python client against a real bridge (tests/adapters/bridge_harness.py) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from adapters.bridge import BridgeLimits
from adapters.client import PayflowClient
from adapters.client_subscription import ConnectionLost, RequestTimeout, Subscription
from runtime.backoff import Backoff
from runtime.errors import Forbidden, InvalidField, NotFound, VersionConflict
from tests.adapters.bridge_harness import WAIT, BridgeThread, FlowApp

LIMITS = BridgeLimits(request_rate=10_000, request_burst=10_000, ping_interval=None)
QUICK = Backoff(base=0.05, cap=0.2, max_retries=None)


@pytest.fixture
def running() -> Iterator[BridgeThread]:
    with BridgeThread(FlowApp(), LIMITS) as bridge:
        yield bridge


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run one client scenario on a fresh loop and check it left no task behind."""

    async def checked() -> None:
        await scenario()
        leftovers = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftovers, leftovers

    asyncio.run(checked())


async def next_versions(subscription: Subscription, count: int) -> list[int]:
    async with asyncio.timeout(WAIT):
        return [(await anext(subscription))["version"] for _ in range(count)]


async def off_loop(function: Callable[..., Any], *args: Any) -> Any:
    """Call a blocking helper of the bridge thread without blocking the client's loop."""
    return await asyncio.to_thread(function, *args)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Poll state another thread changes (no event to await there) until it holds."""
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - the state lives on the bridge's thread
            await asyncio.sleep(0.01)
    assert condition(), what


async def new_flow(client: PayflowClient, amount: int = 900) -> tuple[str, str]:
    created = await client.create_flow(amount=amount, currency="eur")
    return created["flow_id"], created["token"]


def kill_sessions(running: BridgeThread) -> None:
    """Drop every client connection at TCP level, as a crashed network path would."""
    for session in running.on_loop(running.bridge.sessions):
        running.on_loop(session.abort)


def hold_submits(running: BridgeThread) -> asyncio.Event:
    gate = asyncio.Event()
    running.on_loop(lambda: setattr(running.app, "gate", gate))
    return gate


def test_concurrent_requests_are_matched_to_their_replies_by_ref(running: BridgeThread) -> None:
    async def scenario() -> None:
        async with PayflowClient(running.url) as client:
            amounts = list(range(100, 130))
            created = await asyncio.gather(
                *(client.create_flow(amount=a, currency="eur") for a in amounts)
            )
            assert len({c["flow_id"] for c in created}) == len(amounts)
            statuses = await asyncio.gather(
                *(client.join(c["flow_id"], c["token"]) for c in reversed(created))
            )
            assert [s["amount"] for s in statuses] == list(reversed(amounts))
            assert len(running.app.sessions) == 1  # every call shared one connection

    run(scenario)


def test_an_error_frame_raises_the_class_of_its_code(running: BridgeThread) -> None:
    async def scenario() -> None:
        async with PayflowClient(running.url) as client:
            flow_id, token = await new_flow(client)
            with pytest.raises(Forbidden) as forbidden:
                await client.submit(flow_id, "pft_wrong")
            assert forbidden.value.code == "forbidden"
            with pytest.raises(NotFound):
                await client.join("flow_missing", "t")
            with pytest.raises(InvalidField):
                await client.create_flow(amount=-1, currency="eur")
            with pytest.raises(VersionConflict):
                await client.submit(flow_id, token, expect_version=7)
            ack = await client.submit(flow_id, token, expect_version=1)
            assert (ack["type"], ack["flow_id"], ack["version"]) == ("ack", flow_id, 2)

    run(scenario)


def test_a_subscription_gets_the_current_status_then_live_ones_until_left(
    running: BridgeThread,
) -> None:
    async def scenario() -> None:
        async with PayflowClient(running.url) as client:
            flow_id, token = await new_flow(client)
            subscription = await client.subscribe(flow_id, token)
            await client.select_method(flow_id, token, "pm_card_visa")
            await off_loop(running.app.advance, flow_id)  # pushed from another thread
            assert await next_versions(subscription, 3) == [1, 2, 3]
            await client.leave(flow_id)
            with pytest.raises(StopAsyncIteration):
                await anext(subscription)

    run(scenario)


def test_a_callback_subscription_with_since_gets_what_followed_it(running: BridgeThread) -> None:
    async def scenario() -> None:
        async with PayflowClient(running.url) as client:
            flow_id, token = await new_flow(client)
            for _ in range(3):
                await client.submit(flow_id, token)
            seen: list[int] = []
            subscription = await client.subscribe(
                flow_id, token, since=2, callback=lambda status: seen.append(status["version"])
            )
            assert seen == [3, 4]
            await client.cancel(flow_id, token)
            await eventually(lambda: seen == [3, 4, 5], "the live status")
            assert subscription.last_version == 5

    run(scenario)


def test_after_a_dropped_connection_every_status_arrives_once_in_order(
    running: BridgeThread,
) -> None:
    async def scenario() -> None:
        async with PayflowClient(running.url, backoff=QUICK) as client:
            flow_id, token = await new_flow(client)
            subscription = await client.subscribe(flow_id, token)
            for _ in range(2):
                await off_loop(running.app.advance, flow_id)
            assert await next_versions(subscription, 3) == [1, 2, 3]
            await off_loop(kill_sessions, running)
            for _ in range(2):  # pushed while the client is cut off: lost on that socket
                await off_loop(running.app.advance, flow_id)
            await eventually(lambda: client.reconnects == 1 and client.connected, "reconnect")
            await off_loop(running.app.advance, flow_id)
            assert await next_versions(subscription, 3) == [4, 5, 6]
            assert (flow_id, 3) in running.app.joins  # re-joined with since = last delivered
            await off_loop(kill_sessions, running)  # again, with nothing missed this time
            await eventually(lambda: client.reconnects == 2 and client.connected, "reconnect")
            await off_loop(running.app.advance, flow_id)
            # The re-join's reply repeats version 6: it is not delivered twice.
            assert await next_versions(subscription, 1) == [7]

    run(scenario)


def test_across_a_daemon_restart_missed_statuses_are_caught_up_then_live_ones_follow(
    running: BridgeThread,
) -> None:
    async def scenario() -> None:
        async with PayflowClient(running.url, backoff=QUICK) as client:
            flow_id, token = await new_flow(client)
            subscription = await client.subscribe(flow_id, token)
            assert await next_versions(subscription, 1) == [1]

            def three_changes() -> None:
                for _ in range(3):
                    running.app.advance(flow_id)

            await off_loop(running.restart, three_changes)
            assert await next_versions(subscription, 3) == [2, 3, 4]
            assert running.app.joins[-1] == (flow_id, 1)
            await client.submit(flow_id, token)
            assert await next_versions(subscription, 1) == [5]
            assert client.reconnects == 1

    run(scenario)


def test_a_request_in_flight_when_the_connection_drops_fails_and_is_not_resent(
    running: BridgeThread,
) -> None:
    async def scenario() -> None:
        async with PayflowClient(running.url, backoff=QUICK) as client:
            flow_id, token = await new_flow(client)
            gate = await off_loop(hold_submits, running)
            submit = asyncio.ensure_future(client.submit(flow_id, token))
            await eventually(lambda: "submit" in running.app.handled, "the submit to arrive")
            await off_loop(kill_sessions, running)
            with pytest.raises(ConnectionLost) as lost:
                await submit
            assert lost.value.retryable
            assert "may have been applied" in str(lost.value)
            running.loop.call_soon_threadsafe(gate.set)
            running.app.gate = None
            await client.create_flow(amount=1, currency="eur")  # reconnected, usable
            assert running.app.handled.count("submit") == 1

    run(scenario)


def test_a_request_without_a_reply_times_out_with_a_retryable_error(
    running: BridgeThread,
) -> None:
    async def scenario() -> None:
        async with PayflowClient(running.url, request_timeout=0.2) as client:
            flow_id, token = await new_flow(client)
            gate = await off_loop(hold_submits, running)
            with pytest.raises(RequestTimeout) as timed_out:
                await client.submit(flow_id, token)
            assert timed_out.value.retryable
            running.loop.call_soon_threadsafe(gate.set)

    run(scenario)


def test_when_reconnects_run_out_subscriptions_and_requests_fail(running: BridgeThread) -> None:
    async def scenario() -> None:
        backoff = Backoff(base=0.01, cap=0.02, max_retries=2)
        async with PayflowClient(running.url, backoff=backoff) as client:
            flow_id, token = await new_flow(client)
            subscription = await client.subscribe(flow_id, token)
            assert await next_versions(subscription, 1) == [1]
            await off_loop(running.call, running.bridge.stop(drain_timeout=1.0))
            with pytest.raises(ConnectionLost, match="gave up after 2"):
                await next_versions(subscription, 1)
            with pytest.raises(ConnectionLost):
                await client.join(flow_id, token)

    run(scenario)


def test_connecting_to_nothing_fails_with_connection_lost() -> None:
    async def scenario() -> None:
        with socket.socket() as unused:  # bound, never listening: connections are refused
            unused.bind(("127.0.0.1", 0))
            url = f"ws://127.0.0.1:{unused.getsockname()[1]}"
            backoff = Backoff(base=0.01, cap=0.01, max_retries=1)
            with pytest.raises(ConnectionLost):
                async with PayflowClient(url, backoff=backoff):
                    pass

    run(scenario)


def test_close_ends_subscriptions_and_fails_waiting_requests(running: BridgeThread) -> None:
    async def scenario() -> None:
        client = PayflowClient(running.url)
        await client.connect()
        flow_id, token = await new_flow(client)
        subscription = await client.subscribe(flow_id, token)
        gate = await off_loop(hold_submits, running)
        submit = asyncio.ensure_future(client.submit(flow_id, token))
        await eventually(lambda: "submit" in running.app.handled, "the submit to arrive")
        await client.close()
        assert await next_versions(subscription, 1) == [1]
        with pytest.raises(StopAsyncIteration):
            await anext(subscription)
        with pytest.raises(ConnectionLost):
            await submit
        running.loop.call_soon_threadsafe(gate.set)
        with pytest.raises(ConnectionLost, match="closed"):
            await client.join(flow_id, token)

    run(scenario)
