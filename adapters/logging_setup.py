"""structlog configuration for the daemon: JSON off a terminal, console on one, secrets redacted.

Redaction happens in a processor that every event passes through, so a secret cannot reach the
output by being logged under a new key: keys that name secrets are masked, and string values that
look like Stripe keys, webhook secrets or client secrets are masked wherever they appear.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"

_SECRET_KEYS = frozenset(
    {
        "token",
        "client_secret",
        "api_key",
        "secret",
        "webhook_secret",
        "notify_secret",
        "stripe_api_key",
        "authorization",
        "password",
        "stripe_signature",
        "signature",
    }
)
# sk_/rk_/pk_ keys, whsec_ webhook secrets, pi_..._secret_... client secrets, and flow tokens
# (which the bridge issues with the "pft_" prefix so they can be recognised here).
_SECRET_PATTERN = re.compile(
    r"\b(?:(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9]+|whsec_[A-Za-z0-9]+"
    r"|[a-z]+_[A-Za-z0-9]+_secret_[A-Za-z0-9]+|pft_[A-Za-z0-9_\-]+)"
)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET_PATTERN.sub(REDACTED, value)
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret_key(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and (key.lower() in _SECRET_KEYS or key.lower().endswith("_token"))


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-named keys and secret-looking strings everywhere."""
    for key, value in list(event_dict.items()):
        event_dict[key] = REDACTED if _is_secret_key(key) else _scrub(value)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]


def configure_logging(
    log_format: str, *, stream: TextIO | None = None, level: int = logging.INFO
) -> None:
    """Route structlog and stdlib logging (pykka, aiohttp, websockets) to one redacted stream."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter at INFO (every websocket handshake, every HTTP request) drowns flow events.
    for noisy in ("websockets", "aiohttp.access", "stripe"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
