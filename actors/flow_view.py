"""What a client sees of a flow: the `status` frame of CONTRACT.md, with `modal` and `step` derived
from the state (never stored, so they can never disagree with it)."""

from __future__ import annotations

import copy
from typing import Any

from actors.flow_model import Flow
from actors.flow_states import MODAL, STEP, FlowState, Modal, Step

# The keys of the contract's `status` frame, in its order, after `type`.
STATUS_KEYS: tuple[str, ...] = (
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
)


def modal(flow: Flow) -> Modal:
    return MODAL[flow.state]


def step(flow: Flow) -> Step:
    return STEP[flow.state]


# Per state, the frame's plain strings for `state`, `modal` and `step`: a frame goes out for every
# version of every flow, and an enum's `.value` is a Python-level property call each time.
_SCREEN: dict[FlowState, tuple[str, str, str]] = {
    state: (state.value, MODAL[state].value, STEP[state].value) for state in FlowState
}


def status_view(flow: Flow) -> dict[str, Any]:
    """The `status` frame for `flow`: every key present, None where it does not apply.

    Plain str/int/float/bool/None/dict values only (no enums), owned by the caller. It carries
    `client_secret`: send it to the flow's token holders only, and never log it.
    """
    error = flow.error
    state, shown_modal, shown_step = _SCREEN[flow.state]
    return {
        "type": "status",
        "flow_id": flow.flow_id,
        "booking_id": flow.booking_id,
        "pre_id": flow.pre_id,
        "state": state,
        "version": flow.version,
        "modal": shown_modal,
        "step": shown_step,
        "amount": flow.amount,
        "currency": flow.currency,
        "provider_status": flow.provider_status,
        "client_secret": flow.client_secret,
        "next_action": None if flow.next_action is None else copy.deepcopy(dict(flow.next_action)),
        "error": None
        if error is None
        else {"code": error.code, "message": error.message, "recoverable": error.recoverable},
        "attempts": flow.attempts,
        "updated_at": flow.updated_at,
    }
