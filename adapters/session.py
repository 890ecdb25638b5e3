"""One websocket client connection as the application sees it: an id, a bounded outbox, a close.

Actors on other threads push `status` frames to clients, so `Session.send` must be callable from
any thread and must never block or let memory grow with a client that does not read:

- Every accepted frame counts against `send_queue_frames` from the moment `send` accepts it until
  the writer task hands it to websockets (whose own write buffer is bounded by `write_limit`).
  When the count is full the client is too slow: the queue is dropped and the connection closed
  with 1008 "slow consumer". A client reconnects and catches up with `join` + `since`.
- Frames from other threads land in a small inbox moved to the queue by ONE loop callback per
  batch (not one `call_soon_threadsafe` per frame). Frames sent on the loop thread skip the inbox.
  So a loop-thread `send` can never be overtaken by a frame another thread sends later: the
  application relies on that to put a `join` reply before the live statuses that follow it.
- A frame is written at once, with the calls `websockets.broadcast` makes, when nothing is queued
  before it and the transport's write buffer is under `write_limit`: by `send` on the loop thread,
  by the inbox move for frames from other threads. The common case costs no task wake-up.
  Otherwise it waits in the queue, which one writer task per session sends in order, waiting for
  the buffer to drain (backpressure) before each frame that does not fit.
- A direct write frames the message itself and hands the transport ONE write for every frame of
  an inbox batch (see `_wire`): a status burst to one client costs one send(2), not one per frame.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections import deque
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from adapters.loop_handoff import handoff_for

SLOW_CONSUMER = (int(CloseCode.POLICY_VIOLATION), "slow consumer")
"""The close code and reason a client gets when its send queue overflows."""


def _log() -> Any:
    # Looked up per event (sessions open and close rarely) so structlog's test capture sees it.
    return structlog.get_logger("payflowd.bridge")


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved; each request takes one. Pure: the clock
    is given."""

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> bool:
        """Take one token if there is one; False means the caller is over its rate."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class _Verdict(Enum):
    REFUSED = "refused"
    OVERFLOW = "overflow"
    DIRECT = "direct"  # nothing queued before it and room in the write buffer: write now
    QUEUED = "queued"
    INBOX_FIRST = "inbox_first"  # first frame of a cross-thread batch: schedule the move
    INBOX_MORE = "inbox_more"  # a move is already scheduled and will take this frame too


class Session:
    """A connected client: `id`, `remote`, `send`, `close`, and room for application state.

    `joined`, `verified` and `data` belong to the application (the bridge never reads them);
    touch them from the loop thread only. `send` and `close` are safe from any thread.
    """

    def __init__(
        self,
        connection: ServerConnection,
        *,
        send_queue_frames: int,
        write_limit: int,
        close_timeout: float,
    ) -> None:
        self.id: str = connection.id.hex
        self.remote: Any = connection.remote_address
        self.joined: set[str] = set()
        self.verified: set[tuple[str, str]] = set()  # (flow_id, token) pairs found to match
        self.data: dict[str, Any] = {}
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._connection = connection
        self._loop = asyncio.get_running_loop()
        self._handoff = handoff_for(self._loop)
        self._loop_thread = threading.get_ident()
        self._limit = send_queue_frames
        self._write_limit = write_limit
        self._close_timeout = close_timeout
        self._lock = threading.Lock()
        # Guarded by _lock: frames accepted and not yet handed to websockets, the largest that
        # count ever reached, whether frames are still accepted, and the cross-thread inbox.
        self._backlog = 0
        self._peak = 0
        self._closing = False
        self._inbox: list[bytes] = []
        # Loop thread only.
        self._queue: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self._close_request: tuple[int, str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._finished = False

    # --- what the application calls -------------------------------------------------------------

    def send(self, frame: bytes) -> bool:
        """Send one encoded frame, in order after every frame this thread sent before; never
        blocks. True: written or queued. False: the session no longer takes frames (closing,
        closed, or this frame overflowed the queue, which closes it as a slow consumer, 1008).
        """
        on_loop = threading.get_ident() == self._loop_thread
        verdict = self._admit(frame, on_loop=on_loop)
        if verdict is _Verdict.DIRECT:
            return self._write_now((frame,))
        if verdict is _Verdict.QUEUED:
            self._queue.append(frame)
            self._wakeup.set()
        elif verdict is _Verdict.INBOX_FIRST:
            return self._call_on_loop(self._move_inbox_soon, on_loop=False)
        elif verdict is _Verdict.OVERFLOW:
            self._call_on_loop(self._cut_off, on_loop=on_loop)
        return verdict not in (_Verdict.REFUSED, _Verdict.OVERFLOW)

    def close(self, code: int = int(CloseCode.NORMAL_CLOSURE), reason: str = "") -> None:
        """Stop taking frames, send what is queued, then close with `code`; from any thread.

        Bounded by the close timeout: a client that does not read is then cut off at TCP level.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
        on_loop = threading.get_ident() == self._loop_thread
        self._call_on_loop(lambda: self._begin_close(code, reason), on_loop=on_loop)

    @property
    def is_open(self) -> bool:
        """True while the session still accepts frames."""
        return not self._closing

    @property
    def queued(self) -> int:
        """Frames accepted and not yet handed to websockets."""
        return self._backlog

    @property
    def peak_queued(self) -> int:
        """The most frames that were ever waiting at once (never above the queue limit)."""
        return self._peak

    # --- what the bridge calls ------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task (loop thread)."""
        self._writer = self._loop.create_task(self._write_queue())

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake (loop thread only)."""
        with self._lock:
            self._closing = True
        self._connection.transport.abort()

    async def finish(self) -> None:
        """The connection is gone: stop the writer, free the queue, record how it closed."""
        self._finished = True
        with self._lock:
            self._closing = True
            self._inbox.clear()
            self._backlog = 0
        self._queue.clear()
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            await asyncio.wait([self._writer])
        if self.close_code is None:
            self.close_code, self.close_reason = _how_it_closed(self._connection)

    # --- inside ---------------------------------------------------------------------------------

    def _admit(self, frame: bytes, *, on_loop: bool) -> _Verdict:
        with self._lock:
            if self._closing:
                return _Verdict.REFUSED
            if self._backlog >= self._limit:
                self._closing = True
                self._inbox.clear()
                return _Verdict.OVERFLOW
            if on_loop and not self._queue and self._has_room():
                return _Verdict.DIRECT
            self._backlog += 1
            self._peak = max(self._peak, self._backlog)
            if on_loop:
                return _Verdict.QUEUED
            self._inbox.append(frame)
            return _Verdict.INBOX_FIRST if len(self._inbox) == 1 else _Verdict.INBOX_MORE

    def _call_on_loop(self, callback: Callable[[], None], *, on_loop: bool) -> bool:
        if on_loop:
            callback()
            return True
        try:
            self._handoff.call(callback)  # shares one loop wake-up with other sessions' frames
        except RuntimeError:  # the loop is closed: the daemon is shutting down
            return False
        return True

    def _move_inbox_soon(self) -> None:
        # Run from a handoff batch, which may also hold the answer to a request of this session:
        # setting it resumes the request's task with call_soon, and that task writes the reply.
        # Moving the frames with call_soon too puts them after it, so a command's `ack` is
        # written before the statuses the command caused.
        self._loop.call_soon(self._move_inbox)

    def _move_inbox(self) -> None:
        with self._lock:
            frames, self._inbox = self._inbox, []
        if not self._queue:
            # Nothing waits before these: write what fits now rather than wake the writer task
            # (a task step per batch was ~10% of the loop thread under payflow-bench).
            frames = self._write_while_room(frames)
        if frames:
            self._queue.extend(frames)
            self._wakeup.set()

    def _write_while_room(self, frames: list[bytes]) -> list[bytes]:
        """Write the leading frames that fit in the buffer, in one write; the ones left, still
        counted. Counted as if the kernel took none of them, so the buffer never grows past
        `write_limit` by more than the last frame, as when they were written one by one.

        Safe while the writer is parked in `drain()`: its frame is already in the buffer."""
        room = self._write_limit - self._connection.transport.get_write_buffer_size()
        fitting = 0
        for frame in frames:
            if room <= 0:
                break
            room -= len(frame)
            fitting += 1
        if fitting == 0:
            return frames
        with self._lock:  # uncounted before the write: a peer may read them before it returns
            self._backlog -= fitting
        if self._write_now(frames[:fitting]):
            return frames[fitting:]
        with self._lock:  # not written: they wait in the queue, counted again
            self._backlog += fitting
        return frames

    async def _write_queue(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue:
                    frame = self._queue.popleft()
                    with self._lock:
                        self._backlog -= 1
                    if not (self._has_room() and self._write_now((frame,))):
                        await self._connection.send(frame)  # waits for the buffer to drain
                if self._close_request is not None:
                    await self._connection.close(*self._close_request)
                    return
        except ConnectionClosed:
            return

    def _has_room(self) -> bool:
        return self._connection.transport.get_write_buffer_size() < self._write_limit

    def _write_now(self, frames: Sequence[bytes]) -> bool:
        """Write binary messages without waiting, as websockets.broadcast does; False if the
        connection is not open (the frames are dropped with the connection)."""
        connection = self._connection
        protocol = connection.protocol
        if protocol.state is not State.OPEN or connection.send_in_progress:
            return False
        try:
            if protocol.extensions or protocol.writes:
                # Compression frames differently; bytes websockets has not flushed go first.
                for frame in frames:
                    protocol.send_binary(frame)
                connection.send_data()
            else:
                connection.transport.write(_wire(frames))
        except Exception:  # noqa: BLE001 - what broadcast does too: a failed write ends the peer
            _log().warning("session_write_failed", session_id=self.id, exc_info=True)
            return False
        return True

    def _begin_close(self, code: int, reason: str) -> None:
        if self._finished:
            return
        self._move_inbox()  # frames accepted before the close still go out, in order
        self._close_request = (code, reason)
        self.close_code, self.close_reason = code, reason
        self._wakeup.set()
        self._arm_abort_timer()

    def _cut_off(self) -> None:
        if self._finished:
            return
        code, reason = SLOW_CONSUMER
        _log().warning("session_slow_consumer", session_id=self.id, limit=self._limit)
        self._queue.clear()
        with self._lock:
            self._backlog = 0
        self.close_code, self.close_reason = code, reason
        # The writer may be parked in drain() behind a full TCP window: replace it by a task
        # that queues the close frame behind the bytes already buffered.
        if self._writer is not None:
            self._writer.cancel()
        self._writer = self._loop.create_task(self._connection.close(code, reason))
        self._arm_abort_timer()

    def _arm_abort_timer(self) -> None:
        # websockets bounds the closing handshake but not a drain() on a peer that stopped
        # reading; past the close timeout the TCP connection is dropped.
        if self._abort_timer is None:
            self._abort_timer = self._loop.call_later(
                self._close_timeout, self._connection.transport.abort
            )


_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")
_FIN_BINARY = 0x82  # FIN bit + opcode 2: a whole binary message in one frame


def _wire(frames: Sequence[bytes]) -> bytes:
    """The frames as websockets' `send_binary` serializes them on a server without extensions
    (unmasked, unfragmented), joined for one transport write. Framed here rather than through
    websockets' Frame objects: a Frame, its check and its BytesIO cost more than the bytes."""
    if len(frames) == 1:
        frame = frames[0]
        return _header(len(frame)) + frame
    parts: list[bytes] = []
    for frame in frames:
        parts.append(_header(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def _header(length: int) -> bytes:
    if length < 126:
        return bytes((_FIN_BINARY, length))
    if length < 65536:
        return _HEAD_16.pack(_FIN_BINARY, 126, length)
    return _HEAD_64.pack(_FIN_BINARY, 127, length)


def _how_it_closed(connection: ServerConnection) -> tuple[int, str]:
    """The peer's close frame if it sent one, else ours (say a keepalive timeout), else 1006."""
    protocol = connection.protocol
    close = protocol.close_rcvd or protocol.close_sent
    if close is None:
        return int(CloseCode.ABNORMAL_CLOSURE), ""
    return int(close.code), close.reason
