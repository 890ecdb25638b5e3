"""The typed requests and replies: pure, immutable, secret-safe, with the contract's names."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from actors.commands import (
    COMMAND_CLASSES,
    WIRE_ERROR_CODES,
    Ack,
    AttachBooking,
    Cancel,
    Created,
    CreateFlow,
    ErrorFrame,
    Join,
    Leave,
    Retry,
    SelectMethod,
    Submit,
)
from runtime import errors
from runtime.errors import (
    ConfigError,
    Forbidden,
    Internal,
    InvalidField,
    PayflowError,
    ProviderRejected,
    VersionConflict,
)

REPO = Path(__file__).resolve().parents[2]

CONTRACT_REQUEST_TYPES = {
    "create_flow",
    "join",
    "leave",
    "attach_booking",
    "select_method",
    "submit",
    "retry",
    "cancel",
}
CONTRACT_ERROR_CODES = {
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


def test_commands_module_imports_only_stdlib_and_runtime() -> None:
    # Only what importing the module adds counts: the interpreter's own start-up (site hooks,
    # the editable-install finder) is not the module's doing.
    probe = (
        "import sys, json; before = set(sys.modules); import actors.commands; "
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout))
    assert {"actors", "runtime"} <= loaded
    foreign = loaded - set(sys.stdlib_module_names) - {"actors", "runtime"}
    assert foreign == set()
    assert {"msgpack", "websockets", "pykka", "stripe", "structlog"}.isdisjoint(loaded)


def test_every_contract_request_type_has_exactly_one_class() -> None:
    assert {cls.TYPE for cls in COMMAND_CLASSES} == CONTRACT_REQUEST_TYPES
    assert len(COMMAND_CLASSES) == len(CONTRACT_REQUEST_TYPES)


@pytest.mark.parametrize(
    ("command", "fields"),
    [
        (
            CreateFlow(amount=1, currency="eur"),
            {"amount", "currency", "pre_id", "idempotency_key", "metadata", "api_key"},
        ),
        (Join(id="f", token="t"), {"id", "token", "since"}),
        (Leave(id="f"), {"id"}),
        (
            AttachBooking(id="f", token="t", booking_id="b"),
            {"id", "token", "booking_id", "api_key"},
        ),
        (SelectMethod(id="f", token="t", payment_method="pm"), {"id", "token", "payment_method"}),
        (Submit(id="f", token="t"), {"id", "token"}),
        (Retry(id="f", token="t"), {"id", "token"}),
        (Cancel(id="f", token="t"), {"id", "token"}),
    ],
)
def test_requests_carry_the_contract_fields_plus_ref_and_expect_version(
    command: object, fields: set[str]
) -> None:
    names = {field.name for field in dataclasses.fields(command)}  # type: ignore[arg-type]
    assert names == fields | {"ref", "expect_version"}
    assert command.ref is None  # type: ignore[attr-defined]
    assert command.expect_version is None  # type: ignore[attr-defined]


def test_optional_request_fields_default_to_absent() -> None:
    create = CreateFlow(amount=500, currency="usd")
    assert (create.pre_id, create.idempotency_key, create.api_key) == (None, None, None)
    assert dict(create.metadata) == {}
    assert Join(id="f", token="t").since is None


def test_messages_are_frozen_slotted_and_keyword_only() -> None:
    submit = Submit(id="f", token="t", ref=7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        submit.id = "other"  # type: ignore[misc]
    assert not hasattr(submit, "__dict__")
    with pytest.raises(TypeError):
        Submit("f", "t")  # type: ignore[call-arg, arg-type]
    with pytest.raises(TypeError):
        Ack(None, "f", 1)  # type: ignore[call-arg]


def test_default_metadata_is_read_only() -> None:
    create = CreateFlow(amount=1, currency="eur")
    with pytest.raises(TypeError):
        create.metadata["k"] = "v"  # type: ignore[index]


@pytest.mark.parametrize(
    "message",
    [
        Join(id="f", token="tok_SECRET"),
        Submit(id="f", token="tok_SECRET"),
        AttachBooking(id="f", token="tok_SECRET", booking_id="b", api_key="key_SECRET"),
        CreateFlow(amount=1, currency="eur", api_key="key_SECRET"),
        Created(flow_id="f", token="tok_SECRET", state="PRE_BOOKING", version=1),
    ],
)
def test_secrets_stay_out_of_repr_so_logging_a_message_cannot_leak_them(message: object) -> None:
    assert "SECRET" not in repr(message)
    assert type(message).__name__ in repr(message)


def test_reply_frames_have_the_contract_type_and_field_names() -> None:
    assert Created.TYPE == "created"
    assert {f.name for f in dataclasses.fields(Created)} == {
        "ref",
        "flow_id",
        "token",
        "state",
        "version",
    }
    assert Ack.TYPE == "ack"
    assert {f.name for f in dataclasses.fields(Ack)} == {"ref", "flow_id", "version"}
    assert ErrorFrame.TYPE == "error"
    assert {f.name for f in dataclasses.fields(ErrorFrame)} == {"ref", "code", "message"}


def test_wire_error_codes_are_the_contract_list() -> None:
    assert WIRE_ERROR_CODES == CONTRACT_ERROR_CODES


def _all_error_classes(cls: type[PayflowError]) -> list[type[PayflowError]]:
    return [cls, *(sub for child in cls.__subclasses__() for sub in _all_error_classes(child))]


def test_every_error_of_the_hierarchy_becomes_a_contract_code() -> None:
    # __new__ with the message only: subclasses may take extra constructor arguments.
    classes = _all_error_classes(errors.PayflowError)
    frames = [ErrorFrame.from_error(cls.__new__(cls, "why"), ref=1) for cls in classes]
    assert len(frames) >= 15
    assert {frame.code for frame in frames} <= CONTRACT_ERROR_CODES
    assert {frame.code for frame in frames} >= {"bad_frame", "version_conflict", "overloaded"}
    assert all(frame.ref == 1 for frame in frames)


def test_client_errors_keep_their_code_and_message() -> None:
    frame = ErrorFrame.from_error(InvalidField("field 'amount': must be an integer"), ref="r1")
    assert frame == ErrorFrame(ref="r1", code="invalid_field", message=frame.message)
    assert frame.message == "field 'amount': must be an integer"
    assert ErrorFrame.from_error(Forbidden("wrong token")).code == "forbidden"
    assert ErrorFrame.from_error(VersionConflict("at 4", expected=3)).code == "version_conflict"
    assert ErrorFrame.from_error(Forbidden()).message == "forbidden"


@pytest.mark.parametrize(
    "error",
    [
        Internal("journal row 12 broken at /var/lib/x"),
        ConfigError("STRIPE_API_KEY missing"),
        ProviderRejected("stripe said: sk_live_... invalid"),
    ],
)
def test_internal_and_non_wire_errors_reveal_nothing_of_our_insides(error: PayflowError) -> None:
    frame = ErrorFrame.from_error(error, ref=b"\x01")
    assert frame == ErrorFrame(ref=b"\x01", code="internal", message="internal error")
