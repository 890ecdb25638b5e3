"""The websocket bridge's wire format: msgpack bytes in, typed requests out, and back (sans-I/O).

No socket here: the bridge hands over each message it received (`decode_request`) and sends the
bytes it is given (`encode`, `encode_status`, `encode_error`). This is the only module that
speaks msgpack for the bridge, so every wire rule of CONTRACT.md ("Websocket bridge") lives here.

Decoding rules, checked in this order (the contract's "frame shape and fields" step):

1. a text message, more than `MAX_FRAME_BYTES`, bytes that are not exactly one msgpack value,
   a value that is not a map, a map key that is not a string, a missing or non-string `type`:
   `bad_frame`;
2. a `ref` that is not a msgpack scalar (nil, bool, int, float, str, bin, ext, timestamp):
   `invalid_field`;
3. a `type` no request has: `unknown_type`;
4. each field of that request, in the order of `_SCHEMAS`: `invalid_field` naming the field.

Every error raised here is a `FrameRejected` carrying the request's `ref` once it could be read,
so the bridge answers `except FrameRejected as e: send(encode_error(e.ref, e))`.

Fields this daemon does not know are ignored, as the contract asks of clients: a newer client
may send more than we read. A known field sent as nil counts as absent (nil is "does not apply"
on this wire), so an optional field may be nil and a required one may not. A `token` is the one
exception: missing, nil or empty, it decodes as "" (no token), which the application refuses as
`forbidden` after `not_found`, in the contract's order ("a missing or wrong token").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import partial
from types import MappingProxyType
from typing import Any

import msgpack

from actors.commands import (
    AttachBooking,
    Cancel,
    Command,
    CreateFlow,
    ErrorFrame,
    Join,
    Leave,
    Ref,
    Reply,
    Retry,
    SelectMethod,
    Submit,
)
from actors.currencies import is_currency
from runtime.errors import BadFrame, Internal, InvalidField, PayflowError, Rejected, UnknownType

# --- limits: what one frame may hold ------------------------------------------------------------

MAX_FRAME_BYTES = 64 * 1024
"""Largest message accepted; the websocket server's `max_size` is set to this too."""
MAX_CONTAINER_ITEMS = 1024
"""Largest array or map msgpack may build from one frame (requests need a few dozen keys)."""
MAX_AMOUNT = 999_999_999_999
"""12 digits of minor units: Stripe's loosest per-currency ceiling; it enforces the tighter ones."""
MAX_TEXT_LENGTH = 200
"""ids, tokens, idempotency keys, payment methods (Stripe's own ids stay well under 100)."""
MAX_API_KEY_LENGTH = 512
"""An operator-chosen secret: allowed longer than an id."""
MAX_VERSION = 2**63 - 1
"""Versions are stored as SQLite integers (signed 64 bit)."""
METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500
"""Stripe's metadata limits, so whatever a flow accepts the provider accepts too."""

# Everything msgpack raises on hostile input: FormatError/StackError/ExtraData (ValueError),
# a truncated value (ValueError), UnicodeDecodeError, an unhashable map key (TypeError).
_UNPACK_ERRORS = (msgpack.UnpackException, ValueError, TypeError, OverflowError)
_PACK_ERRORS = (TypeError, ValueError, OverflowError)


# --- errors -------------------------------------------------------------------------------------


class FrameRejected(Rejected):
    """A request refused on its shape or fields, carrying its `ref` whenever it could be read."""

    def __init__(self, message: str, *, ref: Ref = None, field: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref
        self.field = field


class BadRequestFrame(FrameRejected, BadFrame):
    """`bad_frame`: not a binary msgpack map with a string `type`."""


class UnknownRequestType(FrameRejected, UnknownType):
    """`unknown_type`: a well-formed frame whose `type` names no request."""


class InvalidRequestField(FrameRejected, InvalidField):
    """`invalid_field`: `field` is missing, of the wrong type or out of range."""


class _RuleError(Exception):
    """A field rule failed; `_read_fields` turns it into `InvalidRequestField` for that field."""


# --- bytes -> msgpack map -----------------------------------------------------------------------


def unpack_frame(data: bytes | str) -> dict[Any, Any]:
    """Exactly one msgpack map from one binary message, within the limits above, else BadFrame."""
    if isinstance(data, str):
        raise BadFrame("text message: frames are binary msgpack")
    if len(data) > MAX_FRAME_BYTES:
        raise BadFrame(f"frame larger than {MAX_FRAME_BYTES} bytes")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,  # so a non-str key is our bad_frame, not msgpack's ValueError
            max_str_len=MAX_FRAME_BYTES,
            max_bin_len=MAX_FRAME_BYTES,
            max_ext_len=MAX_FRAME_BYTES,
            max_array_len=MAX_CONTAINER_ITEMS,
            max_map_len=MAX_CONTAINER_ITEMS,
        )
    except _UNPACK_ERRORS:
        raise BadFrame("not a single well-formed msgpack value") from None
    if not isinstance(value, dict):
        raise BadFrame("frame is not a msgpack map")
    return value


# --- field rules: value in, checked value out, _RuleError with the reason otherwise -------------


def _integer(value: object, *, low: int, high: int) -> int:
    # bool is an int in Python but its own type in msgpack: `true` is not the number 1 here.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _RuleError("must be an integer")
    if not low <= value <= high:
        raise _RuleError(f"must be between {low} and {high}")
    return value


def _text(value: object, *, limit: int = MAX_TEXT_LENGTH) -> str:
    if not isinstance(value, str):
        raise _RuleError("must be a string")
    if not 0 < len(value) <= limit:
        raise _RuleError(f"must be 1 to {limit} characters")
    if not value.isprintable():
        raise _RuleError("must not contain control characters")
    return value


def _currency(value: object) -> str:
    if not isinstance(value, str) or not is_currency(value):
        raise _RuleError("must be a lower-case ISO 4217 currency code")
    return value


def _metadata(value: object) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise _RuleError("must be a map of strings")
    if len(value) > METADATA_MAX_KEYS:
        raise _RuleError(f"must have at most {METADATA_MAX_KEYS} keys")
    for key, item in value.items():
        _metadata_entry(key, item)
    return MappingProxyType(dict(value))


def _metadata_entry(key: object, item: object) -> None:
    # Stripe's rules: keys up to 40 characters without square brackets, values up to 500.
    if not isinstance(key, str) or not 0 < len(key) <= METADATA_MAX_KEY_LENGTH:
        raise _RuleError(f"keys must be strings of 1 to {METADATA_MAX_KEY_LENGTH} characters")
    if not key.isprintable() or "[" in key or "]" in key:
        raise _RuleError("keys must be printable and contain no square brackets")
    if not isinstance(item, str) or len(item) > METADATA_MAX_VALUE_LENGTH:
        raise _RuleError(f"values must be strings of at most {METADATA_MAX_VALUE_LENGTH} chars")


_amount = partial(_integer, low=1, high=MAX_AMOUNT)
_version = partial(_integer, low=0, high=MAX_VERSION)
_api_key = partial(_text, limit=MAX_API_KEY_LENGTH)


# --- the requests as data: type -> (class, {field: rule}) ---------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    rule: Callable[[object], object]
    required: bool = True
    absent: object = None
    """What an optional field that is missing or nil decodes as; None leaves it out (the
    request's own default)."""


@dataclass(frozen=True, slots=True)
class _Schema:
    build: Callable[..., Command]
    fields: Mapping[str, _Field]
    checks: tuple[tuple[str, _Field], ...] = ()
    """`fields` then the common ones, in checking order: merged once, not per request."""

    def __post_init__(self) -> None:
        merged = {**self.fields, **_COMMON_FIELDS}
        object.__setattr__(self, "checks", tuple(merged.items()))


def _optional(rule: Callable[[object], object]) -> _Field:
    return _Field(rule, required=False)


def _token(value: object) -> str:
    # Any string (an empty one included) is a token to check: a wrong one is `forbidden`.
    if not isinstance(value, str):
        raise _RuleError("must be a string")
    if len(value) > MAX_TEXT_LENGTH:
        raise _RuleError(f"must be at most {MAX_TEXT_LENGTH} characters")
    return value


_FLOW_FIELDS = {"id": _Field(_text), "token": _Field(_token, required=False, absent="")}
_COMMON_FIELDS = {"expect_version": _optional(_version)}

_SCHEMAS: Mapping[str, _Schema] = {
    CreateFlow.TYPE: _Schema(
        CreateFlow,
        {
            "amount": _Field(_amount),
            "currency": _Field(_currency),
            "pre_id": _optional(_text),
            "idempotency_key": _optional(_text),
            "metadata": _optional(_metadata),
            "api_key": _optional(_api_key),
        },
    ),
    Join.TYPE: _Schema(Join, {**_FLOW_FIELDS, "since": _optional(_version)}),
    Leave.TYPE: _Schema(Leave, {"id": _Field(_text)}),
    AttachBooking.TYPE: _Schema(
        AttachBooking,
        {**_FLOW_FIELDS, "booking_id": _Field(_text), "api_key": _optional(_api_key)},
    ),
    SelectMethod.TYPE: _Schema(SelectMethod, {**_FLOW_FIELDS, "payment_method": _Field(_text)}),
    Submit.TYPE: _Schema(Submit, _FLOW_FIELDS),
    Retry.TYPE: _Schema(Retry, _FLOW_FIELDS),
    Cancel.TYPE: _Schema(Cancel, _FLOW_FIELDS),
}


# --- decoding -----------------------------------------------------------------------------------


def decode_request(data: bytes | str) -> Command:
    """The request in one websocket message; raises a `FrameRejected` (see the module doc)."""
    try:
        frame = unpack_frame(data)
    except BadFrame as error:
        raise BadRequestFrame(str(error)) from None
    ref = frame.get("ref")
    if not _is_scalar(ref):
        _request_type(frame, None)  # a bad_frame outranks the bad ref
        raise InvalidRequestField("field 'ref': must be a msgpack scalar", field="ref")
    kind = _request_type(frame, ref)
    schema = _SCHEMAS.get(kind)
    if schema is None:
        raise UnknownRequestType(f"unknown request type {kind[:40]!r}", ref=ref)
    return schema.build(ref=ref, **_read_fields(frame, schema, ref))


def _request_type(frame: dict[Any, Any], ref: Ref) -> str:
    for key in frame:  # a plain loop: all() over a generator costs a frame per key
        if not isinstance(key, str):
            raise BadRequestFrame("frame keys must be strings", ref=ref)
    kind = frame.get("type")
    if kind is None:
        raise BadRequestFrame("frame has no 'type'", ref=ref)
    if not isinstance(kind, str):
        raise BadRequestFrame("frame 'type' must be a string", ref=ref)
    return kind


def _read_fields(frame: dict[str, Any], schema: _Schema, ref: Ref) -> dict[str, object]:
    checked: dict[str, object] = {}
    for name, spec in schema.checks:
        value = frame.get(name)
        if value is None:
            if spec.required:
                raise InvalidRequestField(f"field {name!r}: is required", field=name, ref=ref)
            if spec.absent is not None:
                checked[name] = spec.absent
            continue
        try:
            checked[name] = spec.rule(value)
        except _RuleError as problem:
            # The value itself is never echoed: it may be a token or an API key.
            raise InvalidRequestField(f"field {name!r}: {problem}", field=name, ref=ref) from None
    return checked


# A tuple: isinstance checks it faster than a union. Ext values and timestamps are scalars in
# msgpack too (not containers), and echo back as they came.
_SCALAR_TYPES = (bool, int, float, str, bytes, msgpack.ExtType, msgpack.Timestamp)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, _SCALAR_TYPES)


# --- encoding -----------------------------------------------------------------------------------


def _plain(value: object) -> object:
    """msgpack's fallback for what it cannot pack itself: read-only mappings such as metadata."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def pack(frame: Mapping[str, Any]) -> bytes:
    """One msgpack map, str as str and bytes as bin; an unencodable value is our bug: Internal."""
    try:
        # packb, not a reused Packer: a reused one (per thread) was faster alone but cost an
        # mmap/mremap/munmap per frame on the loop thread (msgpack 1.2), slower end to end.
        packed: bytes = msgpack.packb(frame, use_bin_type=True, default=_plain)
    except _PACK_ERRORS as error:
        raise Internal(f"frame cannot be encoded: {error}") from error
    return packed


def encode(frame: Mapping[str, Any] | Reply) -> bytes:
    """A frame to send: a reply dataclass, or a ready mapping (sent as is, `type` included)."""
    if type(frame) is dict or isinstance(frame, Mapping):  # dict first: the fan-out's status
        return pack(frame)
    return pack({"type": frame.TYPE, **_field_values(frame)})


def encode_reply(reply: Mapping[str, Any] | Reply, ref: Ref) -> bytes:
    """`encode(reply)` with `ref` set to the request's: what the bridge sends for each answer.
    Sets the key in the map being packed rather than copy the reply (dataclasses.replace
    re-runs the class's __init__, a few microseconds per request)."""
    frame = dict(reply) if isinstance(reply, Mapping) else _reply_map(reply)
    frame["ref"] = ref
    return pack(frame)


def _reply_map(reply: Reply) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": reply.TYPE}
    for name in _field_names(type(reply)):
        frame[name] = getattr(reply, name)
    return frame


def encode_status(view: Mapping[str, Any]) -> bytes:
    """A live or catch-up `status` frame (no `ref`). Encode once, send the bytes to every client."""
    return pack({**view, "type": "status"})


def encode_status_reply(view: Mapping[str, Any], ref: Ref) -> bytes:
    """The `status` frame that answers a `join`: the current status carrying the join's `ref`."""
    return pack({**view, "type": "status", "ref": ref})


def encode_error(ref: Ref, error: PayflowError) -> bytes:
    """The `error` frame answering a request that failed with `error`."""
    return encode(ErrorFrame.from_error(error, ref=ref))


def encode_request(command: Command) -> bytes:
    """A request as a client sends it, leaving out what is not given: for clients and tests."""
    given = {name: value for name, value in _field_values(command).items() if _is_given(value)}
    return pack({"type": command.TYPE, **given})


def _is_given(value: object) -> bool:
    # 0, False and "" are real values (a `since` of 0, a `ref` of false); only nil and an empty
    # metadata map mean "not given".
    return value is not None and not (isinstance(value, Mapping) and not value)


def _field_values(message: Command | Reply) -> dict[str, Any]:
    return {name: getattr(message, name) for name in _field_names(type(message))}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type[Command | Reply]) -> tuple[str, ...]:
    """A message class's field names in order; `fields()` rebuilds this list on every call."""
    names = _FIELD_NAMES.get(cls)
    if names is None:  # two threads may both compute it: the same tuple either way
        names = _FIELD_NAMES[cls] = tuple(spec.name for spec in fields(cls))
    return names
