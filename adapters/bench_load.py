"""payflow-bench's load driver: simulated customers over the real websocket protocol.

One load process (`load_main`, run with multiprocessing so that the customers' work is not
measured on the daemon's loop) opens `clients` websocket connections; each connection runs
`inflight` flows at a time, one after the other until the deadline or until its share of
`flows` is done. A flow is what a booking site's front end does (and it `leave`s the flow after):

    create_flow -> attach_booking -> select_method -> (intent exists) submit -> COMPLETED
    decline: pm_card_chargeDeclined ... FAILED -> retry -> select pm_card_visa -> submit -> ...
    3ds:     pm_card_threeDSecure2Required ... REQUIRES_ACTION -> POST /dummy/authenticate -> ...

Each request waits for its reply (`ack` means durable, as the contract says). Statuses are read
as they come: every status frame records its push latency (received - its `updated_at`) and the
time since the flow's previous status (per transition `FROM->TO`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from adapters.bench_stats import Mix, Outcome, Samples

PROGRESS_EVERY_S = 0.25
# Below the bridge's default per-connection limit (50/s, burst 100): a customer is never refused
# as `overloaded`; more load takes more connections, as it would with more customers.
REQUESTS_PER_S = 45.0
REQUEST_BURST = 10.0
STEP_TIMEOUT_S = 30.0  # one reply or status; far above any healthy latency
DRAIN_S = 10.0  # after the deadline, flows in flight get this long to finish
CONNECT_BATCH = 100  # below the listen backlog, so no SYN is dropped and retried after 1 s
FIRST_METHOD = {
    Outcome.SUCCESS: "pm_card_visa",
    Outcome.DECLINE: "pm_card_chargeDeclined",
    Outcome.THREE_DS: "pm_card_threeDSecure2Required",
}


class FlowFailed(Exception):
    """A flow that did not reach COMPLETED; the message is the reason counted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSpec:
    url: str
    http_url: str | None  # where POST /dummy/authenticate lives (3ds outcomes only)
    clients: int
    inflight: int = 1
    flows: int | None = None  # total for this process, when there is no deadline
    mix: Mix
    seed: int = 0


class Customer:
    """One websocket connection and the flows running on it."""

    def __init__(self, connection: ClientConnection, samples: Samples) -> None:
        self._connection = connection
        self._samples = samples
        self._refs = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._watches: dict[str, FlowWatch] = {}
        self._tokens, self._filled = REQUEST_BURST, 0.0  # a token bucket, as the bridge's

    async def _pace(self) -> None:
        now = asyncio.get_running_loop().time()
        self._tokens = min(REQUEST_BURST, self._tokens + (now - self._filled) * REQUESTS_PER_S)
        self._filled = now
        self._tokens -= 1.0
        if self._tokens < 0:  # in debt: wait until the token taken is earned
            await asyncio.sleep(-self._tokens / REQUESTS_PER_S)

    async def request(self, type_: str, **fields: Any) -> dict[str, Any]:
        await self._pace()
        ref = next(self._refs)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ref] = reply
        try:
            await self._connection.send(msgpack.packb({"type": type_, "ref": ref, **fields}))
            async with asyncio.timeout(STEP_TIMEOUT_S):
                frame = await reply
        finally:
            self._replies.pop(ref, None)
        if frame.get("type") == "error":
            raise FlowFailed(f"{type_}: {frame.get('code')}")
        return frame

    def watch(self, flow_id: str) -> FlowWatch:
        return self._watches[flow_id]

    def forget(self, flow_id: str) -> None:
        self._watches.pop(flow_id, None)

    async def read(self) -> None:
        """Route every frame: statuses to their flow's watch, replies to their request."""
        with contextlib.suppress(ConnectionClosed):
            async for message in self._connection:
                received = time.time()
                frame = msgpack.unpackb(message)
                if frame.get("type") == "status":
                    self._status(frame, received)
                    continue
                if frame.get("type") == "created":  # before any status of the flow can come
                    self._watches[frame["flow_id"]] = FlowWatch(frame["state"], received)
                reply = self._replies.get(frame.get("ref"))
                if reply is not None and not reply.done():
                    reply.set_result(frame)
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(FlowFailed("connection closed"))

    def _status(self, frame: dict[str, Any], received: float) -> None:
        self._samples.frames += 1
        self._samples.push.append(received - float(frame["updated_at"]))
        watch = self._watches.get(frame["flow_id"])
        if watch is not None:
            watch.arrive(frame, received, self._samples)

    async def close(self) -> None:
        await self._connection.close()


class FlowWatch:
    """The statuses of one flow as they arrive, and a way to wait for the next one."""

    def __init__(self, state: str, at: float) -> None:
        self._state, self._at = state, at
        self._queue: deque[tuple[dict[str, Any], float]] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def arrive(self, frame: dict[str, Any], received: float, samples: Samples) -> None:
        samples.transition(self._state, frame["state"], received - self._at)
        self._state, self._at = frame["state"], received
        self._queue.append((frame, received))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def until(self, done: Callable[[dict[str, Any]], bool]) -> tuple[dict[str, Any], float]:
        """The first status (from now on) for which `done` is true, and when it arrived."""
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while True:
                while self._queue:
                    frame, received = self._queue.popleft()
                    if done(frame):
                        return frame, received
                    if frame["state"] in ("CANCELLED", "EXPIRED"):
                        raise FlowFailed(f"flow ended {frame['state']}")
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter


def _intent_ready(frame: dict[str, Any]) -> bool:
    return bool(
        frame["state"] == "PAYMENT_ACTIVE" and frame["provider_status"] == "requires_confirmation"
    )


def _completed(final: dict[str, Any]) -> None:
    if final["state"] != "COMPLETED":
        raise FlowFailed(f"flow ended {final['state']}")


def _state_is(*states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame["state"] in states


class Scenario:
    """One flow of one outcome, driven over a `Customer`'s connection."""

    def __init__(self, customer: Customer, spec: LoadSpec, samples: Samples, name: str) -> None:
        self._customer, self._spec, self._samples, self._name = customer, spec, samples, name
        self.flow_id: str | None = None

    async def leave(self) -> None:
        """Leave the flow once it is over, as a front end does when its page goes: a flow with
        a client still joined is kept live by the daemon (it cannot be passivated)."""
        if self.flow_id is not None:
            with contextlib.suppress(FlowFailed, TimeoutError):
                await self._customer.request("leave", id=self.flow_id)

    async def run(self, outcome: Outcome) -> None:
        created = await self._customer.request(
            "create_flow", amount=4200, currency="eur", pre_id=f"pre_{self._name}"
        )
        flow_id, token = created["flow_id"], created["token"]
        self.flow_id = flow_id
        try:
            watch = self._customer.watch(flow_id)
            await self._customer.request(
                "attach_booking", id=flow_id, token=token, booking_id=f"bk_{self._name}"
            )
            await self._pay(watch, flow_id, token, FIRST_METHOD[outcome])
            if outcome is Outcome.DECLINE:
                await watch.until(_state_is("FAILED"))
                await self._customer.request("retry", id=flow_id, token=token)
                await watch.until(_state_is("PAYMENT_PENDING"))
                await self._pay(watch, flow_id, token, "pm_card_visa")
            elif outcome is Outcome.THREE_DS:
                action, _ = await watch.until(_state_is("REQUIRES_ACTION", "FAILED"))
                event_at = await self._authenticate(action)
                final, received = await watch.until(_state_is("COMPLETED", "FAILED"))
                self._samples.provider_push.append(received - event_at)
                return _completed(final)
            final, _ = await watch.until(_state_is("COMPLETED", "FAILED"))
            _completed(final)
        finally:
            self._customer.forget(flow_id)

    async def _pay(self, watch: FlowWatch, flow_id: str, token: str, method: str) -> None:
        await self._customer.request(
            "select_method", id=flow_id, token=token, payment_method=method
        )
        await watch.until(_intent_ready)
        await self._customer.request("submit", id=flow_id, token=token)

    async def _authenticate(self, action: dict[str, Any]) -> float:
        """Play the customer's 3-D Secure step; returns when the provider changed the intent."""
        if action["state"] != "REQUIRES_ACTION" or self._spec.http_url is None:
            raise FlowFailed("3ds: no REQUIRES_ACTION or no --http for the dummy hook")
        body = json.dumps({"client_secret": action["client_secret"], "success": True}).encode()
        answer = await asyncio.to_thread(
            _post_json, f"{self._spec.http_url}/dummy/authenticate", body
        )
        return float(answer["event_at"])


def _post_json(url: str, body: bytes) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own --http
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=STEP_TIMEOUT_S) as response:  # noqa: S310
        answer: dict[str, Any] = json.loads(response.read())
    return answer


# --- one load process ----------------------------------------------------------------------------


class Load:
    """Every customer of one process, and the counters the parent's progress bar reads."""

    def __init__(self, spec: LoadSpec, process_index: int) -> None:
        self.spec = spec
        self.samples = Samples()
        self._rng = random.Random(spec.seed * 1_000_003 + process_index)
        self._prefix = f"{process_index}_{time.time_ns()}"
        self._names = itertools.count()
        self._left = spec.flows
        self.deadline: float | None = None  # epoch seconds: start no flow after it

    def _may_start(self) -> bool:
        if self.deadline is not None:
            return time.time() < self.deadline
        if self._left is None or self._left <= 0:
            return False
        self._left -= 1
        return True

    async def lane(self, customer: Customer) -> None:
        """Flows one after the other on `customer`, until the load is over."""
        while self._may_start():
            scenario = Scenario(
                customer, self.spec, self.samples, f"{self._prefix}_{next(self._names)}"
            )
            try:
                await scenario.run(self.spec.mix.draw(self._rng))
            except FlowFailed as failed:
                self.samples.error(str(failed))
            except TimeoutError:
                self.samples.error("timeout")
            else:
                self.samples.completed_at.append(time.time())
            await scenario.leave()

    async def run(self, pipe: Connection) -> None:
        """Connect every customer, say ("ready",), wait for (start_at, deadline), run."""
        customers = await self._connect()
        readers = [asyncio.create_task(c.read()) for c in customers]

        def report(completed: int, errors: int) -> None:
            pipe.send(("progress", completed, errors))

        pipe.send(("ready",))
        start_at, self.deadline = await asyncio.to_thread(pipe.recv)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        reporter = asyncio.create_task(self._report(report))
        try:
            lanes = [
                asyncio.create_task(self.lane(c))
                for c in customers
                for _ in range(self.spec.inflight)
            ]
            _, unfinished = await asyncio.wait(lanes, timeout=self._drain_deadline())
            for lane in unfinished:  # a flow still running when the drain time is over
                lane.cancel()
            self.samples.unfinished += len(unfinished)
            await asyncio.gather(*unfinished, return_exceptions=True)
        finally:
            reporter.cancel()
            await asyncio.gather(*(c.close() for c in customers), return_exceptions=True)
            await asyncio.gather(*readers, return_exceptions=True)
        report(len(self.samples.completed_at), sum(self.samples.errors.values()))

    def _drain_deadline(self) -> float | None:
        """Seconds until flows still in flight are given up: the deadline plus DRAIN_S."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline + DRAIN_S - time.time())

    async def _connect(self) -> list[Customer]:
        customers: list[Customer] = []
        for start in range(0, self.spec.clients, CONNECT_BATCH):
            batch = min(CONNECT_BATCH, self.spec.clients - start)
            connections = await asyncio.gather(*(self._dial() for _ in range(batch)))
            customers += [Customer(c, self.samples) for c in connections]
        return customers

    async def _dial(self) -> ClientConnection:
        return await connect(
            self.spec.url, compression=None, ping_interval=None, max_queue=None, open_timeout=30
        )

    async def _report(self, report: Callable[[int, int], None]) -> None:
        while True:
            report(len(self.samples.completed_at), sum(self.samples.errors.values()))
            await asyncio.sleep(PROGRESS_EVERY_S)


def load_main(spec: LoadSpec, process_index: int, pipe: Connection) -> None:
    """A load process: connects, sends ("ready",), waits for (start_at, deadline or None) on the
    pipe, runs `spec`, sends ("progress", completed, errors) now and then, then ("done", Samples).
    Connection failures are sent as ("failed", message)."""
    load = Load(spec, process_index)
    try:
        asyncio.run(load.run(pipe))
    except OSError as error:
        pipe.send(("failed", f"load process {process_index}: {error}"))
        return
    pipe.send(("done", load.samples))
