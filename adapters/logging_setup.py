"""structlog configuration for the daemon: JSON off a terminal, console on one, secrets redacted.

Redaction happens in a processor that every event passes through, so a secret cannot reach the
output by being logged under a new key: keys that name secrets are masked, and string values that
look like Stripe keys, webhook secrets or client secrets are masked wherever they appear.

Every flow event is a log line, so a line's cost is on the hot path (profiled under
payflow-bench: through stdlib logging it was the largest single cost of a flow). payflowd's own
events therefore take structlog's direct path (no stdlib `LogRecord`, no caller lookup, no handler
chain); only libraries' stdlib records go through a `logging.Handler`. Both write to one
`LineWriter`, which the daemon configures to batch lines: one write and flush at most every
`batch_s` seconds instead of one per line (each syscall also hands the GIL to another thread).
Warnings and errors are written at once; a SIGKILL can lose the last `batch_s` of info lines,
never a journal event.
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
import threading
import time
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


# Every match of _SECRET_PATTERN contains one of these: a string without any skips the regex.
_SECRET_MARKERS = ("k_test_", "k_live_", "whsec_", "_secret_", "pft_")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        if any(marker in value for marker in _SECRET_MARKERS):
            return _SECRET_PATTERN.sub(REDACTED, value)
        return value
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


def utc_timestamp(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: `timestamp`, ISO 8601 UTC with microseconds, as TimeStamper("iso",
    utc=True) writes it, for a fraction of its cost (the seconds part is formatted once)."""
    now = time.time()
    second = int(now)
    if second != _STAMP[0]:
        _STAMP[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    event_dict["timestamp"] = f"{_STAMP[1]}.{int((now - second) * 1e6):06d}Z"
    return event_dict


_STAMP: list[Any] = [None, ""]


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        utc_timestamp,
        structlog.processors.format_exc_info,
        redact_secrets,
    ]


class LineWriter:
    """Log lines to `stream`, from any thread. With `batch_s` > 0, info lines are collected and
    written together by a flusher thread `batch_s` after the first of them; warnings and errors
    (and everything with `batch_s` == 0) are written and flushed at once, after what waits."""

    def __init__(self, stream: TextIO, batch_s: float = 0.0) -> None:
        self._stream = stream
        self._batch_s = batch_s
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._wake = threading.Event()
        if batch_s > 0:
            threading.Thread(target=self._flush_forever, name="log-writer", daemon=True).start()
            atexit.register(self.flush)

    def write_line(self, line: str, *, urgent: bool = False) -> None:
        with self._lock:
            self._pending.append(line)
            if len(self._pending) == 1 and not urgent and self._batch_s > 0:
                self._wake.set()
                return
        if urgent or self._batch_s <= 0:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
            if lines:
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()

    def _flush_forever(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(self._batch_s)  # the batching window itself, not a wait for a condition
            self.flush()


class _WriterLogger:
    """structlog's final logger: hands the rendered line to the `LineWriter`."""

    def __init__(self, name: str, writer: LineWriter) -> None:
        self.name = name  # read by add_logger_name
        self._writer = writer

    def debug(self, message: str) -> None:
        self._writer.write_line(message)

    info = debug

    def warning(self, message: str) -> None:
        self._writer.write_line(message, urgent=True)

    warn = error = critical = exception = fatal = msg = warning


class _WriterHandler(logging.Handler):
    """The stdlib records of libraries, formatted by structlog, into the same `LineWriter`."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.write_line(self.format(record), urgent=record.levelno >= logging.WARNING)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def configure_logging(
    log_format: str,
    *,
    stream: TextIO | None = None,
    level: int = logging.INFO,
    batch_s: float = 0.0,
) -> None:
    """Route structlog and stdlib logging (pykka, aiohttp, websockets) to one redacted stream;
    `batch_s` > 0 batches info lines (see `LineWriter`)."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    writer = LineWriter(stream or sys.stderr, batch_s)
    structlog.configure(
        processors=[*_shared_processors(), renderer],
        logger_factory=lambda name="", *_args: _WriterLogger(str(name), writer),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = _WriterHandler(writer)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter at INFO (every websocket handshake, every HTTP request) drowns flow events.
    for noisy in ("websockets", "aiohttp.access", "stripe"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
