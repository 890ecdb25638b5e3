"""The one exception hierarchy of payflowd.

Errors are grouped by what the caller does next, not by where they were raised:

- `Rejected`: the request itself is wrong (bad field, unknown id, wrong token, a transition the
  state does not allow). Retrying the same request gives the same answer; fix the request.
- `Conflict`: the request was fine but the world moved (a version advanced, an id is taken).
  Re-read the current state and decide again.
- `Retryable`: a transient condition (provider down, mailbox full). The same request may
  succeed later; retry with backoff.
- `Internal`: a bug or broken invariant on our side. Log it, do not retry blindly.

Every error carries `code`, the wire error code of CONTRACT.md, so the bridge turns any of them
into an `error` frame without a translation table of its own.
"""

from __future__ import annotations


class PayflowError(Exception):
    """Base of every error payflowd raises on purpose."""

    code: str = "internal"
    retryable: bool = False


# --- the caller's request is wrong -------------------------------------------------------------


class Rejected(PayflowError):
    """The request is invalid as sent; retrying it unchanged cannot succeed."""


class BadFrame(Rejected):
    code = "bad_frame"


class UnknownType(Rejected):
    code = "unknown_type"


class InvalidField(Rejected):
    code = "invalid_field"


class NotFound(Rejected):
    code = "not_found"


class Forbidden(Rejected):
    code = "forbidden"


class InvalidTransition(Rejected):
    """The flow's current state does not accept this event; nothing was changed."""

    code = "invalid_transition"


class ConfigError(Rejected):
    """A flag, environment variable or config file value is unusable."""

    code = "invalid_config"


class ProviderRejected(Rejected):
    """The provider refused the request as invalid (not a decline); retrying will not help.

    Not a wire code: a client that caused it sees `internal` (`ErrorFrame.from_error`), while
    logs and metrics name what happened."""

    code = "provider_rejected"


class InvalidWebhook(Rejected):
    """A pushed provider event whose signature is missing, malformed, wrong or stale, or whose
    body does not parse; it is answered with 400 and changes nothing."""

    code = "invalid_webhook"


# --- the world moved under the caller ----------------------------------------------------------


class Conflict(PayflowError):
    """The request raced with another change; re-read and decide again."""

    code = "conflict"


class VersionConflict(Conflict):
    """The stream's stored version is not the one the writer expected."""

    code = "version_conflict"

    def __init__(self, message: str, *, expected: int | None = None, actual: int | None = None):
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class AliasConflict(Conflict):
    """An id (pre_id, booking_id, idempotency key) is already bound to another flow."""

    code = "conflict"


# --- transient: try again later ----------------------------------------------------------------


class Retryable(PayflowError):
    """A transient condition; the same request may succeed after a backoff."""

    retryable = True


class ProviderUnavailable(Retryable):
    """The provider could not be reached, rate-limited us, or failed on its side."""

    code = "provider_unavailable"


class Overloaded(Retryable):
    """A bounded queue (mailbox, send buffer, connection slots) is full."""

    code = "overloaded"


# --- our fault ---------------------------------------------------------------------------------


class Internal(PayflowError):
    """A broken invariant on our side. Logged with context; never retried blindly."""

    code = "internal"


class Escalated(Internal):
    """A supervisor gave up: its children failed more often than its restart intensity allows.
    It stopped them and reports this to its own supervisor (the root reports it to the daemon)."""
