"""A stand-in application behind the bridge, and the bridge running on its own loop thread.

`FlowApp` is the smallest honest `RequestHandler`: flows are a dict with versions and a history,
`join` replays history after `since` and then answers with the current status, commands bump
the version and fan the new status out to every joined session. `advance` does the same from any
thread, as a flow actor would. It stands in for the daemon's application layer so the bridge
tests check the transport, not payments.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from actors.commands import Ack, Command, Created, CreateFlow, FlowRequest, Join, Leave, Reply
from actors.flow_view import STATUS_KEYS
from adapters.bridge import Bridge, BridgeLimits
from adapters.codec import encode_status
from adapters.session import Session
from runtime.errors import Forbidden, NotFound, VersionConflict

T = TypeVar("T")
WAIT = 10.0  # seconds any condition in these tests is given before the test fails


@dataclass
class Flow:
    flow_id: str
    token: str
    amount: int
    currency: str
    version: int = 1
    history: list[dict[str, Any]] = field(default_factory=list)
    sessions: set[Session] = field(default_factory=set)

    def status(self, padding: str | None = None) -> dict[str, Any]:
        view: dict[str, Any] = dict.fromkeys(STATUS_KEYS)
        view.update(type="status", flow_id=self.flow_id, state="PRE_BOOKING")
        view.update(version=self.version, amount=self.amount, currency=self.currency)
        if padding is not None:
            view["note"] = padding  # clients ignore fields they do not know
        return view


class FlowApp:
    """The in-test application; `handle` runs on the bridge's loop, `advance` on any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flows: dict[str, Flow] = {}
        self.sessions: dict[str, Session] = {}
        self.closed_calls: collections.Counter[str] = collections.Counter()
        self.joins: list[tuple[str, int | None]] = []
        self.handled: list[str] = []
        self.gate: asyncio.Event | None = None  # when set by a test, `submit` waits for it
        self.fail_with: Exception | None = None

    async def opened(self, session: Session) -> None:
        self.sessions[session.id] = session

    async def closed(self, session: Session) -> None:
        self.closed_calls[session.id] += 1
        with self.lock:
            for flow in self.flows.values():
                flow.sessions.discard(session)

    async def handle(self, session: Session, command: Command) -> Reply | Mapping[str, Any]:
        self.handled.append(command.TYPE)
        if self.fail_with is not None:
            raise self.fail_with
        if isinstance(command, CreateFlow):
            return self._create(session, command)
        if isinstance(command, Leave):
            flow = self._find(command.id)
            with self.lock:
                flow.sessions.discard(session)
            return Ack(flow_id=flow.flow_id, version=flow.version)
        assert isinstance(command, FlowRequest)
        flow = self._authorised(command)
        if isinstance(command, Join):
            return self._join(session, flow, command.since)
        if self.gate is not None:
            await self.gate.wait()
        if command.expect_version not in (None, flow.version):
            raise VersionConflict(f"flow is at version {flow.version}")
        version = self.advance(flow.flow_id)
        return Ack(flow_id=flow.flow_id, version=version)

    def advance(self, flow_id: str, padding: str | None = None) -> int:
        """One applied change: version + 1, the new status to every joined session."""
        with self.lock:
            flow = self.flows[flow_id]
            flow.version += 1
            view = flow.status(padding)
            flow.history.append(view)
            frame = encode_status(view)
            for session in flow.sessions:
                session.send(frame)
            return flow.version

    def _create(self, session: Session, command: CreateFlow) -> Reply:
        with self.lock:
            flow_id = f"flow_{len(self.flows) + 1}"
            flow = Flow(flow_id, "pft_" + secrets.token_hex(8), command.amount, command.currency)
            flow.history.append(flow.status())
            flow.sessions.add(session)
            self.flows[flow_id] = flow
        return Created(flow_id=flow_id, token=flow.token, state="PRE_BOOKING", version=1)

    def _join(self, session: Session, flow: Flow, since: int | None) -> Mapping[str, Any]:
        with self.lock:  # catch-up and registration at once: no status falls between them
            self.joins.append((flow.flow_id, since))
            for view in flow.history[since:-1] if since is not None else ():
                session.send(encode_status(view))  # since < version < current
            flow.sessions.add(session)
            return flow.status()

    def _find(self, flow_id: str) -> Flow:
        flow = self.flows.get(flow_id)
        if flow is None:
            raise NotFound(f"no flow {flow_id!r}")
        return flow

    def _authorised(self, command: FlowRequest) -> Flow:
        flow = self._find(command.id)
        if not secrets.compare_digest(flow.token, command.token):
            raise Forbidden("wrong token")
        return flow


class BridgeThread:
    """A `Bridge` on an event loop in its own thread, as the daemon runs it."""

    def __init__(self, app: FlowApp, limits: BridgeLimits, port: int = 0) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.bridge = Bridge(app, host="127.0.0.1", port=port, limits=limits)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> BridgeThread:
        self._thread.start()
        self.call(self.bridge.start())
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.bridge.accepting:
            self.call(self.bridge.stop(drain_timeout=2.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        self.loop.close()

    def restart(self, while_down: Callable[[], object]) -> None:
        """Stop the bridge, call `while_down`, start a new bridge on the same port and app."""
        port, limits = self.bridge.port, self.bridge.limits
        self.call(self.bridge.stop(drain_timeout=2.0))
        while_down()
        self.bridge = Bridge(self.app, host="127.0.0.1", port=port, limits=limits)
        self.call(self.bridge.start())

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.bridge.port}"

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT)

    def on_loop(self, function: Callable[[], T]) -> T:
        async def run() -> T:
            return function()

        return self.call(run())


def pack(**fields: Any) -> bytes:
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def unpack(data: bytes | str) -> dict[str, Any]:
    assert isinstance(data, bytes), "the bridge sends binary frames only"
    frame = msgpack.unpackb(data, raw=False)
    assert isinstance(frame, dict)
    return frame


def ask(ws: ClientConnection, **fields: Any) -> dict[str, Any]:
    """Send one request and read the next frame."""
    ws.send(pack(**fields))
    return unpack(ws.recv(timeout=WAIT))


def read_until_closed(ws: ClientConnection) -> tuple[list[bytes], ConnectionClosed]:
    """Every frame still coming, and how the connection was closed."""
    frames: list[bytes] = []
    while True:
        try:
            message = ws.recv(timeout=WAIT)
        except ConnectionClosed as closed:
            return frames, closed
        assert isinstance(message, bytes)
        frames.append(message)


@contextmanager
def client(url: str, **options: Any) -> Iterator[ClientConnection]:
    with connect(url, compression=None, open_timeout=WAIT, **options) as ws:
        yield ws


class RawPeer:
    """A websocket client on a plain socket with websockets' sans-I/O protocol: it reads only
    when told to, so it can play a client that stopped reading, or a dead one."""

    def __init__(self, port: int, *, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # before connect, so the advertised window is small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(WAIT)
        self.sock.connect(("127.0.0.1", port))
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}"), max_size=None)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.state is State.CONNECTING:
            self._read_some()
        assert self.protocol.state is State.OPEN, self.protocol.handshake_exc

    def send(self, data: bytes) -> None:
        self.protocol.send_binary(data)
        self._flush()

    def read_until_close(self) -> tuple[list[bytes], Close]:
        """Every data frame still coming, then the server's close frame."""
        frames: list[bytes] = []
        while self.protocol.close_rcvd is None:
            frames.extend(self._read_some())
        while self.sock.recv(4096):  # the server ends TCP after the closing handshake
            pass
        self.sock.close()
        return frames, self.protocol.close_rcvd

    def next_frame(self) -> bytes:
        frames: list[bytes] = []
        while not frames:
            frames = self._read_some()
        assert len(frames) == 1
        return frames[0]

    def close(self) -> None:
        self.sock.close()

    def _read_some(self) -> list[bytes]:
        data = self.sock.recv(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self._flush()
        events = self.protocol.events_received()
        return [bytes(e.data) for e in events if isinstance(e, Frame) and e.opcode is Opcode.BINARY]

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)
