"""The websocket bridge: a websockets server that turns binary msgpack requests into calls on the
application (`RequestHandler`) and sends its replies back, one request at a time per connection.

The bridge is transport only: it decodes (adapters/codec.py), rate-limits, calls the handler,
stamps the request's `ref` on the reply, encodes and queues it on the session. What a request
means is the handler's business. Every reply and every pushed frame goes through the session's
one bounded queue, so a reply and the statuses pushed around it keep their order.

Limits (`BridgeLimits`) and what a client sees when it hits one:

- a message larger than `max_frame_bytes`: websockets closes the connection with 1009 (message too
  big) before the bytes are buffered; the frame cannot be answered since it was never read;
- more than `max_connections` connections: the opening handshake is refused with HTTP 503 and
  `Retry-After: 1` (no websocket is set up, so the application never sees it);
- more than `request_rate` requests per second (bucket of `request_burst`): an `overloaded` error
  frame answers the request, which is not handled; the connection stays open;
- a client that does not read: once `send_queue_frames` frames wait, the queue is dropped and the
  connection closed with 1008 "slow consumer" (see adapters/session.py);
- a dead peer: websockets pings every `ping_interval` s and closes the connection when no pong
  comes within `ping_timeout` s; `handler.closed` is called once as for any other close.

permessage-deflate is off by default: status frames are a few hundred bytes of msgpack, and
deflate costs each connection its own compression buffers and more than doubles the write cost of
a fan-out (see notes/baselines.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from actors.commands import Command, ErrorFrame, Ref, Reply
from adapters.codec import (
    MAX_FRAME_BYTES,
    FrameRejected,
    decode_request,
    encode_error,
    encode_reply,
)
from adapters.session import Session, TokenBucket
from runtime.errors import Internal, Overloaded, PayflowError

GOING_AWAY = (int(CloseCode.GOING_AWAY), "going away")


def _log() -> Any:
    return structlog.get_logger("payflowd.bridge")


class RequestHandler(Protocol):
    """The application behind the bridge; all three are called on the bridge's loop.

    `handle` returns the reply frame (a reply dataclass or a mapping such as a `status` view);
    the bridge sets its `ref` to the request's. A `PayflowError` becomes an `error` frame with its
    code and message; any other exception an `internal` error frame (logged with its traceback).
    `closed` is called exactly once per session, after its last `handle` returned.
    """

    async def opened(self, session: Session) -> None: ...

    async def handle(self, session: Session, command: Command) -> Reply | Mapping[str, Any]: ...

    async def closed(self, session: Session) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BridgeLimits:
    """What one connection, and the bridge as a whole, may use. See the module doc for effects."""

    max_frame_bytes: int = MAX_FRAME_BYTES
    max_connections: int = 10_000
    request_rate: float = 50.0
    request_burst: int = 100
    send_queue_frames: int = 1_000
    write_limit_bytes: int = 64 * 1024
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 5.0
    compression: bool = False

    def __post_init__(self) -> None:
        counts = (self.max_frame_bytes, self.max_connections, self.request_burst)
        if min(*counts, self.send_queue_frames, self.write_limit_bytes) < 1:
            raise ValueError(f"bridge limits must be positive: {self}")
        if self.request_rate <= 0 or self.close_timeout <= 0:
            raise ValueError(f"request_rate and close_timeout must be > 0: {self}")


class Bridge:
    """The websocket server of CONTRACT.md "Websocket bridge", on the caller's asyncio loop."""

    def __init__(
        self,
        handler: RequestHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        limits: BridgeLimits | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        """`on_error(code)`: an `error` frame the handler did not raise itself (a frame that did
        not decode, the rate limit, a handler bug); the handler counts its own refusals."""
        self._handler = handler
        self._on_error = on_error
        self._host = host
        self._port = port
        self._limits = limits or BridgeLimits()
        self._server: Server | None = None
        self._accepting = False
        self._slots_taken = 0
        self._sessions: dict[str, Session] = {}

    @property
    def port(self) -> int:
        """The bound port once started (port 0 asks the OS for a free one)."""
        return self._port

    @property
    def limits(self) -> BridgeLimits:
        return self._limits

    @property
    def accepting(self) -> bool:
        """True from `start` until `stop` begins: what /readyz reports."""
        return self._accepting

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[Session]:
        """A snapshot of the open sessions (loop thread)."""
        return list(self._sessions.values())

    async def start(self) -> None:
        limits = self._limits
        self._server = await serve(
            self._serve_connection,
            self._host,
            self._port,
            process_request=self._admit,
            max_size=limits.max_frame_bytes,
            write_limit=limits.write_limit_bytes,
            ping_interval=limits.ping_interval,
            ping_timeout=limits.ping_timeout,
            close_timeout=limits.close_timeout,
            compression="deflate" if limits.compression else None,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._accepting = True
        _log().info("bridge_listening", host=self._host, port=self._port)

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop accepting, flush and close every session with 1001, wait for the handlers.

        Sessions still open after `drain_timeout` seconds are dropped at TCP level.
        """
        if self._server is None:
            return
        self._accepting = False
        self._server.close(close_connections=False)  # handshakes in flight get a 503
        for session in self.sessions():
            session.close(*GOING_AWAY)
        try:
            async with asyncio.timeout(drain_timeout):
                await self._server.wait_closed()
        except TimeoutError:
            for session in self.sessions():
                session.abort()
            await self._server.wait_closed()
        self._server = None
        _log().info("bridge_stopped", port=self._port)

    # --- admission --------------------------------------------------------------------------

    def _admit(self, connection: ServerConnection, _request: Request) -> Response | None:
        if not self._accepting or self._slots_taken >= self._limits.max_connections:
            reason = "shutting down" if not self._accepting else "max_connections"
            _log().warning("connection_refused", remote=connection.remote_address, reason=reason)
            response = connection.respond(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "payflowd: try again later\n"
            )
            response.headers["Retry-After"] = "1"
            return response
        # The slot is held until the TCP connection is gone, whichever way the handshake ends.
        self._slots_taken += 1
        connection.connection_lost_waiter.add_done_callback(self._release_slot)
        return None

    def _release_slot(self, _done: asyncio.Future[None]) -> None:
        self._slots_taken -= 1

    # --- one connection ---------------------------------------------------------------------

    async def _serve_connection(self, connection: ServerConnection) -> None:
        limits = self._limits
        session = Session(
            connection,
            send_queue_frames=limits.send_queue_frames,
            write_limit=limits.write_limit_bytes,
            close_timeout=limits.close_timeout,
        )
        self._sessions[session.id] = session
        session.start()
        _log().info("session_opened", session_id=session.id, remote=session.remote)
        try:
            await self._handler.opened(session)
            await self._receive(session, connection)
        except Exception:  # noqa: BLE001 - an application bug ends this session, not the bridge
            _log().exception("session_failed", session_id=session.id)
            session.close(int(CloseCode.INTERNAL_ERROR), "internal error")
            await connection.wait_closed()
        finally:
            await self._end(session)

    async def _receive(self, session: Session, connection: ServerConnection) -> None:
        limits = self._limits
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(rate=limits.request_rate, burst=limits.request_burst, clock=loop.time)
        try:
            async for message in connection:
                session.send(await self._answer(session, message, bucket))
        except ConnectionClosed:
            return

    async def _end(self, session: Session) -> None:
        await session.finish()
        del self._sessions[session.id]
        try:
            await self._handler.closed(session)
        except Exception:  # noqa: BLE001 - the session is gone either way; log and move on
            _log().exception("session_close_failed", session_id=session.id)
        _log().info(
            "session_closed",
            session_id=session.id,
            remote=session.remote,
            code=session.close_code,
            reason=session.close_reason,
        )

    # --- one request ------------------------------------------------------------------------

    async def _answer(self, session: Session, message: bytes | str, bucket: TokenBucket) -> bytes:
        """The encoded reply to one message: exactly one frame, whatever the message was.

        One coroutine for decoding, the rate limit and the handler: every coroutine level costs
        a frame to make and another to pass through each time the request resumes."""
        try:
            command = decode_request(message)
        except FrameRejected as rejected:
            return self._refuse(rejected.ref, rejected if bucket.take() else _over_rate())
        if not bucket.take():
            return self._refuse(command.ref, _over_rate())
        try:
            return encode_reply(await self._handler.handle(session, command), command.ref)
        except PayflowError as error:
            if ErrorFrame.from_error(error).code == "internal":
                _log().error(
                    "request_failed", session_id=session.id, type=command.TYPE, exc_info=True
                )
            return encode_error(command.ref, error)
        except Exception:  # noqa: BLE001 - a handler bug answers `internal`, the connection lives
            # Never the request itself in the log: it may carry a token or an API key.
            _log().error("request_failed", session_id=session.id, type=command.TYPE, exc_info=True)
            return self._refuse(command.ref, Internal("internal error"))

    def _refuse(self, ref: Ref, error: PayflowError) -> bytes:
        if self._on_error is not None:
            self._on_error(error.code)
        return encode_error(ref, error)


def _over_rate() -> Overloaded:
    return Overloaded("request rate limit exceeded, slow down")
