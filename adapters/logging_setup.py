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
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
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
# One C-level search for all markers (a generator over them cost ~0.5 us per string value).
_has_marker = re.compile("|".join(re.escape(marker) for marker in _SECRET_MARKERS)).search
# Values that cannot hold a secret: most fields of a flow event (versions, amounts, None).
_INERT = frozenset({int, float, bool, type(None)})
# Whether a str key names a secret; keys come from code, so a few hundred cover them all.
_SECRET_KEY_MEMO: dict[str, bool] = {}
_SECRET_KEY_MEMO_MAX = 1024


def _scrub(value: Any) -> Any:
    if value.__class__ in _INERT:
        return value
    if isinstance(value, str):
        return _SECRET_PATTERN.sub(REDACTED, value) if _has_marker(value) else value
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret_key(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    # Anything else is rendered through its repr (JSON fallback, console): search that text,
    # so an object carrying a secret (an SDK error, a request) cannot slip one through.
    text = repr(value)
    return _SECRET_PATTERN.sub(REDACTED, text) if _has_marker(text) else value


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    secret = _SECRET_KEY_MEMO.get(key)
    if secret is None:
        secret = _names_secret(key)
        if len(_SECRET_KEY_MEMO) < _SECRET_KEY_MEMO_MAX:
            _SECRET_KEY_MEMO[key] = secret
    return secret


def _names_secret(key: str) -> bool:
    lowered = key.lower()
    return lowered in _SECRET_KEYS or lowered.endswith("_token")


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-named keys and secret-looking strings everywhere."""
    # Every log line passes here, so the common cases are inlined: a memoised key, a plain str
    # without a marker, a number. Replacing the value of a key while iterating is safe (the keys
    # do not change), and values left alone are not stored again.
    memo = _SECRET_KEY_MEMO
    for key, value in event_dict.items():
        secret = memo.get(key)
        if secret is None:
            secret = _is_secret_key(key)
        if secret:
            event_dict[key] = REDACTED
        elif value.__class__ is str:
            if _has_marker(value):
                event_dict[key] = _SECRET_PATTERN.sub(REDACTED, value)
        elif value.__class__ not in _INERT:
            event_dict[key] = _scrub(value)
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


def _json_fallback(value: Any) -> Any:
    """What JSONRenderer does with a value json cannot encode: `__structlog__()`, else repr."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


# json.dumps(..., default=...) builds a JSONEncoder and a C encoder for every line; this one C
# encoder, built once, writes the same text for half the cost. It keeps no circular-reference
# memo (one shared memo would be wrong across threads): a self-containing value logged fails
# with RecursionError instead of ValueError, an error either way.
_encode_chunks = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, _json_fallback, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
)


def render_json(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> str:
    """structlog processor: the line as `JSONRenderer()` renders it."""
    return "".join(_encode_chunks(event_dict, 0))


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        utc_timestamp,
        structlog.processors.format_exc_info,
        redact_secrets,
    ]


_SHARED = tuple(_shared_processors())
_LEVEL_OF_METHOD = {"warn": "warning", "exception": "error"}  # as add_log_level maps them


def own_event(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: `_shared_processors()` in one call for payflowd's own events, giving
    the same fields in the same order. Redaction runs before the level, the logger name and the
    timestamp are added, so the first and last (never secrets) are not searched; the name is
    scrubbed on its own. An event with `exc_info` (its text is redacted too, and comes last)
    or a stdlib `_record` takes the shared chain."""
    if "exc_info" in event_dict or "_record" in event_dict:
        for processor in _SHARED:
            event_dict = processor(logger, method_name, event_dict)
        return event_dict
    structlog.contextvars.merge_contextvars(logger, method_name, event_dict)
    redact_secrets(logger, method_name, event_dict)
    event_dict["level"] = _LEVEL_OF_METHOD.get(method_name, method_name)
    event_dict["logger"] = _scrubbed_name(logger.name)
    return utc_timestamp(logger, method_name, event_dict)


# Logger names come from code (module names): a few dozen, each scrubbed once.
_NAME_MEMO: dict[str, Any] = {}


def _scrubbed_name(name: Any) -> Any:
    scrubbed = _NAME_MEMO.get(name) if name.__class__ is str else None
    if scrubbed is None:
        scrubbed = _scrub(name)
        if name.__class__ is str and len(_NAME_MEMO) < _SECRET_KEY_MEMO_MAX:
            _NAME_MEMO[name] = scrubbed
    return scrubbed


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS |= {"error": logging.ERROR, "critical": logging.CRITICAL}


def _direct_method(name: str) -> Callable[..., Any]:
    """A bound logger's `name` method running the processors itself: structlog's goes through
    three more calls and two more copies of the keywords per line (`meth`, `_proxy_to_logger`,
    `_process_event`), a visible share of a flow's CPU. Same event dict, same processors, same
    outcome (DropEvent drops the line); `%`-style arguments take structlog's own path."""

    def method(self: Any, event: str, *args: Any, **kw: Any) -> Any:
        if args:
            return getattr(super(self.__class__, self), name)(event, *args, **kw)
        event_dict: Any = {**self._context, **kw}
        event_dict["event"] = event
        logger = self._logger
        try:
            for processor in self._processors:
                event_dict = processor(logger, name, event_dict)
        except structlog.DropEvent:
            return None
        if isinstance(event_dict, str | bytes | bytearray):
            return getattr(logger, name)(event_dict)
        if isinstance(event_dict, tuple):
            return getattr(logger, name)(*event_dict[0], **event_dict[1])
        return getattr(logger, name)(**event_dict)  # a dict: structlog's own convention

    method.__name__ = name
    return method


def direct_bound_logger(level: int) -> type[Any]:
    """`structlog.make_filtering_bound_logger(level)` with `_direct_method`s for the levels it
    lets through (those below `level` stay structlog's no-ops)."""
    base = structlog.make_filtering_bound_logger(level)
    methods = {name: _direct_method(name) for name, at in _LEVELS.items() if at >= level}
    if "info" in methods:
        methods["msg"] = methods["info"]
    if "warning" in methods:
        methods["warn"] = methods["warning"]
    if "critical" in methods:
        methods["fatal"] = methods["critical"]
    return type(f"Direct{base.__name__}", (base,), methods)


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
        render_json if log_format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    writer = LineWriter(stream or sys.stderr, batch_s)
    structlog.configure(
        processors=[own_event, renderer],
        logger_factory=lambda name="", *_args: _WriterLogger(str(name), writer),
        wrapper_class=direct_bound_logger(level),
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
