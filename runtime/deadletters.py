"""Messages that reached no handler, recorded by TYPE only.

A message may carry a card token, a client secret or a flow token, so neither its contents nor
its repr is ever logged here: the actor's name and class, the message's type, and why it died.
A crashing message is not retried (it would most likely crash the next incarnation too); messages
left in a mailbox when an actor stops are counted per type in one event, so stopping an actor with
thousands of queued messages costs one log line, not thousands.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

import structlog

_log = structlog.get_logger(__name__)


def type_name(message: object) -> str:
    """The qualified type name of a message: the only thing about it that is safe to log."""
    return type(message).__qualname__


class DeadLetters:
    """Logs dead letters and counts them (the daemon exports the count as a metric)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0

    @property
    def total(self) -> int:
        """How many messages died since the system started."""
        return self._total

    def crashed(
        self, *, actor: str, actor_class: str, message: object, error: BaseException
    ) -> None:
        """The message whose handler raised: logged, not retried."""
        self._count(1)
        _log.warning(
            "dead_letter",
            reason="handler_failed",
            actor=actor,
            actor_class=actor_class,
            message_type=type_name(message),
            error_type=type_name(error),
        )

    def dropped(
        self, *, actor: str, actor_class: str, messages: Iterable[object], reason: str
    ) -> None:
        """Messages still queued when their actor stopped for good."""
        types = Counter(type_name(message) for message in messages)
        if not types:
            return
        count = sum(types.values())
        self._count(count)
        _log.warning(
            "dead_letters_dropped",
            reason=reason,
            actor=actor,
            actor_class=actor_class,
            count=count,
            message_types=dict(types),
        )

    def _count(self, n: int) -> None:
        with self._lock:
            self._total += n
