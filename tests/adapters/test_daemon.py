"""payflowd as a process: refusing bad configuration, readiness, the control socket, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgpack
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from adapters.client import PayflowClient
from runtime.backoff import Backoff
from runtime.errors import AliasConflict, Forbidden, NotFound, Overloaded
from tests.adapters.test_feeds import FeedServer, event_frame
from tests.daemon_harness import DaemonProcess, free_port, launch, run_payflowd, running_daemon
from tests.localstripe import LocalStripe, recording_proxy, sign_webhook
from tests.waiting import wait_until

BAD_INVOCATIONS = [
    pytest.param(["--listen", "nowhere"], {}, id="listen-without-port"),
    pytest.param(["--provider", "paypal"], {}, id="unknown-provider"),
    pytest.param(["--preserve-window", "-5"], {}, id="negative-window"),
    pytest.param(["--no-such-flag"], {}, id="unknown-flag"),
    pytest.param(["--config", "missing.toml"], {}, id="missing-config-file"),
    pytest.param(["--feed", "http://not-a-websocket"], {}, id="feed-not-ws"),
    pytest.param(["--provider", "stripe"], {}, id="stripe-without-key"),
    pytest.param([], {"PAYFLOWD_LOG_FORMAT": "xml"}, id="bad-env-value"),
    pytest.param(["--db", "no/such/dir/x.db"], {}, id="db-dir-missing"),
    pytest.param(["--notify-url", "http://[bad"], {"PAYFLOWD_NOTIFY_SECRET": "s"}, id="bad-url"),
    pytest.param(["--feed", "ws://[bad"], {}, id="feed-bad-host"),
    pytest.param(["--listen", "127.0.0.1:\u00b2"], {}, id="superscript-port"),
    pytest.param(["--listen", "127.0.0.1:\u0668\u0667"], {}, id="arabic-indic-port"),
    pytest.param(["--retry-limit", "\u00b2"], {}, id="superscript-number"),
    pytest.param(["--listen", "127.0.0.1:18777", "--http", "127.0.0.1:18777"], {}, id="same-port"),
    pytest.param(["--db", "/proc/payflowd.db"], {}, id="db-where-no-file-can-be-made"),
]


@pytest.mark.parametrize(("args", "env"), BAD_INVOCATIONS)
def test_bad_configuration_exits_2_with_one_line_and_creates_nothing(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    base = ["--db", str(tmp_path / "j.db"), "--control", str(tmp_path / "c.sock")]
    done = run_payflowd([*base, *args], cwd=tmp_path, env=env)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("payflowd: ")
    assert done.stdout == ""
    assert sorted(os.listdir(tmp_path)) == []  # no journal file, no socket


def test_a_port_in_use_is_refused_before_anything_is_created(tmp_path: Path) -> None:

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_payflowd(
            ["--listen", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{free_port()}"],
            cwd=tmp_path,
        )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "address already in use" in done.stderr
    assert os.listdir(tmp_path) == []


def test_ready_private_control_socket_warnings_and_sigterm_exit_0(tmp_path: Path) -> None:
    daemon = launch(tmp_path)
    try:
        assert daemon.http_get("/readyz")[0] == 200
        assert daemon.http_get("/healthz")[0] == 200
        assert stat.S_IMODE(daemon.control.stat().st_mode) == 0o600
        assert stat.S_IMODE(daemon.db.stat().st_mode) == 0o600
        events = {event.get("event") for event in daemon.log_events()}
        assert {"provider_simulated", "api_key_unset"} <= events
        started = time.monotonic()
        assert daemon.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 10
        assert not daemon.control.exists()  # the daemon removed its own socket
    finally:
        daemon.kill()


def test_a_second_daemon_on_the_same_control_socket_is_refused(tmp_path: Path) -> None:
    daemon = launch(tmp_path)
    try:
        done = run_payflowd(
            ["--control", str(daemon.control), "--db", str(tmp_path / "other.db")], cwd=tmp_path
        )
        assert done.returncode == 2
        assert "already listening" in done.stderr
        assert not (tmp_path / "other.db").exists()
        assert daemon.http_get("/readyz")[0] == 200
    finally:
        assert daemon.stop(signal.SIGINT) == 0


# --- flows over the real bridge, with the Python client ------------------------------------------


WAIT = 15.0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = launch(tmp_path_factory.mktemp("daemon"))
    try:
        yield process
    finally:
        process.kill()


async def _next_status(subscription: Any) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        status: dict[str, Any] = await subscription.__anext__()
        return status


async def _until(subscription: Any, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    seen = [await _next_status(subscription)]
    while not done(seen[-1]):
        seen.append(await _next_status(subscription))
    return seen


async def _pay(
    client: PayflowClient, subscription: Any, flow_id: str, token: str
) -> list[dict[str, Any]]:
    """Drive a joined flow to its end as a customer would; the statuses seen on the way."""
    await client.attach_booking(flow_id, token, f"bk_{flow_id}")
    await client.select_method(flow_id, token, "pm_card_visa")
    # `submit` needs the payment intent, which exists once a status shows its provider status.
    seen = await _until(subscription, lambda status: status["provider_status"] is not None)
    await client.submit(flow_id, token)
    return seen + await _until(subscription, lambda status: status["state"] == "COMPLETED")


def test_a_flow_runs_to_completed_with_one_status_per_version(daemon: DaemonProcess) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with PayflowClient(daemon.url) as client:
            created = await client.create_flow(amount=4200, currency="eur", pre_id="pre_happy")
            assert created["token"].startswith("pft_")
            assert (created["state"], created["version"]) == ("PRE_BOOKING", 1)
            flow_id, token = created["flow_id"], created["token"]
            subscription = await client.subscribe(flow_id, token)
            seen = [await _next_status(subscription)]
            return seen + await _pay(client, subscription, flow_id, token)

    seen = asyncio.run(scenario())
    versions = [status["version"] for status in seen]
    assert versions == list(range(1, versions[-1] + 1))
    assert seen[-1]["provider_status"] == "succeeded"
    assert seen[-1]["booking_id"] == f"bk_{seen[-1]['flow_id']}"
    assert seen[-1]["pre_id"] == "pre_happy"


def test_refusals_wrong_token_unknown_id_taken_ids_and_idempotent_create(
    daemon: DaemonProcess,
) -> None:
    async def scenario() -> None:
        async with PayflowClient(daemon.url) as client:
            first = await client.create_flow(amount=100, currency="eur", idempotency_key="idem-1")
            again = await client.create_flow(amount=100, currency="eur", idempotency_key="idem-1")
            assert (again["flow_id"], again["token"]) == (first["flow_id"], first["token"])
            flow_id, token = first["flow_id"], first["token"]
            with pytest.raises(Forbidden):
                await client.select_method(flow_id, "pft_wrong", "pm_card_visa")
            with pytest.raises(Forbidden):
                await client.join(flow_id, "pft_wrong")
            with pytest.raises(NotFound):
                await client.join("flw_unknown", token)
            status = await client.join(flow_id, token)
            assert status["version"] == 1  # the refused command changed nothing
            await client.attach_booking(flow_id, token, "bk_taken")
            other = await client.create_flow(amount=100, currency="eur", pre_id="pre_taken")
            with pytest.raises(AliasConflict):
                await client.attach_booking(other["flow_id"], other["token"], "bk_taken")
            with pytest.raises(AliasConflict):
                await client.create_flow(amount=100, currency="eur", pre_id="pre_taken")
            joined = await client.join("bk_taken", token)
            assert joined["flow_id"] == flow_id

    asyncio.run(scenario())


def test_a_client_that_drops_and_rejoins_with_since_misses_nothing(daemon: DaemonProcess) -> None:
    async def scenario() -> tuple[int, list[int]]:
        async with PayflowClient(daemon.url) as driver:
            created = await driver.create_flow(amount=700, currency="eur")
            flow_id, token = created["flow_id"], created["token"]
            async with PayflowClient(daemon.url) as watcher:
                first = await _next_status(await watcher.subscribe(flow_id, token))
            # The watcher is gone; the flow moves on without it.
            driving = await driver.subscribe(flow_id, token)
            await driver.attach_booking(flow_id, token, f"bk_{flow_id}")
            await driver.select_method(flow_id, token, "pm_card_visa")
            ready = await _until(driving, lambda status: status["provider_status"] is not None)
            async with PayflowClient(daemon.url) as back:
                again = await back.subscribe(flow_id, token, since=first["version"])
                versions = [(await _next_status(again))["version"]]
                while versions[-1] < ready[-1]["version"]:
                    versions.append((await _next_status(again))["version"])
                await driver.submit(flow_id, token)  # live statuses follow the catch-up
                state = ""
                while state != "COMPLETED":
                    status = await _next_status(again)
                    versions.append(status["version"])
                    state = status["state"]
            return first["version"], versions

    since, versions = asyncio.run(scenario())
    assert versions == list(range(since + 1, versions[-1] + 1))


def test_a_client_that_never_reads_does_not_hold_up_others(daemon: DaemonProcess) -> None:

    flood = msgpack.packb({"type": "join", "id": "flw_nobody", "token": "pft_x", "ref": 1})
    with connect(daemon.url, max_queue=1) as stalled:  # reads one frame at most, then stalls
        for _ in range(500):
            stalled.send(flood)

        async def drive() -> str:
            async with PayflowClient(daemon.url) as client:
                created = await client.create_flow(amount=300, currency="eur")
                subscription = await client.subscribe(created["flow_id"], created["token"])
                seen = await _pay(client, subscription, created["flow_id"], created["token"])
                return str(seen[-1]["state"])

        assert asyncio.run(drive()) == "COMPLETED"
        stalled.close_socket()  # drop it at TCP level: a polite close would wait on its backlog


def test_sigterm_with_payments_in_flight_loses_nothing_across_a_restart(tmp_path: Path) -> None:
    first = launch(tmp_path, ["--dummy-latency", "0.3"])
    try:

        async def start_payments() -> dict[str, int]:
            acked: dict[str, int] = {}
            async with PayflowClient(first.url) as client:
                for n in range(3):
                    created = await client.create_flow(amount=100 + n, currency="eur")
                    flow_id, token = created["flow_id"], created["token"]
                    subscription = await client.subscribe(flow_id, token)
                    await client.attach_booking(flow_id, token, f"bk_term_{n}")
                    await client.select_method(flow_id, token, "pm_card_visa")
                    await _until(subscription, lambda s: s["provider_status"] is not None)
                    acked[flow_id] = (await client.submit(flow_id, token))["version"]
            return acked

        acked = asyncio.run(start_payments())
        started = time.monotonic()
        assert first.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 10
    finally:
        first.kill()
    second = first.restart()
    try:
        rows = {row["flow_id"]: row for row in second.ctl_json("ps")}
        assert set(acked) <= set(rows)
        assert all(rows[flow_id]["version"] >= version for flow_id, version in acked.items())
        for flow_id in acked:
            history = second.ctl_json("history", flow_id)
            assert [entry["version"] for entry in history] == list(range(1, len(history) + 1))
            assert history[-1]["version"] >= acked[flow_id]
    finally:
        assert second.stop() == 0


# --- payflowctl against the real daemon -----------------------------------------------------------


def _completed_flow(daemon: DaemonProcess, pre_id: str) -> str:
    async def scenario() -> str:
        async with PayflowClient(daemon.url) as client:
            created = await client.create_flow(amount=999, currency="eur", pre_id=pre_id)
            flow_id, token = created["flow_id"], created["token"]
            await _pay(client, await client.subscribe(flow_id, token), flow_id, token)
            return str(flow_id)

    return asyncio.run(scenario())


def test_every_payflowctl_command_answers_for_people_and_for_scripts(
    daemon: DaemonProcess,
) -> None:
    flow_id = _completed_flow(daemon, "pre_ctl")
    status = daemon.ctl_json("status")
    assert {"uptime_s", "flows", "actors", "sockets", "errors_per_min"} <= set(status)
    assert status["flows"]["COMPLETED"] >= 1
    assert status["actors"] > 0
    root = daemon.ctl_json("tree")
    assert {"name", "kind", "state", "restarts", "children"} <= set(root)
    assert root["name"] == "root"
    assert root["children"]
    rows = daemon.ctl_json("ps", "--state", "COMPLETED")
    assert flow_id in {row["flow_id"] for row in rows}
    assert {row["state"] for row in rows} == {"COMPLETED"}
    row = next(row for row in rows if row["flow_id"] == flow_id)
    assert set(row) >= {"flow_id", "booking_id", "pre_id", "state", "version", "updated_at"}
    inspected = daemon.ctl_json("inspect", "pre_ctl")  # any of the flow's ids
    assert inspected["flow_id"] == flow_id
    assert inspected["version"] == row["version"]
    assert {"history", "tracker", "sessions"} <= set(inspected)
    history = daemon.ctl_json("history", f"bk_{flow_id}")
    assert [entry["version"] for entry in history] == list(range(1, row["version"] + 1))
    assert history[0]["event"] == "flow_created"
    assert history[-1]["state"] == "COMPLETED"
    assert all(set(entry) >= {"version", "event", "state", "at"} for entry in history)
    sockets = daemon.ctl_json("sockets")
    assert isinstance(sockets, list)
    assert all({"kind", "url", "state", "reconnects", "flows"} <= set(s) for s in sockets)
    restarted = daemon.ctl_json("restart", flow_id)
    assert restarted["restarted"]
    human = {
        ("status",): "uptime",
        ("tree",): "root",
        ("ps",): flow_id,
        ("inspect", flow_id): "tracker",
        ("history", flow_id): "flow_created",
        ("sockets",): "sockets",
        ("restart", flow_id): "restarted",
    }
    for command, shown in human.items():
        done = daemon.ctl(*command)
        assert done.returncode == 0, (command, done.stderr)
        assert shown in done.stdout, (command, done.stdout)
    top = daemon.ctl("top", "--count", "1")
    assert top.returncode == 0
    assert "flows" in top.stdout


def test_payflowctl_unknown_ids_exit_1_and_an_absent_daemon_exits_3(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    for command in ("inspect", "history", "restart"):
        done = daemon.ctl(command, "flw_does_not_exist")
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1
        assert "flw_does_not_exist" in done.stderr
    gone = daemon.ctl("--control", str(tmp_path / "none.sock"), "status", "--json")
    assert gone.returncode == 3
    assert gone.stdout == ""


def test_drain_refuses_new_flows_and_lets_running_ones_finish(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as drained:

        async def scenario() -> None:
            async with PayflowClient(drained.url) as client:
                created = await client.create_flow(amount=5, currency="eur")
                flow_id, token = created["flow_id"], created["token"]
                subscription = await client.subscribe(flow_id, token)
                answer = drained.ctl_json("drain")
                assert answer["draining"] is True
                assert answer["flows_in_flight"] == 1
                assert drained.ctl("drain").returncode == 0
                with pytest.raises(Overloaded):
                    await client.create_flow(amount=5, currency="eur")
                seen = await _pay(client, subscription, flow_id, token)
                assert seen[-1]["state"] == "COMPLETED"

        asyncio.run(scenario())


# --- monitoring: metrics and logs -------------------------------------------------------------


def _samples(daemon: DaemonProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:

    code, body = daemon.http_get("/metrics")
    assert code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (sample, _labels), value in samples.items() if sample == name)


def test_metrics_move_and_logs_name_the_flow_without_its_secrets(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as fresh:
        before = _samples(fresh)
        for point in (
            "payflowd_socket_health_ratio",
            "payflowd_errors_per_minute",
            "payflowd_actors",
            "payflowd_mailbox_depth",
        ):
            assert (point, ()) in before, point
        completed = ("payflowd_flows", (("state", "COMPLETED"),))
        assert before[completed] == 0

        async def scenario() -> tuple[str, str, str]:
            async with PayflowClient(fresh.url) as client:
                created = await client.create_flow(amount=1234, currency="eur")
                flow_id, token = created["flow_id"], created["token"]
                with pytest.raises(Forbidden):
                    await client.join(flow_id, "pft_not_it")
                seen = await _pay(client, await client.subscribe(flow_id, token), flow_id, token)
                return flow_id, token, str(seen[-1]["client_secret"])

        flow_id, token, client_secret = asyncio.run(scenario())
        # The flow gauges refresh every second.
        wait_until(lambda: _samples(fresh)[completed] == 1, "the completed flow counted", WAIT)
        after = _samples(fresh)
        assert _total(after, "payflowd_provider_call_seconds_count") > _total(
            before, "payflowd_provider_call_seconds_count"
        )
        assert _total(after, "payflowd_transition_seconds_count") >= 4  # PRE_BOOKING..COMPLETED
        assert after[("payflowd_errors_total", (("code", "forbidden"),))] == 1
        assert after[("payflowd_errors_per_minute", ())] >= 1
        log = fresh.log()
        assert any(event.get("flow_id") == flow_id for event in fresh.log_events())
        assert client_secret.startswith("pi_")
        assert client_secret not in log
        assert token not in log


# --- upstream feeds ------------------------------------------------------------------------------


class FeedServerThread:
    """A `FeedServer` on its own loop thread, so the daemon's feed client can reach it."""

    def __init__(self) -> None:
        self.feed = FeedServer()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT)

    def close(self) -> None:
        if self.feed.server is not None:
            self.call(self.feed.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)


def _feed_row(daemon: DaemonProcess) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [
        row for row in daemon.ctl_json("sockets") if row["kind"] == "feed"
    ]
    assert len(rows) == 1
    return rows[0]


async def _intent_awaiting_confirm(url: str) -> tuple[str, Any, PayflowClient]:
    """A flow whose payment intent exists and waits for a confirm, as a Stripe.js front end
    would confirm it; its flow_id, its subscription and the open client."""
    client = PayflowClient(url)
    await client.__aenter__()
    created = await client.create_flow(amount=1200, currency="eur")
    flow_id, token = created["flow_id"], created["token"]
    subscription = await client.subscribe(flow_id, token)
    await client.attach_booking(flow_id, token, f"bk_{flow_id}")
    await client.select_method(flow_id, token, "pm_card_visa")
    await _until(subscription, lambda status: status["provider_status"] is not None)
    return flow_id, subscription, client


def _intent_of(flow: dict[str, Any]) -> str:
    return str(flow["tracker"]["intent_id"])


def test_feeds_reconnect_resubscribe_since_and_turn_error_after_the_retry_limit(
    tmp_path: Path,
) -> None:
    server = FeedServerThread()
    try:
        server.call(server.feed.start())
        url = server.feed.url
        first = launch(tmp_path, ["--feed", url])
        try:
            wait_until(lambda: _feed_row(first)["state"] == "MONITORING", "feed monitoring", WAIT)
            assert server.feed.subscribes == [0]
            _the_feed_completes_a_flow(first, server)
            server.call(server.feed.stop())
            server.call(server.feed.start())
            wait_until(lambda: server.feed.subscribes == [0, 50], "resubscribed with since", WAIT)
            server.call(server.feed.stop())
            wait_until(
                lambda: _feed_row(first)["state"] == "ERROR", "ERROR after the retries", WAIT
            )
            assert _feed_row(first)["reconnects"] >= 3
            assert any(event.get("event") == "feed_error" for event in first.log_events())
            assert first.stop() == 0
        finally:
            first.kill()
        server.call(server.feed.start())
        second = first.restart()
        try:
            wait_until(lambda: server.feed.subscribes[-1:] == [50], "a restart resumes since", WAIT)
            # The feed's position stream is not a flow: the restart resumes no flow and no
            # actor fails trying to read one.
            recovered = [e for e in second.log_events() if e.get("event") == "flows_recovered"]
            assert [e["count"] for e in recovered] == [0]
            assert not [e for e in second.log_events() if e.get("level") == "error"]
            assert all(node["restarts"] == 0 for node in second.ctl_json("tree")["children"])
        finally:
            assert second.stop() == 0
    finally:
        server.close()


def test_sigterm_is_not_held_up_by_a_feed_that_stopped_answering(tmp_path: Path) -> None:
    # The contract's 10 s for a SIGTERM: a frozen feed must not spend it on a closing handshake.
    server = FeedServerThread()
    frozen = threading.Event()
    try:
        server.call(server.feed.start())
        daemon = launch(tmp_path, ["--feed", server.feed.url])
        try:
            wait_until(lambda: _feed_row(daemon)["state"] == "MONITORING", "feed monitoring", WAIT)
            server.loop.call_soon_threadsafe(frozen.wait)  # the feed's process hangs
            assert daemon.stop() == 0  # within STOP_TIMEOUT, the contract's 10 s
        finally:
            daemon.kill()
    finally:
        frozen.set()
        server.close()


def _the_feed_completes_a_flow(daemon: DaemonProcess, server: FeedServerThread) -> None:
    """A feed event for a known intent moves its flow and `since`; one for an intent nobody
    knows, dated later, moves neither."""

    async def scenario() -> None:
        flow_id, subscription, client = await _intent_awaiting_confirm(daemon.url)
        try:
            intent_id = _intent_of(daemon.ctl_json("inspect", flow_id))
            foreign = {**event_frame("evt_x", 60), "intent_id": "pi_nobody"}
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(server.feed.push(**foreign), server.loop)
            )
            known = {**event_frame("evt_a", 50), "intent_id": intent_id}
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(server.feed.push(**known), server.loop)
            )
            seen = await _until(subscription, lambda status: status["state"] == "COMPLETED")
            assert seen[-1]["provider_status"] == "succeeded"
        finally:
            await client.__aexit__(None, None, None)

    asyncio.run(scenario())
    wait_until(lambda: _feed_row(daemon)["since"] == 50, "position from the applied event", WAIT)
    assert _feed_row(daemon)["flows"] == 1


def test_the_stripe_provider_against_localstripe_completes_a_flow(
    tmp_path: Path, localstripe: LocalStripe
) -> None:
    args = ["--provider", "stripe", "--stripe-api-base", localstripe.base_url]
    with running_daemon(tmp_path, args, env={"STRIPE_API_KEY": localstripe.api_key}) as real:
        assert "provider_simulated" not in {event.get("event") for event in real.log_events()}

        async def scenario() -> list[dict[str, Any]]:
            async with PayflowClient(real.url) as client:
                created = await client.create_flow(amount=2500, currency="eur")
                flow_id, token = created["flow_id"], created["token"]
                return await _pay(client, await client.subscribe(flow_id, token), flow_id, token)

        seen = asyncio.run(scenario())
        assert seen[-1]["provider_status"] == "succeeded"
        assert seen[-1]["client_secret"].startswith("pi_")


class _BackendReceiver:
    """A booking backend on 127.0.0.1 that records each notification it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._server = _http_server(self.received)
        self.url = f"http://127.0.0.1:{self._server.server_port}/payflowd-events"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _http_server(received: list[tuple[dict[str, str], bytes]]) -> Any:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def test_a_completed_flow_is_posted_to_the_booking_backend_signed(tmp_path: Path) -> None:
    backend = _BackendReceiver()
    secret = "notify-secret-for-tests"
    env = {"PAYFLOWD_NOTIFY_SECRET": secret}
    try:
        with running_daemon(tmp_path, ["--notify-url", backend.url], env=env) as daemon:
            flow_id = _completed_flow(daemon, "pre_notify")
            wait_until(lambda: bool(backend.received), "the backend notification", WAIT)
    finally:
        backend.close()
    headers, body = backend.received[0]
    event = json.loads(body)
    assert (event["type"], event["flow_id"], event["state"]) == (
        "flow.completed",
        flow_id,
        "COMPLETED",
    )
    assert event["pre_id"] == "pre_notify"
    assert event["intent_id"]
    stamp, v1 = (part.split("=", 1)[1] for part in headers["Payflowd-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(v1, expected)
    assert secret not in daemon.log()


def test_sigkill_between_persist_and_provider_call_resumes_with_the_same_key(
    tmp_path: Path, localstripe: LocalStripe
) -> None:
    """The process dies right after `method_selected` is durable and before Stripe is called;
    the restarted daemon sends the create with the deterministic key and the flow completes."""

    async def scenario() -> tuple[str, list[str], list[dict[str, Any]]]:
        async with recording_proxy(localstripe.base_url) as proxy:
            args = ["--provider", "stripe", "--stripe-api-base", proxy.url]
            env = {"STRIPE_API_KEY": localstripe.api_key}
            armed = {**env, "PAYFLOWD_FAILPOINTS": "after_persist_before_provider_call=kill"}
            first = await asyncio.to_thread(launch, tmp_path, args, env=armed)
            async with PayflowClient(first.url) as client:
                created = await client.create_flow(amount=1999, currency="eur")
                flow_id, token = created["flow_id"], created["token"]
                await client.attach_booking(flow_id, token, "bk_killed")
                with contextlib.suppress(Exception):  # the daemon may die before it answers
                    await client.select_method(flow_id, token, "pm_card_visa")
            assert await asyncio.to_thread(first.process.wait, WAIT) == -signal.SIGKILL
            assert not [seen for seen in proxy.seen if seen.method == "POST"]
            ports = (first.listen_port, first.http_port)
            second = await asyncio.to_thread(launch, tmp_path, args, env=env, ports=ports)
            try:
                async with PayflowClient(second.url) as client:
                    subscription = await client.subscribe(flow_id, token)
                    seen = await _until(subscription, lambda s: s["provider_status"] is not None)
                    await client.submit(flow_id, token)
                    seen += await _until(subscription, lambda s: s["state"] == "COMPLETED")
            finally:
                await asyncio.to_thread(second.stop)
            creates = [
                seen_request.headers.get("Idempotency-Key", "")
                for seen_request in proxy.seen
                if seen_request.method == "POST" and seen_request.path == "/v1/payment_intents"
            ]
            return flow_id, creates, seen

    flow_id, creates, seen = asyncio.run(scenario())
    assert len(creates) == 1
    assert creates[0].startswith(f"{flow_id}:create_intent:1:")
    assert seen[-1]["state"] == "COMPLETED"
    assert seen[-1]["provider_status"] == "succeeded"


def test_the_client_reconnects_by_itself_and_resumes_with_since_across_a_daemon_restart(
    tmp_path: Path,
) -> None:
    """A subscribed client outlives a daemon restart: it reconnects on its own (a fixed 1 s
    backoff, so the flow moves on while it is away), re-joins with `since`, and sees every
    version once, in order, through COMPLETED."""
    first = launch(tmp_path)
    ports = (first.listen_port, first.http_port)
    away = Backoff(base=1.0, cap=1.0, strategy="exponential")

    async def scenario() -> list[int]:
        async with PayflowClient(first.url, backoff=away) as watcher:
            async with PayflowClient(first.url) as driver:
                created = await driver.create_flow(amount=900, currency="eur")
            flow_id, token = created["flow_id"], created["token"]
            statuses = await watcher.subscribe(flow_id, token)
            seen = [(await _next_status(statuses))["version"]]
            assert await asyncio.to_thread(first.stop) == 0
            second = await asyncio.to_thread(launch, tmp_path, ports=ports)
            try:
                async with PayflowClient(second.url) as driver:
                    await driver.attach_booking(flow_id, token, f"bk_{flow_id}")
                    await driver.select_method(flow_id, token, "pm_card_visa")
                    status = await _until(statuses, lambda s: s["provider_status"] is not None)
                    seen += [s["version"] for s in status]
                    await driver.submit(flow_id, token)
                    done = await _until(statuses, lambda s: s["state"] == "COMPLETED")
                    seen += [s["version"] for s in done]
                assert watcher.reconnects >= 1
            finally:
                await asyncio.to_thread(second.stop)
            return seen

    versions = asyncio.run(scenario())
    assert versions == list(range(1, versions[-1] + 1))


WEBHOOK_SECRET = "whsec_daemon_test"


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _intent_event(event_id: str, intent_id: str, status: str, created: int) -> bytes:
    intent = {"id": intent_id, "object": "payment_intent", "status": status}
    kind = "payment_intent.succeeded" if status == "succeeded" else "payment_intent.processing"
    event = {"id": event_id, "object": "event", "type": kind, "created": created}
    return json.dumps({**event, "data": {"object": intent}}).encode()


def test_signed_webhooks_repeated_and_out_of_order_with_polls_complete_the_flow_once(
    tmp_path: Path, localstripe: LocalStripe
) -> None:
    """The customer confirms at the provider itself (as with Stripe.js); the daemon hears of it
    from webhooks sent three times, a stale one after them, a forged one, and its own polls."""
    args = ["--provider", "stripe", "--stripe-api-base", localstripe.base_url]
    env = {"STRIPE_API_KEY": localstripe.api_key, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    with running_daemon(tmp_path, args, env=env) as daemon:
        flow_id, intent_id = asyncio.run(_flow_with_intent(daemon))
        confirm = urllib.request.Request(
            f"{localstripe.base_url}/v1/payment_intents/{intent_id}/confirm",
            data=b"",
            headers={"Authorization": f"Bearer {localstripe.api_key}"},
            method="POST",
        )
        with urllib.request.urlopen(confirm, timeout=10) as paid:
            assert json.loads(paid.read())["status"] == "succeeded"
        url, now = f"{daemon.http_url}/webhooks/stripe", int(time.time())
        succeeded = _intent_event("evt_paid", intent_id, "succeeded", now)
        stale = _intent_event("evt_old", intent_id, "processing", now - 30)
        for body in (succeeded, succeeded, stale, succeeded):
            sig = sign_webhook(body, WEBHOOK_SECRET)
            assert _post(url, body, {"Stripe-Signature": sig}) == 200
        forged = _intent_event("evt_forged", intent_id, "processing", now + 5)
        assert _post(url, forged, {"Stripe-Signature": sign_webhook(forged, "whsec_wrong")}) == 400
        wait_until(
            lambda: daemon.ctl_json("inspect", flow_id)["state"] == "COMPLETED", "completed", WAIT
        )
        time.sleep(1.5)  # polls and the duplicates keep arriving: nothing may move it again
        history = daemon.ctl_json("history", flow_id)
    events = [row["event"] for row in history]
    assert events.count("payment_succeeded") == 1
    assert events[-1] == "payment_succeeded"
    assert [row["version"] for row in history] == list(range(1, len(history) + 1))


def test_with_the_dummy_provider_signed_webhooks_are_verified_and_applied(tmp_path: Path) -> None:
    # A site can test its webhook wiring before it has Stripe keys: same endpoint, same checks.
    env = {"STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    with running_daemon(tmp_path, [], env=env) as daemon:
        flow_id, intent_id = asyncio.run(_flow_with_intent(daemon))
        url = f"{daemon.http_url}/webhooks/stripe"
        paid = _intent_event("evt_dummy_paid", intent_id, "succeeded", int(time.time()))
        assert _post(url, paid, {}) == 400
        assert _post(url, paid, {"Stripe-Signature": sign_webhook(paid, "whsec_wrong")}) == 400
        assert daemon.ctl_json("inspect", flow_id)["state"] == "PAYMENT_ACTIVE"
        assert _post(url, paid, {"Stripe-Signature": sign_webhook(paid, WEBHOOK_SECRET)}) == 200
        wait_until(
            lambda: daemon.ctl_json("inspect", flow_id)["state"] == "COMPLETED", "completed", WAIT
        )
    assert WEBHOOK_SECRET not in daemon.log()


async def _flow_with_intent(daemon: DaemonProcess) -> tuple[str, str]:
    async with PayflowClient(daemon.url) as client:
        created = await client.create_flow(amount=3100, currency="eur")
        flow_id, token = created["flow_id"], created["token"]
        statuses = await client.subscribe(flow_id, token)
        await client.attach_booking(flow_id, token, f"bk_{flow_id}")
        await client.select_method(flow_id, token, "pm_card_visa")
        ready = await _until(statuses, lambda status: status["client_secret"] is not None)
        return str(flow_id), str(ready[-1]["client_secret"]).split("_secret_")[0]
