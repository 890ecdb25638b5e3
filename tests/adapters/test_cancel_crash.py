"""A customer's cancel of a flow whose intent could still be charged, end to end: the real
daemon, a real localstripe, and the provider requests recorded on the wire.

- A SIGKILL between the durable `cancel_requested` and the cancel call: the restarted daemon
  sends that cancel once, with the key the first one would have used, and the flow ends
  CANCELLED with the intent canceled at the provider.
- The customer paid (Stripe.js) before the cancel reached the provider: the flow follows the
  payment to COMPLETED and the booking backend hears `flow.completed`, never `flow.cancelled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import urllib.request
from collections.abc import AsyncIterator, Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from adapters.client import PayflowClient
from tests.daemon_harness import DaemonProcess, launch, running_daemon
from tests.localstripe import HttpServer, LocalStripe, SeenRequest, serve
from tests.waiting import wait_until

WAIT = 15.0
NOTIFY_SECRET = {"PAYFLOWD_NOTIFY_SECRET": "notify-secret-for-tests"}
KILL_BEFORE_CALL = {"PAYFLOWD_FAILPOINTS": "after_persist_before_provider_call=kill"}


# --- a proxy to localstripe on its own loop thread, so the test itself may block --------------


@contextlib.asynccontextmanager
async def _proxy(target: str, gate: asyncio.Event) -> AsyncIterator[HttpServer]:
    """Forwards everything to `target`, recording it; reads of an intent (the daemon's polls
    and re-reads) wait for `gate`, so the test decides when the daemon may learn news."""
    async with aiohttp.ClientSession() as upstream:

        async def forward(request: web.Request, body: bytes) -> web.StreamResponse:
            if request.method == "GET":
                await gate.wait()
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            async with upstream.request(
                request.method, target + request.path_qs, data=body, headers=headers
            ) as reply:
                kept = {"Content-Type": reply.headers.get("Content-Type", "application/json")}
                return web.Response(body=await reply.read(), status=reply.status, headers=kept)

        async with serve(forward) as server:
            yield server


class _ProxyThread:
    def __init__(self, target: str, *, gated: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self._context = _proxy(target, self.gate)
        self.server: HttpServer = self._call(self._context.__aenter__())

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT)

    def open_gate(self) -> None:
        self.loop.call_soon_threadsafe(self.gate.set)

    def cancels(self, intent_id: str) -> list[SeenRequest]:
        wanted = ("POST", f"/v1/payment_intents/{intent_id}/cancel")
        return [seen for seen in list(self.server.seen) if (seen.method, seen.path) == wanted]

    def close(self) -> None:
        self.open_gate()  # a read still held must not outlive the test
        self._call(self._context.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)


@contextlib.contextmanager
def _proxy_to(localstripe: LocalStripe, *, gated: bool = False) -> Any:
    proxy = _ProxyThread(localstripe.base_url, gated=gated)
    try:
        yield proxy
    finally:
        proxy.close()


# --- the customer, over the bridge; the provider, as Stripe.js and a dashboard see it ---------


async def _flow_awaiting_confirm(url: str) -> tuple[str, str, str]:
    """A flow whose payment intent waits for a confirm: flow_id, token, intent_id."""
    async with PayflowClient(url) as client:
        created = await client.create_flow(amount=2700, currency="eur")
        flow_id, token = created["flow_id"], created["token"]
        statuses = await client.subscribe(flow_id, token)
        await client.attach_booking(flow_id, token, f"bk_{flow_id}")
        await client.select_method(flow_id, token, "pm_card_visa")
        async with asyncio.timeout(WAIT):
            async for status in statuses:
                if status["client_secret"] is not None:
                    return flow_id, token, status["client_secret"].split("_secret_")[0]
    raise AssertionError("the subscription ended before the intent existed")


async def _cancel(url: str, flow_id: str, token: str) -> dict[str, Any]:
    async with PayflowClient(url) as client:
        return await client.cancel(flow_id, token)


def _at_localstripe(localstripe: LocalStripe, method: str, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        localstripe.base_url + path,
        data=b"" if method == "POST" else None,
        headers={"Authorization": f"Bearer {localstripe.api_key}"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        answer: dict[str, Any] = json.loads(reply.read())
        return answer


def _ended(daemon: DaemonProcess, flow_id: str) -> dict[str, Any]:
    """The flow as `payflowctl inspect` shows it once it is terminal."""
    terminal = {"COMPLETED", "CANCELLED", "FAILED", "EXPIRED"}

    def inspect() -> dict[str, Any] | None:
        flow: dict[str, Any] = daemon.ctl_json("inspect", flow_id)
        return flow if flow["state"] in terminal else None

    return wait_until(inspect, f"{flow_id} terminal", WAIT)


def _stripe(localstripe: LocalStripe, proxy: _ProxyThread) -> tuple[list[str], dict[str, str]]:
    """The daemon's arguments and environment for Stripe through `proxy`."""
    args = ["--provider", "stripe", "--stripe-api-base", proxy.server.url]
    return args, {"STRIPE_API_KEY": localstripe.api_key}


# --- 1. SIGKILL between `cancel_requested` and the cancel call --------------------------------


def test_sigkill_before_the_cancel_call_resends_it_once_with_the_same_key(
    tmp_path: Path, localstripe: LocalStripe
) -> None:
    with _proxy_to(localstripe) as proxy:
        args, env = _stripe(localstripe, proxy)
        with running_daemon(tmp_path, args, env=env) as first:
            flow_id, token, intent_id = asyncio.run(_flow_awaiting_confirm(first.url))
            assert first.stop() == 0
        ports = (first.listen_port, first.http_port)
        armed = launch(tmp_path, args, env={**env, **KILL_BEFORE_CALL}, ports=ports)
        try:
            with contextlib.suppress(Exception):  # it may die before the ack is written out
                asyncio.run(_cancel(armed.url, flow_id, token))
            assert armed.process.wait(WAIT) == -signal.SIGKILL
        finally:
            armed.kill()
        assert proxy.cancels(intent_id) == []
        third = launch(tmp_path, args, env=env, ports=ports)
        try:
            flow = _ended(third, flow_id)
            history = third.ctl_json("history", flow_id)
        finally:
            assert third.stop() == 0
        cancels = proxy.cancels(intent_id)
    assert (flow["state"], flow["tracker"]["provider_status"]) == ("CANCELLED", "canceled")
    assert [row["event"] for row in history[-2:]] == ["cancel_requested", "cancelled"]
    assert [row["version"] for row in history] == list(range(1, len(history) + 1))
    requested = history[-2]["version"]
    key = f"{flow_id}:cancel_intent:{flow['attempts']}:{requested}"
    assert [seen.headers.get("Idempotency-Key") for seen in cancels] == [key]
    intent = _at_localstripe(localstripe, "GET", f"/v1/payment_intents/{intent_id}")
    assert intent["status"] == "canceled"


# --- 2. The customer paid first; the cancel arrives after -------------------------------------


class _BackendReceiver:
    """A booking backend on 127.0.0.1 that records each notification's JSON body."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/payflowd-events"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def types(self, flow_id: str) -> list[str]:
        return [event["type"] for event in list(self.received) if event["flow_id"] == flow_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_a_cancel_after_the_customer_paid_with_stripe_js_completes_the_flow(
    tmp_path: Path, localstripe: LocalStripe
) -> None:
    backend = _BackendReceiver()
    # Reads wait until the cancel is on the wire: the daemon cannot hear of the payment first.
    with contextlib.closing(backend), _proxy_to(localstripe, gated=True) as proxy:
        args, env = _stripe(localstripe, proxy)
        args, env = [*args, "--notify-url", backend.url], {**env, **NOTIFY_SECRET}
        with running_daemon(tmp_path, args, env=env) as daemon:
            flow_id, token, intent_id = asyncio.run(_flow_awaiting_confirm(daemon.url))
            paid = _at_localstripe(localstripe, "POST", f"/v1/payment_intents/{intent_id}/confirm")
            assert paid["status"] == "succeeded"
            assert asyncio.run(_cancel(daemon.url, flow_id, token))["type"] == "ack"
            wait_until(lambda: proxy.cancels(intent_id), "the cancel at the provider", WAIT)
            proxy.open_gate()
            flow = _ended(daemon, flow_id)
            wait_until(lambda: backend.types(flow_id), "the backend notification", WAIT)
            history = daemon.ctl_json("history", flow_id)
            assert daemon.stop() == 0
    assert (flow["state"], flow["tracker"]["provider_status"]) == ("COMPLETED", "succeeded")
    events = [row["event"] for row in history]
    assert "cancel_requested" in events
    assert "cancelled" not in events
    assert backend.types(flow_id) == ["flow.completed"]
