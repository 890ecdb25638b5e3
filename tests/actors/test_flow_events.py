"""Events validate themselves and survive the journal's (kind, payload, at) form unchanged."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.flow_core import (
    EVENT_CLASSES,
    ActionRequired,
    EventType,
    Flow,
    FlowCreated,
    FlowEvent,
    MethodSelected,
    event_from_record,
    event_to_record,
)
from runtime.errors import Internal, InvalidField
from tests.actors.flows import T0, THREE_DS, event_strategy

_any_event = st.sampled_from(list(EventType)).flatmap(
    lambda kind: event_strategy(kind, Flow.initial("f"), T0)
)


def test_every_event_type_has_exactly_one_class() -> None:
    assert set(EVENT_CLASSES) == set(EventType)
    assert all(cls.event_type is kind for kind, cls in EVENT_CLASSES.items())


@pytest.mark.parametrize("cls", list(EVENT_CLASSES.values()), ids=lambda c: c.__name__)
def test_events_are_frozen_slotted_and_keyword_only(cls: type[FlowEvent]) -> None:
    assert getattr(cls, "__dataclass_params__").frozen  # noqa: B009 (not in the type stubs)
    assert "__slots__" in cls.__dict__
    assert all(f.kw_only for f in dataclasses.fields(cls))
    assert "at" in {f.name for f in dataclasses.fields(cls)}


@given(_any_event)
def test_record_round_trip_through_json_gives_the_same_event(event: FlowEvent) -> None:
    kind, payload, at = event_to_record(event)
    assert kind == event.event_type.value
    stored = json.loads(json.dumps([kind, payload, at]))
    assert event_from_record(*stored) == event


def test_record_payload_is_a_copy() -> None:
    event = ActionRequired(at=T0, next_action=THREE_DS, provider_status="requires_action")
    _, payload, _ = event_to_record(event)
    payload["next_action"]["use_stripe_sdk"]["type"] = "changed"
    assert event.next_action == THREE_DS


def test_event_keeps_its_own_copy_of_nested_next_action() -> None:
    action: dict[str, Any] = {"type": "redirect", "redirect": {"url": "https://a"}}
    event = ActionRequired(at=T0, next_action=action, provider_status="requires_action")
    action["redirect"]["url"] = "https://b"
    assert event.next_action == {"type": "redirect", "redirect": {"url": "https://a"}}


@pytest.mark.parametrize(
    ("kind", "payload", "match"),
    [
        ("flow_exploded", {}, "unknown kind"),
        ("submitted", {"surprise": 1}, "unknown fields"),
        ("booking_attached", {}, "does not decode"),
        ("flow_created", {"flow_id": "f", "amount": 0, "currency": "eur"}, "does not decode"),
    ],
)
def test_unreadable_record_is_an_internal_error(
    kind: str, payload: dict[str, Any], match: str
) -> None:
    with pytest.raises(Internal, match=match):
        event_from_record(kind, payload, T0)


@pytest.mark.parametrize(
    "fields",
    [
        {"amount": 0},
        {"amount": -5},
        {"amount": True},
        {"amount": 1.5},
        {"currency": "EUR"},
        {"currency": "euro"},
        {"flow_id": ""},
        {"metadata": {"n": 1}},
    ],
    ids=str,
)
def test_flow_created_refuses_bad_fields(fields: dict[str, Any]) -> None:
    good: dict[str, Any] = {"at": T0, "flow_id": "f", "amount": 100, "currency": "eur"}
    with pytest.raises(InvalidField):
        FlowCreated(**{**good, **fields})


def test_method_selected_refuses_attempt_zero_and_empty_method() -> None:
    with pytest.raises(InvalidField, match="attempt"):
        MethodSelected(at=T0, payment_method="pm_card_visa", attempt=0)
    with pytest.raises(InvalidField, match="payment_method"):
        MethodSelected(at=T0, payment_method="", attempt=1)
