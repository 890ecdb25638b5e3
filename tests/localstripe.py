"""A real localstripe process for the tests, and the calls only localstripe understands.

localstripe (GPL, its own virtualenv) stands in for the Stripe API. `LocalStripe.start` runs
`localstripe --port P --from-scratch` on a free port and waits until it answers; one process serves
a whole test session and `reset` empties it between tests. The binary comes from the environment
variable PAYFLOWD_LOCALSTRIPE (set by `make test`), else `.venv-localstripe/bin/localstripe` in
the checkout; when neither exists the tests fail (never skip) and say to run `make test`.

Facts about localstripe 1.15.10 this harness works around (see also shared notes):
- it listens on all interfaces (`::`) and has no host option;
- it writes its whole store to the fixed path /tmp/localstripe.pickle after every write, whatever
  its cwd or HOME; `--from-scratch` never reads that file, so concurrent sessions clobber it
  without affecting each other;
- `DELETE /_config/data` empties the store but not the registered webhooks, so `reset` also
  silences every webhook this harness registered;
- a webhook is sent ~1 s after its event to whatever webhooks are registered by then, so an event
  from the previous test can reach the next test's receiver: tests pick their delivery by content.

This module speaks HTTP directly (urllib for the blocking set-up calls, aiohttp inside tests):
only adapters/stripe_provider.py imports the stripe SDK.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BINARY = REPO_ROOT / ".venv-localstripe" / "bin" / "localstripe"
API_KEY = "sk_test_payflowd_harness"

# Card numbers localstripe treats specially (PaymentMethods built from them).
CARD_PAYS = "4242424242424242"
CARD_DECLINES = "4000000000000341"  # declines on confirm (4000000000000002 does NOT, here)
CARD_NEEDS_3DS = "4000002500003155"

START_TIMEOUT_S = 30.0
WAIT_S = 10.0  # bound on waiting for a request localstripe sends (webhooks take ~1.2 s)
START_ATTEMPTS = 3  # a free port can be taken between choosing it and localstripe binding it
_SILENCED_WEBHOOK = {"url": "http://127.0.0.1:9/silenced", "secret": "whsec_off", "events": []}


def localstripe_binary() -> Path:
    """The localstripe executable, or a test failure that says how to install it."""
    path = Path(os.environ.get("PAYFLOWD_LOCALSTRIPE") or DEFAULT_BINARY)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"localstripe is not installed at {path}. Run `make test`: it installs localstripe "
            "into .venv-localstripe and points PAYFLOWD_LOCALSTRIPE at it.",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def sign_webhook(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value, computed as Stripe and localstripe compute it."""
    stamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{stamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


@dataclass
class LocalStripe:
    """One running localstripe process and the harness calls against it."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    api_key: str = API_KEY
    webhook_ids: set[str] = field(default_factory=set)

    @classmethod
    def start(cls, binary: Path, workdir: Path) -> LocalStripe:
        failures: list[str] = []
        for attempt in range(START_ATTEMPTS):
            server = cls._spawn(binary, workdir, workdir / f"localstripe-{attempt}.log")
            failure = server._wait_until_ready()
            if failure is None:
                return server
            server.stop()
            failures.append(failure)
        pytest.fail("localstripe did not start:\n" + "\n".join(failures), pytrace=False)

    @classmethod
    def _spawn(cls, binary: Path, workdir: Path, log_path: Path) -> LocalStripe:
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(binary), "--port", str(port), "--from-scratch"],
                cwd=workdir,
                env={**os.environ, "HOME": str(workdir)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(process=process, base_url=f"http://127.0.0.1:{port}", log_path=log_path)

    def _wait_until_ready(self) -> str | None:
        """None once localstripe answers, else why it did not (exit or deadline, with its log)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"exited with {self.process.returncode}: {self._log_tail()}"
            if self._answers():
                return None
            time.sleep(0.05)  # polling the condition above, bounded by the deadline
        return f"no answer within {START_TIMEOUT_S} s: {self._log_tail()}"

    def _answers(self) -> bool:
        try:
            self._send("DELETE", "/_config/data")
        except (urllib.error.URLError, ConnectionError):
            return False
        return True

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def reset(self) -> None:
        """Forget every object and silence every webhook registered through this harness."""
        self._send("DELETE", "/_config/data")
        for webhook_id in sorted(self.webhook_ids):
            self._send("POST", f"/_config/webhooks/{webhook_id}", _SILENCED_WEBHOOK)

    def _send(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> None:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    # --- calls made from inside tests (on the test's event loop) -------------------------------

    async def register_webhook(
        self, webhook_id: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        """Ask localstripe to POST signed events to `url` (~1 s after they happen, no retries)."""
        body: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            body["events"] = events
        await self._api("POST", f"/_config/webhooks/{webhook_id}", body)
        self.webhook_ids.add(webhook_id)

    async def authenticate(self, intent_id: str, client_secret: str, success: bool) -> Any:
        """Play the customer in 3-D Secure; returns the PaymentIntent JSON."""
        body = {"client_secret": client_secret, "success": success}
        return await self._api("POST", f"/v1/payment_intents/{intent_id}/_authenticate", body)

    async def create_card(self, number: str) -> str:
        """A PaymentMethod for a test card number; returns its id."""
        card = {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}
        created = await self._api("POST", "/v1/payment_methods", {"type": "card", "card": card})
        return str(created["id"])

    async def _api(self, method: str, path: str, body: Mapping[str, Any]) -> Any:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.base_url + path, json=body, headers=headers) as reply,
        ):
            text = await reply.text()
            assert reply.status < 300, f"localstripe {method} {path}: {reply.status} {text}"
            return json.loads(text) if text.strip() else None


# --- tiny real HTTP servers the tests put between payflowd and localstripe --------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SeenRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class HttpServer:
    """A started aiohttp server on 127.0.0.1 and every request it received."""

    url: str
    seen: list[SeenRequest] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, match: Callable[[SeenRequest], bool]) -> SeenRequest:
        """The first request `match` accepts, waiting until it arrives (at most WAIT_S)."""
        async with asyncio.timeout(WAIT_S):
            while True:
                found = next((seen for seen in self.seen if match(seen)), None)
                if found is not None:
                    return found
                self.arrived.clear()
                await self.arrived.wait()


Answer = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(answer: Answer) -> AsyncIterator[HttpServer]:
    """Serve every request with `answer(request, body) -> web.StreamResponse`, recording it."""
    server = HttpServer(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = SeenRequest(
            method=request.method, path=request.path_qs, headers=dict(request.headers), body=body
        )
        server.seen.append(seen)
        server.arrived.set()
        return await answer(request, body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


@asynccontextmanager
async def recording_proxy(
    target: str, *, fail_first: int = 0, create_delay: float = 0.0
) -> AsyncIterator[HttpServer]:
    """A reverse proxy to `target` that records what went over the wire. The first `fail_first`
    requests get a 503 Stripe-style error instead of being forwarded; intent creations are
    answered `create_delay` seconds late (a window to stop a process with a call in flight)."""
    async with aiohttp.ClientSession() as upstream:

        async def forward(request: web.Request, body: bytes) -> web.StreamResponse:
            if request.method == "POST" and request.path == "/v1/payment_intents":
                await asyncio.sleep(create_delay)
            if len(proxy.seen) <= fail_first:
                error = {"error": {"type": "api_error", "message": "try again"}}
                return web.json_response(error, status=503)
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            async with upstream.request(
                request.method, target + request.path_qs, data=body, headers=headers
            ) as reply:
                payload = await reply.read()
                kept = {"Content-Type": reply.headers.get("Content-Type", "application/json")}
                return web.Response(body=payload, status=reply.status, headers=kept)

        async with serve(forward) as proxy:
            yield proxy
