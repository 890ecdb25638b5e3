"""Websocket push between two processes, raw and through the bridge: the shared part of
benchmarks/bridge_bench.py and payflow-bench's raw push baseline (`run_once("raw_send", ...)`).

A server process and a client process (so the clients' reading does not share the server's loop
and core). The client process opens CLIENTS websocket connections, each joins with one request
(a real `join` frame, answered), then counts FRAMES binary frames per connection. The server then
fans the same ~300-byte msgpack status frame out to every connection FRAMES times, by one of:

  (a) raw_send       websockets `await connection.send(frame)`, one sending task per connection
  (b) raw_broadcast  `websockets.broadcast(connections, frame)` (no backpressure at all)
  (c) bridge_loop    `Session.send(frame)` for every session, called on the loop thread
  (d) bridge_thread  `Session.send(frame)` called from another thread, as flow actors do

The server yields to its loop once per fanned-out frame in every mode. `Result`: frame
deliveries per second, wall time from "go" until the LAST connection holds its last frame (both
processes read the same system-wide monotonic clock), and the server's CPU time per delivery.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import structlog
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from actors.commands import Ack, Command, Join, Reply
from actors.flow_view import STATUS_KEYS
from adapters.bridge import Bridge, BridgeLimits
from adapters.codec import encode_request, encode_status
from adapters.session import Session

MODES = ("raw_send", "raw_broadcast", "bridge_loop", "bridge_thread")
CONNECT_BATCH = 100  # below the listen backlog, so no SYN is dropped and retried after 1 s


def status_frame() -> bytes:
    view: dict[str, Any] = dict.fromkeys(STATUS_KEYS)
    view.update(
        flow_id="flow_0f3c9a7e2b1d4c58",
        booking_id="bk_2024_000123",
        pre_id="pre_8c1e",
        state="PAYMENT_PROCESSING",
        version=7,
        modal="PAYMENT_ACTIVE",
        step="PROCESSING",
        amount=4200,
        currency="eur",
        provider_status="processing",
        client_secret="pi_3Nq0a1b2c3d4e5f6g7h8_secret_x",  # noqa: S106 - a fake of the real size
        attempts=1,
        updated_at=1_700_000_000.25,
    )
    return encode_status(view)


# --- server process -----------------------------------------------------------------------------


class _Members:
    """The bridge application of this benchmark: every `join` puts the session in the audience."""

    def __init__(self) -> None:
        self.sessions: list[Session] = []

    async def opened(self, _session: Session) -> None:
        return None

    async def handle(self, session: Session, command: Command) -> Reply | Mapping[str, Any]:
        assert isinstance(command, Join)
        self.sessions.append(session)
        return Ack(flow_id=command.id, version=0)

    async def closed(self, session: Session) -> None:
        self.sessions.remove(session)


class _RawMembers:
    def __init__(self) -> None:
        self.connections: list[ServerConnection] = []

    async def serve(self, connection: ServerConnection) -> None:
        await connection.recv()  # the join
        await connection.send(b"\x80")  # any one reply
        self.connections.append(connection)
        await connection.wait_closed()


async def _fan_out(mode: str, audience: Any, frame: bytes, frames: int) -> None:
    if mode == "raw_broadcast":
        for _ in range(frames):
            websockets.broadcast(audience.connections, frame)
            await asyncio.sleep(0)
    elif mode == "raw_send":

        async def feed(connection: ServerConnection) -> None:
            for _ in range(frames):
                await connection.send(frame)

        await asyncio.gather(*(feed(c) for c in audience.connections))
    elif mode == "bridge_loop":
        for _ in range(frames):
            for session in audience.sessions:
                session.send(frame)
            await asyncio.sleep(0)
    else:
        await asyncio.to_thread(_push_from_thread, audience.sessions, frame, frames)


def _push_from_thread(sessions: list[Session], frame: bytes, frames: int) -> None:
    pause = threading.Event()
    for _ in range(frames):
        for session in sessions:
            session.send(frame)
        pause.wait(0)  # let go of the GIL once per fan-out, as the loop modes yield once


async def _serve(mode: str, frames: int, pipe: Connection) -> None:
    limits = BridgeLimits(ping_interval=None, send_queue_frames=max(1_000, frames + 10))
    if mode.startswith("bridge"):
        audience: Any = _Members()
        bridge = Bridge(audience, host="127.0.0.1", port=0, limits=limits)
        await bridge.start()
        pipe.send(bridge.port)
    else:
        audience = _RawMembers()
        server = await serve(audience.serve, "127.0.0.1", 0, compression=None, ping_interval=None)
        pipe.send(server.sockets[0].getsockname()[1])
    await asyncio.to_thread(pipe.recv)  # "go"
    cpu = time.process_time()
    await _fan_out(mode, audience, status_frame(), frames)
    await asyncio.to_thread(pipe.recv)  # the clients have everything
    pipe.send(time.process_time() - cpu)
    if mode.startswith("bridge"):
        await bridge.stop(drain_timeout=5.0)
    else:
        server.close()
        await server.wait_closed()


def server_main(mode: str, frames: int, pipe: Connection) -> None:
    # One session_opened line per connection would drown the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(_serve(mode, frames, pipe))


# --- client process -----------------------------------------------------------------------------


async def _join(port: int) -> ClientConnection:
    connection = await connect(
        f"ws://127.0.0.1:{port}", compression=None, ping_interval=None, max_queue=None
    )
    join = Join(id="flow_0f3c9a7e2b1d4c58", token="t", ref=1)  # noqa: S106 - no token is checked
    await connection.send(encode_request(join))
    await connection.recv()
    return connection


async def _clients(port: int, clients: int, frames: int, pipe: Connection) -> None:
    connections: list[ClientConnection] = []
    for start in range(0, clients, CONNECT_BATCH):
        batch = min(CONNECT_BATCH, clients - start)
        connections += await asyncio.gather(*(_join(port) for _ in range(batch)))

    async def count(connection: ClientConnection) -> None:
        for _ in range(frames):
            await connection.recv()

    readers = asyncio.gather(*(count(c) for c in connections))
    pipe.send("ready")
    await readers
    pipe.send(time.monotonic())
    await asyncio.gather(*(c.close() for c in connections))


def client_main(port: int, clients: int, frames: int, pipe: Connection) -> None:
    asyncio.run(_clients(port, clients, frames, pipe))


# --- driver -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    deliveries_per_s: float
    wall_s: float
    server_cpu_us_per_delivery: float


def run_once(mode: str, clients: int, frames: int) -> Result:
    context = multiprocessing.get_context("spawn")
    server_pipe, server_end = context.Pipe()
    client_pipe, client_end = context.Pipe()
    server = context.Process(target=server_main, args=(mode, frames, server_end))
    server.start()
    port = server_pipe.recv()
    client = context.Process(target=client_main, args=(port, clients, frames, client_end))
    client.start()
    assert client_pipe.recv() == "ready"
    started = time.monotonic()
    server_pipe.send("go")
    finished = client_pipe.recv()
    server_pipe.send("done")
    cpu = server_pipe.recv()
    for process in (client, server):
        process.join(60)
    deliveries = clients * frames
    wall = finished - started
    return Result(
        deliveries_per_s=deliveries / wall,
        wall_s=wall,
        server_cpu_us_per_delivery=cpu / deliveries * 1e6,
    )
