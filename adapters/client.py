"""The Python client of the websocket bridge, for booking backends (asyncio).

    async with PayflowClient("ws://127.0.0.1:8765") as client:
        created = await client.create_flow(amount=4200, currency="eur")
        async for status in await client.subscribe(created["flow_id"], created["token"]):
            ...

One connection carries every call; replies are matched to requests by an auto-generated `ref`.
An `error` frame raises the runtime.errors class of its code (adapters/client_subscription.py).

After a drop the client reconnects by itself (`backoff`, full jitter by default) and re-joins
every subscription with `since` = the last version it delivered, so a subscription sees every
status once, in order. Requests in flight when the connection drops fail with `ConnectionLost`
and are never resent (a `submit` must not run twice behind the caller's back); requests made while
reconnecting wait for the new connection within their `request_timeout`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
import time
from types import TracebackType
from typing import Any, Self

import msgpack
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.uri import parse_uri

from adapters.client_subscription import (
    ConnectionLost,
    RequestTimeout,
    StatusCallback,
    Subscription,
    error_from_frame,
)
from runtime.backoff import Backoff
from runtime.errors import PayflowError

DEFAULT_BACKOFF = Backoff(base=0.1, cap=5.0, max_retries=None)
"""Reconnect forever, 0.1 s doubling up to 5 s, full jitter: a backend outlives daemon restarts."""

_DIAL_ERRORS = (OSError, InvalidHandshake, TimeoutError)


def _log() -> Any:
    return structlog.get_logger("payflowd.client")


class PayflowClient:
    """A pooled, self-reconnecting connection to a payflowd bridge."""

    def __init__(
        self,
        url: str,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        rng: random.Random | None = None,
    ) -> None:
        parse_uri(url)  # a malformed URL fails here, not as endless reconnects
        self._url = url
        self._backoff = backoff
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._rng = rng or random.Random()
        self._refs = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[dict[str, Any]], str]] = {}
        self._subscriptions: dict[str, Subscription] = {}  # by every id a flow is known by
        self._connection: ClientConnection | None = None
        self._changed = asyncio.Event()
        self._stopped: PayflowError | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._ever_connected = False
        self.reconnects = 0
        """Connections made after the first one."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connection is not None

    async def connect(self) -> None:
        """Start the connection and wait for it; raises `ConnectionLost` past `connect_timeout`."""
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._wait_connected()
        except TimeoutError:
            await self.close()
            raise ConnectionLost(f"could not connect within {self._connect_timeout} s") from None
        except PayflowError:  # reconnects ran out first
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection; pending requests fail, subscriptions end, no task is left."""
        self._stop(None)
        if self._connection is not None:
            await self._connection.close()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.wait([self._supervisor])

    # --- requests ---------------------------------------------------------------------------

    async def request(self, type_: str, /, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply frame; fields given as None are left out."""
        frame = {"type": type_, **{k: v for k, v in fields.items() if v is not None}}
        try:
            async with asyncio.timeout(self._request_timeout):
                connection = await self._wait_connected()
                ref, future = await self._send(connection, frame)
                try:
                    return await future
                finally:
                    self._pending.pop(ref, None)
        except TimeoutError:
            raise RequestTimeout(
                f"no reply to {type_!r} within {self._request_timeout} s; it may have been applied"
            ) from None

    async def create_flow(
        self, *, amount: int, currency: str, pre_id: str | None = None, **optional: Any
    ) -> dict[str, Any]:
        """`created` {flow_id, token, state, version}. `optional`: idempotency_key, metadata,
        api_key, expect_version."""
        return await self.request(
            "create_flow", amount=amount, currency=currency, pre_id=pre_id, **optional
        )

    async def join(self, id: str, token: str, *, since: int | None = None) -> dict[str, Any]:
        """The flow's current `status`. Live statuses reach only subscriptions (`subscribe`)."""
        return await self.request("join", id=id, token=token, since=since)

    async def leave(self, id: str) -> dict[str, Any]:
        """Leave the flow; a subscription to it ends."""
        subscription = self._subscriptions.get(id)
        if subscription is not None:
            self._forget(subscription)
            subscription.end()
        return await self.request("leave", id=id)

    async def attach_booking(
        self, id: str, token: str, booking_id: str, **optional: Any
    ) -> dict[str, Any]:
        return await self.request(
            "attach_booking", id=id, token=token, booking_id=booking_id, **optional
        )

    async def select_method(
        self, id: str, token: str, payment_method: str, *, expect_version: int | None = None
    ) -> dict[str, Any]:
        return await self.request(
            "select_method",
            id=id,
            token=token,
            payment_method=payment_method,
            expect_version=expect_version,
        )

    async def submit(
        self, id: str, token: str, *, expect_version: int | None = None
    ) -> dict[str, Any]:
        return await self.request("submit", id=id, token=token, expect_version=expect_version)

    async def retry(
        self, id: str, token: str, *, expect_version: int | None = None
    ) -> dict[str, Any]:
        return await self.request("retry", id=id, token=token, expect_version=expect_version)

    async def cancel(
        self, id: str, token: str, *, expect_version: int | None = None
    ) -> dict[str, Any]:
        return await self.request("cancel", id=id, token=token, expect_version=expect_version)

    async def subscribe(
        self,
        id: str,
        token: str,
        *,
        callback: StatusCallback | None = None,
        since: int | None = None,
    ) -> Subscription:
        """Join the flow and follow it: the current status first (or every status after `since`),
        then live ones, across reconnects. One subscription per id."""
        if id in self._subscriptions:
            raise ValueError(f"already subscribed to {id!r}")
        subscription = Subscription(id=id, token=token, callback=callback, since=since)
        self._subscriptions[id] = subscription  # before the join: its catch-up frames come first
        try:
            await self.request("join", **subscription.join_fields())
        except BaseException:
            self._forget(subscription)
            raise
        return subscription

    # --- connection -------------------------------------------------------------------------

    async def _wait_connected(self) -> ClientConnection:
        while True:
            if self._stopped is not None:
                raise self._stopped
            if self._connection is not None:
                return self._connection
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _supervise(self) -> None:
        attempt = 0
        while self._stopped is None:
            try:
                connection = await connect(
                    self._url,
                    compression=None,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_timeout,
                )
            except _DIAL_ERRORS as error:
                attempt = await self._pause(attempt, error)
                continue
            if self._stopped is not None:  # closed while dialing
                await connection.close()
                return
            started = time.monotonic()
            await self._serve(connection)
            if time.monotonic() - started >= self._backoff.cap:
                attempt = 0  # it stayed up longer than any delay: count it as recovered
            attempt = await self._pause(attempt, "connection dropped")

    async def _pause(self, attempt: int, cause: object) -> int:
        """Wait the backoff delay before the next dial; stop the client once retries run out."""
        if self._stopped is not None:
            return attempt
        if self._backoff.exhausted(attempt):
            self._stop(ConnectionLost(f"gave up after {attempt} reconnect attempts: {cause}"))
            return attempt
        delay = self._backoff.delay(attempt, self._rng)
        _log().info("client_reconnecting", attempt=attempt + 1, delay=round(delay, 3))
        await asyncio.sleep(delay)
        return attempt + 1

    async def _serve(self, connection: ClientConnection) -> None:
        """Re-join, then read until the connection drops; pending requests then fail."""
        self.reconnects += self._ever_connected
        self._ever_connected = True
        try:
            for subscription in set(self._subscriptions.values()):
                join = {"type": "join", **subscription.join_fields()}
                _ref, future = await self._send(connection, join)
                future.add_done_callback(functools.partial(self._rejoined, subscription))
            self._connection = connection
            self._notify()
            async for message in connection:
                self._route(message)
        except (ConnectionClosed, ConnectionLost):
            pass
        finally:
            self._connection = None
            self._notify()
            self._fail_pending("the connection dropped")
            if self._stopped is None:
                _log().warning("client_disconnected", code=connection.close_code)

    async def _send(
        self, connection: ClientConnection, frame: dict[str, Any]
    ) -> tuple[int, asyncio.Future[dict[str, Any]]]:
        ref = next(self._refs)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = (future, str(frame["type"]))
        try:
            await connection.send(msgpack.packb({**frame, "ref": ref}, use_bin_type=True))
        except ConnectionClosed:
            self._pending.pop(ref, None)
            raise ConnectionLost(f"connection lost while sending {frame['type']!r}") from None
        return ref, future

    def _rejoined(self, subscription: Subscription, done: asyncio.Future[dict[str, Any]]) -> None:
        error = None if done.cancelled() else done.exception()
        if isinstance(error, PayflowError) and not isinstance(error, ConnectionLost):
            self._forget(subscription)
            subscription.end(error)

    # --- incoming frames --------------------------------------------------------------------

    def _route(self, message: bytes | str) -> None:
        frame = _unpack(message)
        if frame is None:
            return
        if frame.get("type") == "status":
            self._deliver(frame)
        ref = frame.get("ref")
        entry = self._pending.pop(ref, None) if isinstance(ref, int) else None
        if entry is None or entry[0].done():
            return
        if frame.get("type") == "error":
            entry[0].set_exception(error_from_frame(frame))
        else:
            entry[0].set_result(frame)

    def _deliver(self, status: dict[str, Any]) -> None:
        ids = [status.get(key) for key in ("flow_id", "booking_id", "pre_id")]
        for id in ids:
            subscription = self._subscriptions.get(id) if isinstance(id, str) else None
            if subscription is not None:
                flow_id = ids[0]
                if isinstance(flow_id, str):
                    subscription.flow_id = flow_id
                    self._subscriptions[flow_id] = subscription
                subscription.deliver(status)
                return

    # --- ending -----------------------------------------------------------------------------

    def _forget(self, subscription: Subscription) -> None:
        for key in [k for k, s in self._subscriptions.items() if s is subscription]:
            del self._subscriptions[key]

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for future, request_type in pending.values():
            if not future.done():
                future.set_exception(
                    ConnectionLost(
                        f"{why} before the reply to {request_type!r}; it may have been applied"
                    )
                )
                future.exception()  # retrieved here too: a re-join's future has no awaiter

    def _stop(self, error: PayflowError | None) -> None:
        """No more connections: end subscriptions (raising `error` if any), fail what waits."""
        if self._stopped is not None:
            return
        self._stopped = error or ConnectionLost("the client is closed")
        for subscription in set(self._subscriptions.values()):
            subscription.end(error)
        self._subscriptions.clear()
        self._fail_pending("the client stopped")
        self._notify()


def _unpack(message: bytes | str) -> dict[str, Any] | None:
    """A frame from the daemon, or None for anything that is not a msgpack map (ignored)."""
    if isinstance(message, str):
        return None
    try:
        frame = msgpack.unpackb(message, raw=False, strict_map_key=False)
    except (msgpack.UnpackException, ValueError, TypeError):
        return None
    return frame if isinstance(frame, dict) else None
