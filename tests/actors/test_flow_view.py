"""The `status` frame of CONTRACT.md and the derived modal/step, in every situation."""

from __future__ import annotations

import json

import pytest

from actors.flow_core import (
    MODAL,
    STATUS_KEYS,
    STEP,
    FlowState,
    Modal,
    Step,
    modal,
    status_view,
    step,
)
from tests.actors.flows import SITUATIONS, THREE_DS, fail, processing, requires_action, then

# Copied from CONTRACT.md's `status` frame, plus the frame's own `type`.
CONTRACT_STATUS_KEYS = {
    "type",
    "flow_id",
    "booking_id",
    "pre_id",
    "state",
    "version",
    "modal",
    "step",
    "amount",
    "currency",
    "provider_status",
    "client_secret",
    "next_action",
    "error",
    "attempts",
    "updated_at",
}

INTENT_SITUATIONS = {
    "PAYMENT_ACTIVE(intent)",
    "PAYMENT_PROCESSING",
    "REQUIRES_ACTION",
    "COMPLETED",
    "FAILED(recoverable)",
    "FAILED(terminal)",
    "PAYMENT_ACTIVE(cancel requested)",
    "REQUIRES_ACTION(cancel requested)",
    "FAILED(cancel requested)",
}


@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_status_has_exactly_the_contract_keys_with_plain_values(situation: str) -> None:
    flow = SITUATIONS[situation]()
    view = status_view(flow)
    assert set(view) == CONTRACT_STATUS_KEYS == set(STATUS_KEYS)
    assert view["type"] == "status"
    assert (view["flow_id"], view["state"], view["version"]) == (
        flow.flow_id,
        flow.state.value,
        flow.version,
    )
    # what msgpack and json will see: plain types, no enums
    assert json.loads(json.dumps(view)) == view
    assert type(view["state"]) is str
    assert type(view["modal"]) is str
    assert type(view["step"]) is str


@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_status_fields_apply_only_where_they_mean_something(situation: str) -> None:
    view = status_view(SITUATIONS[situation]())
    assert (view["next_action"] is not None) is situation.startswith("REQUIRES_ACTION")
    assert (view["client_secret"] is not None) is (situation in INTENT_SITUATIONS)
    assert (view["error"] is not None) is situation.startswith("FAILED")


def test_status_shows_error_and_next_action_as_maps() -> None:
    assert status_view(requires_action())["next_action"] == THREE_DS
    failed = status_view(then(processing(), fail(True)))
    assert failed["error"] == {
        "code": "card_declined",
        "message": "Your card was declined.",
        "recoverable": True,
    }
    assert (failed["modal"], failed["step"], failed["attempts"]) == (
        "PAYMENT_FAILED",
        "CONFIRMATION",
        1,
    )


def test_status_next_action_is_the_callers_copy() -> None:
    flow = requires_action()
    status_view(flow)["next_action"]["type"] = "changed"
    assert status_view(flow)["next_action"] == THREE_DS


def test_modal_and_step_tables_cover_every_state() -> None:
    assert set(MODAL) == set(FlowState)
    assert set(STEP) == set(FlowState)
    assert set(MODAL.values()) == set(Modal)
    assert set(STEP.values()) == set(Step)


@pytest.mark.parametrize(
    ("situation", "expected"),
    [
        ("INITIAL", (Modal.BOOKING, Step.SESSION)),
        ("PRE_BOOKING", (Modal.BOOKING, Step.SESSION)),
        ("PAYMENT_PENDING", (Modal.PAYMENT_PENDING, Step.METHOD)),
        ("PAYMENT_ACTIVE(intent)", (Modal.PAYMENT_ACTIVE, Step.REVIEW)),
        ("PAYMENT_PROCESSING", (Modal.PAYMENT_ACTIVE, Step.PROCESSING)),
        ("REQUIRES_ACTION", (Modal.PAYMENT_ACTIVE, Step.PROCESSING)),
        ("COMPLETED", (Modal.PAYMENT_COMPLETE, Step.CONFIRMATION)),
        ("FAILED(recoverable)", (Modal.PAYMENT_FAILED, Step.CONFIRMATION)),
        ("CANCELLED", (Modal.PAYMENT_FAILED, Step.CONFIRMATION)),
        ("EXPIRED", (Modal.PAYMENT_FAILED, Step.CONFIRMATION)),
    ],
)
def test_screen_follows_the_state(situation: str, expected: tuple[Modal, Step]) -> None:
    flow = SITUATIONS[situation]()
    assert (modal(flow), step(flow)) == expected
