"""The bridge codec: every request and reply of the contract, and every way a frame can be bad."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.commands import (
    Ack,
    AttachBooking,
    Cancel,
    Command,
    Created,
    CreateFlow,
    ErrorFrame,
    FlowRequest,
    Join,
    Leave,
    Retry,
    SelectMethod,
    Submit,
)
from actors.currencies import ISO_4217_CODES
from adapters.codec import (
    MAX_AMOUNT,
    MAX_API_KEY_LENGTH,
    MAX_CONTAINER_ITEMS,
    MAX_FRAME_BYTES,
    MAX_TEXT_LENGTH,
    BadRequestFrame,
    FrameRejected,
    InvalidRequestField,
    UnknownRequestType,
    decode_request,
    encode,
    encode_error,
    encode_reply,
    encode_request,
    encode_status,
    encode_status_reply,
    pack,
)
from runtime.errors import (
    BadFrame,
    Forbidden,
    Internal,
    InvalidField,
    NotFound,
    PayflowError,
    UnknownType,
)


def wire(**fields: Any) -> bytes:
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def unwire(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


# --- requests: every type decodes into its dataclass --------------------------------------------

ROUND_TRIPS: list[tuple[dict[str, Any], Command]] = [
    (
        {"type": "create_flow", "amount": 1999, "currency": "eur"},
        CreateFlow(amount=1999, currency="eur"),
    ),
    (
        {
            "type": "create_flow",
            "ref": 1,
            "amount": 500,
            "currency": "jpy",
            "pre_id": "pre_42",
            "idempotency_key": "idem-1",
            "metadata": {"hotel": "Grand", "nights": "3"},
            "api_key": "backend-key",
            "expect_version": 0,
        },
        CreateFlow(
            ref=1,
            amount=500,
            currency="jpy",
            pre_id="pre_42",
            idempotency_key="idem-1",
            metadata={"hotel": "Grand", "nights": "3"},
            api_key="backend-key",
            expect_version=0,
        ),
    ),
    ({"type": "join", "id": "flow_1", "token": "tok"}, Join(id="flow_1", token="tok")),
    (
        {"type": "join", "ref": "j", "id": "bk_9", "token": "tok", "since": 0},
        Join(ref="j", id="bk_9", token="tok", since=0),
    ),
    ({"type": "leave", "ref": b"\x00\x01", "id": "pre_42"}, Leave(ref=b"\x00\x01", id="pre_42")),
    (
        {"type": "attach_booking", "id": "pre_42", "token": "tok", "booking_id": "bk_9"},
        AttachBooking(id="pre_42", token="tok", booking_id="bk_9"),
    ),
    (
        {"type": "attach_booking", "id": "f", "token": "t", "booking_id": "b", "api_key": "k"},
        AttachBooking(id="f", token="t", booking_id="b", api_key="k"),
    ),
    (
        {"type": "select_method", "ref": 2.5, "id": "f", "token": "t", "payment_method": "pm_x"},
        SelectMethod(ref=2.5, id="f", token="t", payment_method="pm_x"),
    ),
    (
        {"type": "submit", "ref": False, "id": "f", "token": "t", "expect_version": 4},
        Submit(ref=False, id="f", token="t", expect_version=4),
    ),
    ({"type": "retry", "id": "f", "token": "t"}, Retry(id="f", token="t")),
    ({"type": "cancel", "ref": -3, "id": "f", "token": "t"}, Cancel(ref=-3, id="f", token="t")),
]


@pytest.mark.parametrize(("frame", "expected"), ROUND_TRIPS)
def test_each_request_type_decodes_to_its_command(frame: dict[str, Any], expected: Command) -> None:
    assert decode_request(wire(**frame)) == expected


@pytest.mark.parametrize(("frame", "command"), ROUND_TRIPS)
def test_encode_request_writes_what_decode_request_reads(
    frame: dict[str, Any], command: Command
) -> None:
    assert unwire(encode_request(command)) == frame
    assert decode_request(encode_request(command)) == command


def test_decoded_metadata_is_a_read_only_copy() -> None:
    command = decode_request(
        wire(type="create_flow", amount=1, currency="eur", metadata={"a": "b"})
    )
    assert isinstance(command, CreateFlow)
    assert dict(command.metadata) == {"a": "b"}
    with pytest.raises(TypeError):
        command.metadata["a"] = "c"  # type: ignore[index]


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    frame = wire(type="leave", id="f", ref=9, priority=[1, {"x": None}], shiny=True)
    assert decode_request(frame) == Leave(ref=9, id="f")


def test_nil_optional_fields_count_as_absent() -> None:
    frame = wire(type="join", id="f", token="t", since=None, expect_version=None, ref=None)
    assert decode_request(frame) == Join(id="f", token="t")


def test_a_frame_of_exactly_the_size_limit_is_accepted() -> None:
    base = len(wire(type="leave", id="f", pad=""))
    padding = "a" * (MAX_FRAME_BYTES - base - 2)  # a str over 255 bytes needs 2 more header bytes
    frame = wire(type="leave", id="f", pad=padding)
    assert len(frame) == MAX_FRAME_BYTES
    assert decode_request(frame) == Leave(id="f")


# --- requests: every bad frame and field gets its contract code, echoing `ref` when readable ----

VALID: dict[str, dict[str, Any]] = {
    "create_flow": {"amount": 1000, "currency": "eur"},
    "join": {"id": "f", "token": "t"},
    "leave": {"id": "f"},
    "attach_booking": {"id": "f", "token": "t", "booking_id": "b"},
    "select_method": {"id": "f", "token": "t", "payment_method": "pm_card_visa"},
    "submit": {"id": "f", "token": "t"},
    "retry": {"id": "f", "token": "t"},
    "cancel": {"id": "f", "token": "t"},
}
STRING_FIELDS = {
    "create_flow": ["pre_id", "idempotency_key", "api_key"],
    "join": ["id", "token"],
    "leave": ["id"],
    "attach_booking": ["id", "token", "booking_id", "api_key"],
    "select_method": ["id", "token", "payment_method"],
    "submit": ["id", "token"],
    "retry": ["id", "token"],
    "cancel": ["id", "token"],
}
BAD_STRINGS = ["", "ab\x00c", "line\nbreak", "tab\tbed", "del\x7f", 7, 1.5, True]
BAD_STRINGS += [b"bytes", ["list"], {"a": "map"}]
NOT_STRINGS = [value for value in BAD_STRINGS if not isinstance(value, str)]
BAD_VERSIONS = [-1, True, False, 1.0, "3", [3], 2**63]


ABSENT = object()


def request(kind: str, **changes: Any) -> dict[str, Any]:
    """A valid request of `kind` with `changes` applied (ABSENT leaves the field out)."""
    frame = {"type": kind, "ref": f"ref-{kind}", **VALID[kind], **changes}
    return {name: value for name, value in frame.items() if value is not ABSENT}


def field_cases() -> list[Any]:
    cases: list[Any] = []
    for kind, fields in VALID.items():
        for name in fields:  # every required field left out, or sent as nil
            if name == "token":
                continue  # no token is the application's `forbidden` (see below)
            cases += [
                pytest.param(kind, {name: ABSENT}, name, id=f"{kind}-{name}-absent"),
                pytest.param(kind, {name: None}, name, id=f"{kind}-{name}-nil"),
            ]
        for name in STRING_FIELDS[kind]:
            too_long = "x" * (MAX_API_KEY_LENGTH + 1 if name == "api_key" else MAX_TEXT_LENGTH + 1)
            bad_values = NOT_STRINGS if name == "token" else BAD_STRINGS
            cases += [
                pytest.param(kind, {name: bad}, name, id=f"{kind}-{name}-{bad!r:.12}")
                for bad in [*bad_values, too_long]
            ]
        cases += [
            pytest.param(kind, {"expect_version": bad}, "expect_version", id=f"{kind}-ev-{bad!r}")
            for bad in BAD_VERSIONS
        ]
    cases += [
        pytest.param("join", {"since": bad}, "since", id=f"since-{bad!r}") for bad in BAD_VERSIONS
    ]
    return cases


AMOUNTS = [0, -1, -(2**63), MAX_AMOUNT + 1, 2**64 - 1, True, 10.0, 10.5, "1000", None]
CURRENCIES = ["EUR", "Eur", "xx", "abc", "euro", "", "xts", "hrk", 978, None, b"eur", ["eur"]]
METADATA: list[Any] = [
    "k=v",
    ["k", "v"],
    {"k": 1},
    {"k": None},
    {"k": b"v"},
    {"k": {"nested": "v"}},
    {1: "v"},
    {"": "v"},
    {"k" * 41: "v"},
    {"k[0]": "v"},
    {"ke\ny": "v"},
    {"k": "v" * 501},
    {f"k{i}": "v" for i in range(51)},
]


def create_flow_cases() -> list[Any]:
    return [
        *(pytest.param({"amount": bad}, "amount", id=f"amount-{bad!r}") for bad in AMOUNTS),
        *(pytest.param({"currency": bad}, "currency", id=f"cur-{bad!r}") for bad in CURRENCIES),
        *(
            pytest.param({"metadata": bad}, "metadata", id=f"meta-{i}")
            for i, bad in enumerate(METADATA)
        ),
    ]


@pytest.mark.parametrize("kind", ["join", "attach_booking", "select_method", "submit", "cancel"])
@pytest.mark.parametrize("token", [ABSENT, None, "", "ab\x00c"])
def test_a_missing_or_malformed_token_string_decodes_as_no_token(kind: str, token: Any) -> None:
    # The contract's order puts `not_found` before `forbidden` ("a missing or wrong token"): the
    # codec lets the request through, and the application refuses it (tests/adapters/test_app.py).
    command = decode_request(wire(**request(kind, token=token)))
    assert isinstance(command, FlowRequest)
    assert command.token == ("ab\x00c" if token == "ab\x00c" else "")


@pytest.mark.parametrize("ref", [msgpack.ExtType(5, b"x"), msgpack.Timestamp(1, 0)])
def test_ext_and_timestamp_refs_are_scalars_and_echo_back(ref: Any) -> None:
    command = decode_request(wire(type="leave", id="f", ref=ref))
    assert command.ref == ref
    error = msgpack.unpackb(encode_error(ref, NotFound("no such flow")))
    assert error["ref"] == ref


@pytest.mark.parametrize(("kind", "changes", "field"), field_cases())
def test_a_bad_field_is_invalid_field_naming_it(kind: str, changes: Any, field: str) -> None:
    assert_invalid_field(request(kind, **changes), field, ref=f"ref-{kind}")


@pytest.mark.parametrize(("changes", "field"), create_flow_cases())
def test_a_bad_create_flow_field_is_invalid_field(changes: Any, field: str) -> None:
    assert_invalid_field(request("create_flow", **changes), field, ref="ref-create_flow")


def assert_invalid_field(frame: dict[str, Any], field: str, *, ref: Any) -> None:
    with pytest.raises(InvalidRequestField) as caught:
        decode_request(wire(**frame))
    assert caught.value.code == "invalid_field"
    assert isinstance(caught.value, InvalidField)
    assert caught.value.field == field
    assert f"'{field}'" in str(caught.value)
    assert caught.value.ref == ref


def test_limits_themselves_are_accepted() -> None:
    metadata = {f"k{i:039d}": "v" * 500 for i in range(50)}
    frame = request("create_flow", amount=MAX_AMOUNT, metadata=metadata, pre_id="p" * 200)
    command = decode_request(wire(**frame))
    assert isinstance(command, CreateFlow)
    assert (command.amount, len(command.metadata), command.pre_id) == (MAX_AMOUNT, 50, "p" * 200)
    assert decode_request(wire(**request("join", since=2**63 - 1))) == Join(
        ref="ref-join", id="f", token="t", since=2**63 - 1
    )


def test_fields_are_checked_in_order_and_the_first_bad_one_is_named() -> None:
    with pytest.raises(InvalidRequestField) as caught:
        decode_request(wire(**request("create_flow", amount=0, currency="EUR")))
    assert caught.value.field == "amount"


@pytest.mark.parametrize(
    "frame",
    [
        request("submit", token="tok_SECRET" * 30),
        request("attach_booking", api_key="key_SECRET\x00"),
    ],
)
def test_the_message_never_echoes_a_rejected_value(frame: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestField) as caught:
        decode_request(wire(**frame))
    assert "SECRET" not in str(caught.value)


def _deep(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


BAD_FRAMES: list[Any] = [
    pytest.param("text", None, id="text-message"),
    pytest.param('{"type": "join"}', None, id="json-text-message"),
    pytest.param(b"", None, id="empty"),
    pytest.param(b"\xc1", None, id="never-used-byte"),
    pytest.param(b"\xff\xfe\xfd\x00garbage", None, id="garbage"),
    pytest.param(wire(type="leave", id="f")[:-1], None, id="truncated"),
    pytest.param(wire(type="leave", id="f") * 2, None, id="two-values"),
    pytest.param(msgpack.packb([{"type": "leave"}]), None, id="list-top-level"),
    pytest.param(msgpack.packb(42), None, id="int-top-level"),
    pytest.param(msgpack.packb("leave"), None, id="str-top-level"),
    pytest.param(msgpack.packb(None), None, id="nil-top-level"),
    pytest.param(b"\x81\xa4type\xa2\xff\xfe", None, id="invalid-utf8"),
    pytest.param(b"\x81\x91\x01\xc0", None, id="list-as-map-key"),
    pytest.param(_deep(5000), None, id="too-deep"),
    pytest.param(b"\xdf\xff\xff\xff\xff", None, id="map-claims-4G-entries"),
    pytest.param(wire(ref=5, id="f"), 5, id="missing-type"),
    pytest.param(wire(type=None, ref=5), 5, id="nil-type"),
    pytest.param(wire(type=3, ref="r"), "r", id="int-type"),
    pytest.param(wire(type=b"join", ref="r"), "r", id="bin-type"),
    pytest.param(wire(type=["join"], ref="r"), "r", id="list-type"),
    pytest.param(msgpack.packb({"type": "leave", "id": "f", 1: "x", "ref": 7}), 7, id="int-key"),
    pytest.param(wire(type="leave", id="f", pad="a" * MAX_FRAME_BYTES), None, id="oversize"),
    pytest.param(
        wire(type="leave", **{f"k{i}": 0 for i in range(MAX_CONTAINER_ITEMS)}),
        None,
        id="map-too-big",
    ),
]


@pytest.mark.parametrize(("data", "ref"), BAD_FRAMES)
def test_a_malformed_frame_is_bad_frame(data: bytes | str, ref: Any) -> None:
    with pytest.raises(BadRequestFrame) as caught:
        decode_request(data)
    assert caught.value.code == "bad_frame"
    assert isinstance(caught.value, BadFrame)
    assert caught.value.ref == ref


@pytest.mark.parametrize("kind", ["frobnicate", "status", "created", "JOIN", "", "create-flow"])
def test_an_unknown_type_is_unknown_type_echoing_ref(kind: str) -> None:
    with pytest.raises(UnknownRequestType) as caught:
        decode_request(wire(type=kind, ref=1, id="f", token="t"))
    assert caught.value.code == "unknown_type"
    assert isinstance(caught.value, UnknownType)
    assert caught.value.ref == 1


@pytest.mark.parametrize("ref", [{"a": 1}, [1], [], {}])
def test_a_non_scalar_ref_is_invalid_field_and_not_echoed(ref: Any) -> None:
    with pytest.raises(InvalidRequestField) as caught:
        decode_request(wire(type="leave", id="f", ref=ref))
    assert (caught.value.code, caught.value.field, caught.value.ref) == (
        "invalid_field",
        "ref",
        None,
    )


def test_shape_is_checked_before_ref_and_ref_before_type_and_fields() -> None:
    with pytest.raises(BadRequestFrame):
        decode_request(wire(ref=[1]))
    with pytest.raises(InvalidRequestField):
        decode_request(wire(type="no_such_type", ref=[1]))
    with pytest.raises(UnknownRequestType):
        decode_request(wire(type="no_such_type", ref=1, amount=-5))


# --- replies ------------------------------------------------------------------------------------


def test_created_encodes_with_the_contract_keys() -> None:
    reply = Created(ref="c1", flow_id="flow_1", token="tok", state="PRE_BOOKING", version=1)
    assert unwire(encode(reply)) == {
        "type": "created",
        "ref": "c1",
        "flow_id": "flow_1",
        "token": "tok",
        "state": "PRE_BOOKING",
        "version": 1,
    }


def test_ack_encodes_with_the_contract_keys_and_nil_ref() -> None:
    frame = unwire(encode(Ack(flow_id="flow_1", version=3)))
    assert frame == {"type": "ack", "ref": None, "flow_id": "flow_1", "version": 3}


def test_error_frame_encodes_with_the_contract_keys() -> None:
    frame = unwire(encode(ErrorFrame(ref=b"\x07", code="not_found", message="no such flow")))
    assert frame == {
        "type": "error",
        "ref": b"\x07",
        "code": "not_found",
        "message": "no such flow",
    }


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotFound("no flow 'x'"), "not_found"),
        (Forbidden("wrong token"), "forbidden"),
        (Internal("row 4 broken"), "internal"),
    ],
)
def test_encode_error_carries_the_errors_code(error: PayflowError, code: str) -> None:
    frame = unwire(encode_error(12, error))
    assert (frame["type"], frame["ref"], frame["code"]) == ("error", 12, code)
    assert isinstance(frame["message"], str)
    assert frame["message"]


def test_a_decode_error_round_trips_into_an_error_frame_echoing_ref() -> None:
    try:
        decode_request(wire(type="join", ref="j-1", token="t"))
    except FrameRejected as error:
        frame = unwire(encode_error(error.ref, error))
    assert frame == {
        "type": "error",
        "ref": "j-1",
        "code": "invalid_field",
        "message": "field 'id': is required",
    }


STATUS_VIEW: dict[str, Any] = {
    "flow_id": "flow_1",
    "booking_id": None,
    "pre_id": "pre_1",
    "state": "PAYMENT_PENDING",
    "version": 2,
    "modal": "PAYMENT_PENDING",
    "step": "METHOD",
    "amount": 1999,
    "currency": "eur",
    "provider_status": None,
    "client_secret": None,
    "next_action": None,
    "error": None,
    "attempts": 0,
    "updated_at": 1_700_000_000.25,
}


def test_status_frames_carry_every_key_with_nil_where_it_does_not_apply() -> None:
    live = unwire(encode_status(STATUS_VIEW))
    assert live == {**STATUS_VIEW, "type": "status"}
    assert "ref" not in live
    reply = unwire(encode_status_reply(STATUS_VIEW, None))
    assert reply == {**STATUS_VIEW, "type": "status", "ref": None}


def test_a_ready_mapping_is_sent_as_is_in_one_packb() -> None:
    frame = {"type": "status", **STATUS_VIEW, "error": {"code": "card_declined", "message": "x"}}
    assert encode(frame) == msgpack.packb(frame, use_bin_type=True)
    assert unwire(encode(MappingProxyType(frame))) == frame


def test_encode_reply_stamps_the_ref_on_a_reply_or_a_view_and_leaves_the_original_as_is() -> None:
    created = Created(ref=None, flow_id="flow_1", token="tok", state="PRE_BOOKING", version=1)
    assert encode_reply(created, "c9") == encode(
        Created(ref="c9", flow_id="flow_1", token="tok", state="PRE_BOOKING", version=1)
    )
    assert unwire(encode_reply(Ack(ref="other", flow_id="f", version=2), False))["ref"] is False
    view = {**STATUS_VIEW, "type": "status"}
    assert unwire(encode_reply(MappingProxyType(view), 7)) == {**view, "ref": 7}
    assert "ref" not in view
    assert created.ref is None
    with pytest.raises(Internal):
        encode_reply(Ack(flow_id="f", version=1), 2**64)


def test_an_unencodable_value_is_our_bug_not_the_clients() -> None:
    with pytest.raises(Internal):
        pack({"type": "status", "bad": {1, 2}})
    with pytest.raises(Internal):
        encode(Ack(ref=2**64, flow_id="f", version=1))


# --- properties: nothing a client sends crashes the codec; valid requests survive it ------------

MSGPACK_INT = st.integers(min_value=-(2**63), max_value=2**64 - 1)
SCALARS = (
    st.none()
    | st.booleans()
    | MSGPACK_INT
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
ANY_VALUE = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10) | MSGPACK_INT, inner, max_size=4)
    ),
    max_leaves=20,
)
# Field values one level deep: enough to hit every rule, cheap enough to draw a dozen per frame.
SHALLOW = (
    SCALARS
    | st.lists(SCALARS, max_size=3)
    | st.dictionaries(st.text(max_size=5) | MSGPACK_INT, SCALARS, max_size=3)
)
FIELD_NAMES = sorted({"type", "ref", "expect_version", "since", "amount", "currency", "metadata"})
FIELD_NAMES += ["id", "token", "booking_id", "payment_method", "pre_id", "idempotency_key"]
NEAR_VALID = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(VALID))},
    optional={name: SHALLOW for name in FIELD_NAMES if name != "type"},
)


def decode_outcome(data: bytes | str) -> Command | FrameRejected:
    try:
        return decode_request(data)
    except FrameRejected as error:
        return error


def decodes_or_rejects(data: bytes | str) -> None:
    """The codec's whole promise on hostile input: a command, or a FrameRejected with a code."""
    outcome = decode_outcome(data)
    if isinstance(outcome, FrameRejected):
        assert outcome.code in {"bad_frame", "unknown_type", "invalid_field"}
        assert outcome.ref is None or isinstance(outcome.ref, bool | int | float | str | bytes)
        assert msgpack.unpackb(encode_error(outcome.ref, outcome))["code"] == outcome.code
    else:
        assert outcome.TYPE in VALID


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    decodes_or_rejects(data)


@given(ANY_VALUE)
def test_random_msgpack_values_never_crash_the_decoder(value: Any) -> None:
    decodes_or_rejects(msgpack.packb(value, use_bin_type=True))


@given(NEAR_VALID)
def test_random_fields_on_real_request_types_never_crash_the_decoder(frame: dict[str, Any]) -> None:
    decodes_or_rejects(msgpack.packb(frame, use_bin_type=True))


PRINTABLE = st.characters(exclude_categories=["C", "Z"]) | st.just(" ")
TEXT = st.text(PRINTABLE, min_size=1, max_size=200).filter(str.isprintable)
NON_NEGATIVE = st.integers(min_value=0, max_value=2**63 - 1)
REF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
    | st.binary(max_size=30)
)
METADATA_KEY = st.text(PRINTABLE, min_size=1, max_size=40).filter(
    lambda key: key.isprintable() and "[" not in key and "]" not in key
)
METADATA_VALUE = st.text(st.characters(exclude_categories=["Cs"]), max_size=500)
COMMON = {"ref": REF, "expect_version": st.none() | NON_NEGATIVE}
FLOW = {**COMMON, "id": TEXT, "token": TEXT}
VALID_COMMANDS = st.one_of(
    st.builds(
        CreateFlow,
        **COMMON,
        amount=st.integers(min_value=1, max_value=MAX_AMOUNT),
        currency=st.sampled_from(sorted(ISO_4217_CODES)),
        pre_id=st.none() | TEXT,
        idempotency_key=st.none() | TEXT,
        metadata=st.dictionaries(METADATA_KEY, METADATA_VALUE, max_size=50).map(MappingProxyType),
        api_key=st.none() | TEXT,
    ),
    st.builds(Join, **FLOW, since=st.none() | NON_NEGATIVE),
    st.builds(Leave, **COMMON, id=TEXT),
    st.builds(AttachBooking, **FLOW, booking_id=TEXT, api_key=st.none() | TEXT),
    st.builds(SelectMethod, **FLOW, payment_method=TEXT),
    st.builds(Submit, **FLOW),
    st.builds(Retry, **FLOW),
    st.builds(Cancel, **FLOW),
)


@settings(max_examples=300)
@given(VALID_COMMANDS)
def test_every_valid_request_decodes_losslessly(command: Command) -> None:
    assert decode_request(encode_request(command)) == command
