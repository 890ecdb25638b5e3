"""What a client sees of a flow: the `status` frame of CONTRACT.md, with `modal` and `step` derived
from the state (never stored, so they can never disagree with it)."""

from __future__ import annotations

import copy
from typing import Any

from actors.flow_model import Flow
from actors.flow_states import MODAL, STEP, Modal, Step

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


def status_view(flow: Flow) -> dict[str, Any]:
    """The `status` frame for `flow`: every key present, None where it does not apply.

    Plain str/int/float/bool/None/dict values only (no enums), owned by the caller. It carries
    `client_secret`: send it to the flow's token holders only, and never log it.
    """
    error = flow.error
    return {
        "type": "status",
        "flow_id": flow.flow_id,
        "booking_id": flow.booking_id,
        "pre_id": flow.pre_id,
        "state": flow.state.value,
        "version": flow.version,
        "modal": modal(flow).value,
        "step": step(flow).value,
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
