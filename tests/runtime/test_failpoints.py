"""Failpoints: armed by PAYFLOWD_FAILPOINTS, they fail the process exactly where they are placed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from adapters.effects import LoopThread
from runtime import failpoints
from runtime.errors import ConfigError, Internal
from runtime.sqlite_journal import SQLiteJournal
from tests.localstripe import HttpServer, serve

REPO = Path(__file__).resolve().parents[2]

# A daemon-shaped child: the real domain on Stripe's SDK, pointed at a server the test records.
_CHILD = """
import sys, types
from pathlib import Path
from actors.commands import AttachBooking, SelectMethod
from tests.domain_harness import Backend, start
stub = types.SimpleNamespace(api_key="sk_test_failpoint", base_url=sys.argv[2])
h = start(Path(sys.argv[1]), Backend(name="stripe", localstripe=stub))
created = h.create(flow_id="flow_fp")
h.command(AttachBooking(id="flow_fp", token=created.token, booking_id="bk_fp"))
h.command(SelectMethod(id="flow_fp", token=created.token, payment_method="pm_card_visa"))
h.wait_state("flow_fp", "PAYMENT_ACTIVE", intent=True)  # never: the failpoint kills first
"""


def test_parse_reads_names_and_actions() -> None:
    assert failpoints.parse("a=kill, b=raise,") == {"a": "kill", "b": "raise"}
    with pytest.raises(ConfigError):
        failpoints.parse("a=explode")


def test_armed_raise_raises_only_while_armed() -> None:
    failpoints.arm("unit_test_point", "raise")
    try:
        with pytest.raises(Internal):
            failpoints.hit("unit_test_point")
    finally:
        failpoints.disarm("unit_test_point")
    failpoints.hit("unit_test_point")  # disarmed: nothing happens


def test_kill_before_provider_call_leaves_the_event_and_no_call(tmp_path: Path) -> None:
    loop = LoopThread()

    async def refuse(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.json_response({"error": {"type": "api_error"}}, status=500)

    recording = serve(refuse)
    server: HttpServer = loop.run(recording.__aenter__())
    try:
        db = tmp_path / "journal.db"
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(db), server.url],
            cwd=REPO,
            env={"PAYFLOWD_FAILPOINTS": "after_persist_before_provider_call=kill", "PATH": ""},
            capture_output=True,
            timeout=60,
            check=False,
        )
        seen = list(server.seen)
    finally:
        loop.run(recording.__aexit__(None, None, None))
        loop.stop()
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    assert seen == []
    with SQLiteJournal(db) as journal:
        kinds = [event.kind for event in journal.events("flow_fp")]
        payloads = [json.dumps(dict(event.payload)) for event in journal.events("flow_fp")]
    assert kinds == ["flow_created", "booking_attached", "method_selected"]
    assert "pm_card_visa" in payloads[-1]
