"""How a session puts frames on the wire: framed by the session itself on a plain connection,
through websockets with compression, a cross-thread batch in one write, in order, intact."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.sync.client import connect

from adapters.bridge import BridgeLimits
from adapters.loop_handoff import handoff_for
from adapters.session import Session
from tests.adapters.bridge_harness import WAIT, BridgeThread, FlowApp, pack, unpack
from tests.waiting import wait_until

ROOMY = BridgeLimits(request_rate=100_000, request_burst=100_000, ping_interval=None)
# Around each boundary of a websocket frame's length field (7 bits, 16 bits, 64 bits).
SIZES = [1, 125, 126, 127, 65_535, 65_536, 70_000]


def _payloads() -> list[bytes]:
    return [bytes([n % 251]) * size for n, size in enumerate(SIZES)]


def _open(running: BridgeThread, app: FlowApp, *, compression: bool = False) -> Any:
    return connect(
        running.url,
        compression="deflate" if compression else None,
        max_size=None,
        open_timeout=WAIT,
    )


def _session(app: FlowApp) -> Session:
    wait_until(lambda: len(app.sessions) == 1, "the session")
    return next(iter(app.sessions.values()))


@contextmanager
def _loop_held(running: BridgeThread) -> Iterator[None]:
    """Hold the loop for the block, so everything handed over inside lands in one batch."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(WAIT)

    running.loop.call_soon_threadsafe(hold)
    assert held.wait(WAIT)
    try:
        yield
    finally:
        release.set()


def _blocking_the_loop(running: BridgeThread, push: list[bytes], session: Session) -> None:
    """Send `push` from this thread while the loop is held, so all land in one inbox batch."""
    with _loop_held(running):
        for frame in push:
            assert session.send(frame)


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])
def test_frames_of_every_length_field_size_arrive_intact_from_both_threads(
    compression: bool,
) -> None:
    app = FlowApp()
    limits = BridgeLimits(
        request_rate=100_000, request_burst=100_000, ping_interval=None, compression=compression
    )
    with BridgeThread(app, limits) as running, _open(running, app, compression=compression) as ws:
        session = _session(app)
        payloads = _payloads()
        running.on_loop(lambda: [session.send(p) for p in payloads])  # the direct path
        assert [ws.recv(timeout=WAIT) for _ in payloads] == payloads
        _blocking_the_loop(running, payloads, session)  # the cross-thread batch
        assert [ws.recv(timeout=WAIT) for _ in payloads] == payloads
        assert session.queued == 0


def test_a_cross_thread_batch_for_one_client_goes_out_in_one_write_in_order() -> None:
    app = FlowApp()
    with BridgeThread(app, ROOMY) as running, _open(running, app) as ws:
        session = _session(app)
        writes = _count_writes(session)
        _blocking_the_loop(running, [pack(type="status", n=n) for n in range(5)], session)
        assert [unpack(ws.recv(timeout=WAIT))["n"] for _ in range(5)] == list(range(5))
        assert len(writes) == 1


def test_a_batch_larger_than_the_write_limit_is_written_in_part_and_the_rest_follows() -> None:
    app = FlowApp()
    limits = BridgeLimits(write_limit_bytes=4096, ping_interval=None)
    with BridgeThread(app, limits) as running, _open(running, app) as ws:
        session = _session(app)
        writes = _count_writes(session)
        frames = [pack(type="status", n=n, note="x" * 1000) for n in range(20)]
        _blocking_the_loop(running, frames, session)
        assert [unpack(ws.recv(timeout=WAIT))["n"] for _ in range(20)] == list(range(20))
        # One write takes at most the frames under the limit plus the one that crosses it.
        assert max(writes) < 4096 + 1100
        wait_until(lambda: session.queued == 0, "the queue to drain")


def _count_writes(session: Session) -> list[int]:
    """The sizes of the transport writes from now on."""
    transport: Any = session._connection.transport
    writes: list[int] = []
    write = transport.write

    def counting(data: bytes) -> None:
        writes.append(len(data))
        write(data)

    transport.write = counting
    return writes


def test_a_reply_handed_over_with_later_frames_is_written_before_them() -> None:
    """A flow actor answers a command (the answer resumes the request's task, which sends the
    reply) and then publishes the status the command caused. Both can reach the loop in one
    handoff batch: the client must still see the `ack` before that status."""
    app = FlowApp()
    with BridgeThread(app, ROOMY) as running, _open(running, app) as ws:
        session = _session(app)
        answer: asyncio.Future[bytes] = running.on_loop(running.loop.create_future)

        async def request() -> None:
            session.send(await answer)

        running.on_loop(lambda: running.loop.create_task(request()))
        with _loop_held(running):
            handoff_for(running.loop).call(answer.set_result, b"ack")
            assert session.send(b"status")
        assert [ws.recv(timeout=WAIT), ws.recv(timeout=WAIT)] == [b"ack", b"status"]
