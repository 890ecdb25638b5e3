"""The Python client's parts that hold no connection: its errors and one flow subscription.

Errors: an `error` frame raises the runtime.errors class of its `code` (`except Forbidden`,
`except Retryable` work as on the daemon side); two more, both `Retryable`, say the transport
failed and the outcome of the request is unknown: `ConnectionLost` and `RequestTimeout`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from runtime.errors import (
    AliasConflict,
    BadFrame,
    Forbidden,
    Internal,
    InvalidField,
    InvalidTransition,
    NotFound,
    Overloaded,
    PayflowError,
    ProviderUnavailable,
    Retryable,
    UnknownType,
    VersionConflict,
)

StatusCallback = Callable[[dict[str, Any]], object]
"""Called on the client's loop with each new status; it must not block."""


class ConnectionLost(Retryable):
    """The connection dropped (or the client closed) before the reply arrived.

    The request may or may not have been applied: commands are never resent on their own. Re-read
    the flow (`join` gives its current status) or resend with `expect_version`.
    """

    code = "connection_lost"


class RequestTimeout(Retryable):
    """No reply within the request timeout; as for `ConnectionLost`, the outcome is unknown."""

    code = "timeout"


_ERRORS_BY_CODE: Mapping[str, type[PayflowError]] = {
    "bad_frame": BadFrame,
    "unknown_type": UnknownType,
    "invalid_field": InvalidField,
    "not_found": NotFound,
    "forbidden": Forbidden,
    "invalid_transition": InvalidTransition,
    "version_conflict": VersionConflict,
    "conflict": AliasConflict,
    "provider_unavailable": ProviderUnavailable,
    "overloaded": Overloaded,
    "internal": Internal,
}


def error_from_frame(frame: Mapping[str, Any]) -> PayflowError:
    """The exception for an `error` frame; a code this client does not know keeps its `code`."""
    code = str(frame.get("code"))
    message = str(frame.get("message") or code)
    error_class = _ERRORS_BY_CODE.get(code)
    if error_class is not None:
        return error_class(message)
    error = PayflowError(message)
    error.code = code
    return error


class _End:
    """Queued last: the iterator stops, or raises `error`."""

    def __init__(self, error: PayflowError | None) -> None:
        self.error = error


class Subscription:
    """The statuses of one flow, each exactly once and in version order, across reconnects.

    A status goes to `callback` when one was given, else into this async iterator (unbounded:
    iterate it). Iteration ends when the subscription is left or the client closes, and raises
    when it cannot continue (the client gave up reconnecting, or a re-join was refused).
    """

    def __init__(
        self, *, id: str, token: str, callback: StatusCallback | None, since: int | None
    ) -> None:
        self.id = id
        self.flow_id: str | None = None
        self.last_version: int | None = since
        self._token = token
        self._callback = callback
        self._queue: asyncio.Queue[dict[str, Any] | _End] = asyncio.Queue()
        self._ended = False

    def __repr__(self) -> str:
        return f"Subscription(id={self.id!r}, last_version={self.last_version!r})"

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later call ends the same way
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    @property
    def ended(self) -> bool:
        return self._ended

    def join_fields(self) -> dict[str, Any]:
        """The `join` that (re)subscribes: `since` the last version delivered, so the daemon
        sends exactly what was missed."""
        return {"id": self.id, "token": self._token, "since": self.last_version}

    def deliver(self, status: dict[str, Any]) -> bool:
        """Hand on `status` unless its version was already delivered; True if handed on."""
        version = status.get("version")
        if self._ended or not isinstance(version, int):
            return False
        if self.last_version is not None and version <= self.last_version:
            return False
        self.last_version = version
        if self._callback is None:
            self._queue.put_nowait(status)
            return True
        try:
            self._callback(status)
        except Exception:  # noqa: BLE001 - a user callback's bug must not stop the reader
            structlog.get_logger("payflowd.client").exception(
                "subscription_callback_failed", flow_id=status.get("flow_id")
            )
        return True

    def end(self, error: PayflowError | None = None) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_End(error))
