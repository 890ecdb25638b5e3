"""The upstream event feeds' wire format (CONTRACT.md "Upstream event feeds"), sans-I/O.

A feed pushes {`type`: `provider_event`, `id`, `intent_id`, `status`, `created`} maps; on every
connect the daemon sends {`type`: `subscribe`, `since`}. The feed client hands each message to
`decode_feed_frame` and sends what `encode_subscribe` returns; it logs and skips a frame this
module rejects (one bad event must not cost the connection).

We are the feed's client, so we do as the contract asks of clients: a frame `type` we do not
know is ignored (None), and so are fields we do not know. A `provider_event` with a missing or
malformed field is rejected, never half-applied.
"""

from __future__ import annotations

from actors.provider import IntentStatus, ProviderEvent
from adapters.codec import MAX_TEXT_LENGTH, pack, unpack_frame
from runtime.errors import BadFrame, Internal, InvalidField

PROVIDER_EVENT = "provider_event"
SUBSCRIBE = "subscribe"
MAX_CREATED = 253_402_300_799
"""9999-12-31T23:59:59Z: a `created` beyond it is not an epoch timestamp in seconds."""

_INTENT_STATUSES = frozenset(status.value for status in IntentStatus)


def decode_feed_frame(data: bytes | str) -> ProviderEvent | None:
    """The event one feed message carries; None for a frame type we do not know.

    Raises BadFrame (not a msgpack map with a string `type`) or InvalidField (a `provider_event`
    whose field is missing or malformed; the message names the field, never its value).
    """
    frame = unpack_frame(data)
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise BadFrame("feed frame has no string 'type'")
    if kind != PROVIDER_EVENT:
        return None
    return ProviderEvent(
        event_id=_text(frame, "id"),
        intent_id=_text(frame, "intent_id"),
        status=_status(frame),
        created=_created(frame),
        source="feed",
    )


def encode_subscribe(since: int) -> bytes:
    """The frame sent on every connect: replay what is newer than `since`, whole epoch seconds
    (0 when none applied)."""
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        raise Internal("subscribe 'since' must be a finite, non-negative epoch time")
    return pack({"type": SUBSCRIBE, "since": since})


def _text(frame: dict[object, object], name: str) -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT_LENGTH:
        raise InvalidField(f"provider_event field {name!r}: must be 1 to {MAX_TEXT_LENGTH} chars")
    if not value.isprintable():
        raise InvalidField(f"provider_event field {name!r}: must not contain control characters")
    return value


def _status(frame: dict[object, object]) -> str:
    # Only statuses the tracker knows how to merge; a new Stripe status is skipped, not guessed.
    status = frame.get("status")
    if not isinstance(status, str) or status not in _INTENT_STATUSES:
        raise InvalidField("provider_event field 'status': must be a PaymentIntent status")
    return status


def _created(frame: dict[object, object]) -> float:
    created = frame.get("created")
    # bool is an int in Python but not a number on the wire; NaN compares false to every bound.
    if isinstance(created, bool) or not isinstance(created, int | float):
        raise InvalidField("provider_event field 'created': must be epoch seconds")
    if not 0 <= created <= MAX_CREATED:
        raise InvalidField("provider_event field 'created': must be epoch seconds")
    return float(created)
