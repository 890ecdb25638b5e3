"""The feed codec: provider events in, subscribe out, bad events refused before the tracker."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.provider import IntentStatus, ProviderEvent
from adapters.codec import MAX_FRAME_BYTES
from adapters.feed_codec import MAX_CREATED, decode_feed_frame, encode_subscribe
from runtime.errors import BadFrame, Internal, InvalidField, PayflowError

EVENT: dict[str, Any] = {
    "type": "provider_event",
    "id": "evt_1",
    "intent_id": "pi_1",
    "status": "succeeded",
    "created": 1_700_000_000,
}


def wire(frame: Any) -> bytes:
    packed: bytes = msgpack.packb(frame, use_bin_type=True)
    return packed


def test_a_provider_event_decodes_as_a_feed_event() -> None:
    assert decode_feed_frame(wire(EVENT)) == ProviderEvent(
        event_id="evt_1",
        intent_id="pi_1",
        status="succeeded",
        created=1_700_000_000.0,
        source="feed",
    )


@pytest.mark.parametrize("status", [status.value for status in IntentStatus])
def test_every_payment_intent_status_is_accepted(status: str) -> None:
    event = decode_feed_frame(wire({**EVENT, "status": status, "created": 1.5}))
    assert event is not None
    assert (event.status, event.created) == (status, 1.5)


def test_unknown_fields_are_ignored() -> None:
    event = decode_feed_frame(wire({**EVENT, "livemode": False, "data": {"x": [1]}}))
    assert event is not None
    assert event.event_id == "evt_1"


@pytest.mark.parametrize(
    "frame", [{"type": "welcome"}, {"type": "heartbeat", "at": 1}, {"type": "subscribed"}]
)
def test_frame_types_we_do_not_know_are_skipped(frame: dict[str, Any]) -> None:
    assert decode_feed_frame(wire(frame)) is None


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("text", id="text"),
        pytest.param(b"\xc1", id="garbage"),
        pytest.param(wire(EVENT)[:-2], id="truncated"),
        pytest.param(wire([EVENT]), id="list"),
        pytest.param(wire(7), id="int"),
        pytest.param(wire({k: v for k, v in EVENT.items() if k != "type"}), id="missing-type"),
        pytest.param(wire({**EVENT, "type": 1}), id="int-type"),
        pytest.param(wire({**EVENT, "pad": "a" * MAX_FRAME_BYTES}), id="oversize"),
    ],
)
def test_a_malformed_frame_is_bad_frame(data: bytes | str) -> None:
    with pytest.raises(BadFrame) as caught:
        decode_feed_frame(data)
    assert caught.value.code == "bad_frame"


BAD_FIELDS = [
    *(("id", bad) for bad in [None, "", 5, b"evt", "e\x00v", "x" * 201]),
    *(("intent_id", bad) for bad in [None, "", ["pi"], "pi\n"]),
    *(("status", bad) for bad in [None, "", "SUCCEEDED", "paid", 1]),
    *(("created", bad) for bad in [None, True, "1700000000", -1, math.nan, math.inf]),
    ("created", MAX_CREATED + 1),
]


@pytest.mark.parametrize(("field", "bad"), BAD_FIELDS)
def test_a_bad_provider_event_field_is_refused_naming_it(field: str, bad: Any) -> None:
    with pytest.raises(InvalidField) as caught:
        decode_feed_frame(wire({**EVENT, field: bad}))
    assert caught.value.code == "invalid_field"
    assert f"'{field}'" in str(caught.value)


@pytest.mark.parametrize("since", [0, 1_700_000_000])
def test_subscribe_carries_the_latest_applied_created_as_an_integer(since: int) -> None:
    frame = msgpack.unpackb(encode_subscribe(since))
    assert frame == {"type": "subscribe", "since": since}
    assert type(frame["since"]) is int  # epoch seconds, as the contract's `since: 0`


@pytest.mark.parametrize("since", [-1, math.nan, math.inf, 1.5, True])
def test_subscribe_refuses_a_since_that_is_not_whole_seconds(since: Any) -> None:
    with pytest.raises(Internal):
        encode_subscribe(since)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_feed_decoder(data: bytes) -> None:
    outcome = feed_outcome(data)
    if isinstance(outcome, PayflowError):
        assert outcome.code in {"bad_frame", "invalid_field"}
    else:
        assert outcome is None or outcome.source == "feed"


def feed_outcome(data: bytes) -> ProviderEvent | PayflowError | None:
    try:
        return decode_feed_frame(data)
    except PayflowError as error:
        return error


FEED_TEXT = st.text(st.characters(exclude_categories=["C", "Z"]), min_size=1, max_size=200)


@given(
    event_id=FEED_TEXT,
    intent_id=FEED_TEXT,
    status=st.sampled_from([status.value for status in IntentStatus]),
    created=st.integers(0, MAX_CREATED) | st.floats(0, MAX_CREATED),
)
def test_every_valid_event_decodes_losslessly(
    event_id: str, intent_id: str, status: str, created: float
) -> None:
    frame = {"type": "provider_event", "id": event_id, "intent_id": intent_id}
    event = decode_feed_frame(wire({**frame, "status": status, "created": created}))
    assert event == ProviderEvent(
        event_id=event_id, intent_id=intent_id, status=status, created=created, source="feed"
    )
