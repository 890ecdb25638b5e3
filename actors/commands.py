"""What a websocket client asks the daemon, and what it is answered, as typed messages.

Pure data: adapters/codec.py turns msgpack frames into these and back, so the bridge and the
flow core never touch a raw frame. Field names are the wire names of CONTRACT.md ("Websocket
bridge"); each class's `TYPE` is its frame `type`. A codec-built request has passed every field
rule (types, ranges, lengths); what needs state (`not_found`, `forbidden`, `version_conflict`,
`invalid_transition`) is decided later by the flow, in that order.

`status` frames are not a class here: the flow core's status view is already a plain mapping and
the fan-out encodes it once for every client, so it stays one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, TypeAlias

from runtime.errors import PayflowError

Ref: TypeAlias = bool | int | float | str | bytes | None
"""A request's `ref`: any msgpack scalar, echoed verbatim on the one reply to that request."""

WIRE_ERROR_CODES: frozenset[str] = frozenset(
    {
        "bad_frame",
        "unknown_type",
        "invalid_field",
        "not_found",
        "forbidden",
        "invalid_transition",
        "version_conflict",
        "conflict",
        "provider_unavailable",
        "overloaded",
        "internal",
    }
)
"""The `code`s an `error` frame may carry (CONTRACT.md); anything else goes out as `internal`."""


def _no_metadata() -> Mapping[str, str]:
    return MappingProxyType({})


# --- requests (client -> daemon) ---------------------------------------------------------------
# Secrets (`token`, `api_key`) are left out of repr() so a logged command never leaks them.


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What every request may carry: a `ref` to echo and a version to guard the command with."""

    TYPE: ClassVar[str]
    ref: Ref = None
    expect_version: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateFlow(Request):
    TYPE: ClassVar[str] = "create_flow"
    amount: int
    currency: str
    pre_id: str | None = None
    idempotency_key: str | None = None
    metadata: Mapping[str, str] = field(default_factory=_no_metadata)
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowRequest(Request):
    """A request that names a flow (by flow_id, booking_id or pre_id) and proves its token."""

    TYPE: ClassVar[str]
    id: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Join(FlowRequest):
    TYPE: ClassVar[str] = "join"
    since: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Leave(Request):
    """Leaving needs no token: it only detaches this connection from a flow it had joined."""

    TYPE: ClassVar[str] = "leave"
    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachBooking(FlowRequest):
    # `api_key` too: with PAYFLOWD_API_KEY set only the booking backend may bind bookings.
    TYPE: ClassVar[str] = "attach_booking"
    booking_id: str
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectMethod(FlowRequest):
    TYPE: ClassVar[str] = "select_method"
    payment_method: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Submit(FlowRequest):
    TYPE: ClassVar[str] = "submit"


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry(FlowRequest):
    TYPE: ClassVar[str] = "retry"


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel(FlowRequest):
    TYPE: ClassVar[str] = "cancel"


Command: TypeAlias = (
    CreateFlow | Join | Leave | AttachBooking | SelectMethod | Submit | Retry | Cancel
)

COMMAND_CLASSES: tuple[type[Command], ...] = (
    CreateFlow,
    Join,
    Leave,
    AttachBooking,
    SelectMethod,
    Submit,
    Retry,
    Cancel,
)


# --- replies (daemon -> client) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Created:
    """The reply to `create_flow`; the connection that sent it is now joined to the flow."""

    TYPE: ClassVar[str] = "created"
    ref: Ref = None
    flow_id: str
    token: str = field(repr=False)
    state: str
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The command was validated and made durable; its effects arrive as `status` frames."""

    TYPE: ClassVar[str] = "ack"
    ref: Ref = None
    flow_id: str
    version: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorFrame:
    TYPE: ClassVar[str] = "error"
    ref: Ref = None
    code: str
    message: str

    @classmethod
    def from_error(cls, error: PayflowError, *, ref: Ref = None) -> ErrorFrame:
        """The frame a client sees for `error`: its wire code and message.

        A code outside the contract's list (say a config error) and every `internal` error go out
        as a bare `internal`: their text describes our insides, not the client's request.
        """
        if error.code not in WIRE_ERROR_CODES or error.code == "internal":
            return cls(ref=ref, code="internal", message="internal error")
        return cls(ref=ref, code=error.code, message=str(error) or error.code)


Reply: TypeAlias = Created | Ack | ErrorFrame
