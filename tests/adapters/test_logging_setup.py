"""Secrets never reach the log output, whatever key they are logged under."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from adapters.logging_setup import REDACTED, LineWriter, _shared_processors, configure_logging
from adapters.metrics import Breach


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging sets process-wide state (structlog's config, the root handlers): put
    the defaults back, so later tests capture their logs (debug included) as before."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


def _log_one(**fields: object) -> dict[str, object]:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    structlog.get_logger("test").info("flow_created", **fields)
    line = stream.getvalue().strip().splitlines()[-1]
    return dict(json.loads(line))


def test_secret_named_keys_are_masked() -> None:
    entry = _log_one(flow_id="f1", token="pft_abc", client_secret="pi_1_secret_2", api_key="k")
    assert entry["flow_id"] == "f1"
    assert entry["token"] == REDACTED
    assert entry["client_secret"] == REDACTED
    assert entry["api_key"] == REDACTED


def test_secret_looking_values_are_masked_under_any_key() -> None:
    entry = _log_one(detail="key sk_test_51HxYz and whsec_abc and pi_3Ab_secret_Zz9 pft_tok-1")
    text = str(entry["detail"])
    for secret in ("sk_test_51HxYz", "whsec_abc", "pi_3Ab_secret_Zz9", "pft_tok-1"):
        assert secret not in text
    assert text.count(REDACTED) == 4


def test_nested_values_and_stdlib_records_are_masked() -> None:
    entry = _log_one(request={"token": "t", "nested": ["sk_live_XYZ"]})
    assert entry["request"] == {"token": REDACTED, "nested": [REDACTED]}
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    logging.getLogger("pykka").warning("failed with sk_test_999")
    assert "sk_test_999" not in stream.getvalue()
    assert json.loads(stream.getvalue().strip())["level"] == "warning"


class _CarriesASecret:
    """Stands for an SDK object whose repr shows a key, as a request or an error might."""

    def __repr__(self) -> str:
        return "Request(api_key=sk_live_hidden123, amount=4200)"


def test_objects_whose_repr_shows_a_secret_are_masked_in_json_and_console() -> None:
    entry = _log_one(request=_CarriesASecret(), seen={"pft_abc-1"})
    assert "sk_live_hidden123" not in str(entry["request"])
    assert "amount=4200" in str(entry["request"])
    assert entry["seen"] == [REDACTED]
    stream = io.StringIO()
    configure_logging("console", stream=stream)
    structlog.get_logger("test").info("provider_call", request=_CarriesASecret())
    assert "sk_live_hidden123" not in stream.getvalue()
    assert REDACTED in stream.getvalue()


def test_batched_lines_reach_the_stream_together_and_warnings_at_once() -> None:
    stream = io.StringIO()
    writer = LineWriter(stream, batch_s=60.0)  # a window far longer than the test
    writer.write_line("one")
    writer.write_line("two")
    assert stream.getvalue() == ""  # info lines wait for their batch
    writer.write_line("alarm", urgent=True)
    assert stream.getvalue() == "one\ntwo\nalarm\n"  # in order, the waiting ones first
    writer.write_line("three")
    writer.flush()
    assert stream.getvalue().endswith("alarm\nthree\n")


def test_the_daemon_configuration_drops_debug_and_keeps_info() -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    log = structlog.get_logger("test")
    log.debug("chatter")
    log.info("flow_created", flow_id="f1")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line["level"], line["logger"]) for line in lines] == [
        ("flow_created", "info", "test")
    ]


class _Shown:
    def __structlog__(self) -> str:
        return "shown"


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_lines_are_what_the_shared_processors_and_json_renderer_would_write() -> None:
    """The direct path runs the shared processors in one call and renders with one prebuilt
    encoder: same fields, same order, same text (the timestamp aside), redaction included."""
    fields: dict[str, Any] = {
        "flow_id": "f1",
        "version": 3,
        "ratio": 0.5,
        "ok": True,
        "none": None,
        "level": "overwritten",
        "state": Breach.ABOVE,
        "client_secret": "pi_1_secret_2",
        "detail": "key sk_test_51HxYz here",
        "pair": ("whsec_abc", 1),
        "nested": {"token": "t", "list": ["pft_x", {"api_key": "k"}], 7: "int key"},
        "accent": "café ✓",
        "shown": _Shown(),
        "opaque": _Opaque(),
    }
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    with structlog.contextvars.bound_contextvars(request_id="r1", bearer="sk_live_ctx"):
        structlog.get_logger("test").bind(bound="b").warning("flow_event", **fields)
        expected: Any = {"bound": "b", **fields, "event": "flow_event"}
        for processor in _shared_processors():
            expected = processor(_WriterLoggerStub(), "warning", expected)
    written = stream.getvalue().strip()
    rendered = str(structlog.processors.JSONRenderer()(None, "warning", expected))
    assert _without_timestamp(written) == _without_timestamp(rendered)
    for secret in ("sk_test_51HxYz", "sk_live_ctx", "whsec_abc", "pft_x", "pi_1_secret_2"):
        assert secret not in written


def test_an_exception_is_redacted_and_comes_last_as_with_the_shared_processors() -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    error = ValueError("rejected sk_test_999")
    structlog.get_logger("test").error("call_failed", flow_id="f1", exc_info=error)
    entry = json.loads(stream.getvalue().strip())
    assert list(entry) == ["flow_id", "event", "level", "logger", "timestamp", "exception"]
    assert "ValueError: rejected" in entry["exception"]
    assert "sk_test_999" not in stream.getvalue()
    assert entry["level"] == "error"


def test_secret_named_keys_are_masked_however_many_keys_came_before() -> None:
    """Key checks are memoised up to a bound; keys past it are still checked."""
    many = {f"field_{i}": i for i in range(1500)}
    entry = _log_one(**many, late_token="t", Authorization="Bearer x", visible="v")
    assert entry["late_token"] == REDACTED
    assert entry["Authorization"] == REDACTED
    assert entry["visible"] == "v"
    assert entry["field_1499"] == 1499


class _WriterLoggerStub:
    name = "test"


def _without_timestamp(line: str) -> list[tuple[str, Any]]:
    return [(key, value) for key, value in json.loads(line).items() if key != "timestamp"]


def test_interpolated_and_dropped_events_behave_as_with_structlog() -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    log = structlog.get_logger("test").bind(flow_id="f1")
    log.info("paid %s of %s", 2, 3, token="pft_abc")
    log.warn("late", version=2)
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == [
        "paid 2 of 3",
        "late",
    ]
    assert "pft_abc" not in stream.getvalue()
    with structlog.testing.capture_logs() as logs:
        structlog.get_logger("test").bind(flow_id="f2").info("captured", version=1)
    assert logs == [{"flow_id": "f2", "version": 1, "event": "captured", "log_level": "info"}]


def test_levels_below_the_configured_one_stay_silent() -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream, level=logging.WARNING)
    log = structlog.get_logger("test")
    log.info("chatter")
    log.warning("alarm")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["alarm"]
