"""The daemon's HTTP face: Stripe webhooks, Prometheus metrics, liveness and readiness.

It runs on the daemon's asyncio loop (aiohttp). Webhook requests are verified before anything
happens: a missing, malformed, wrong or stale signature, or a body that does not parse, is answered
400 and reaches nobody. A verified event is handed to the application, which routes it to the
flow's tracker; duplicates and intents nobody knows are the tracker's business, so they are 200 too.

Neither the body nor the `Stripe-Signature` header is ever logged: the body carries customer data
and the header is what an attacker would need to replay it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog
from aiohttp import web

from actors.provider import Intent, ProviderEvent
from adapters.metrics import CONTENT_TYPE, Metrics
from runtime.errors import ProviderRejected, Rejected, Retryable

MAX_WEBHOOK_BYTES = 1024 * 1024
# Long enough for an in-flight webhook to reach its tracker, short enough for the 10 s SIGTERM rule.
_SHUTDOWN_TIMEOUT_S = 3.0


class WebhookHandler(Protocol):
    """Verifies and delivers provider webhooks; the Stripe adapter implements it."""

    def verify(self, body: bytes, signature: str | None) -> ProviderEvent | None:
        """The event the body describes, or None for a valid event nobody needs.

        Raises a `runtime.errors.Rejected` (e.g. `InvalidWebhook`) when the signature is missing,
        malformed, wrong or stale, or the body does not parse.
        """
        ...

    async def deliver(self, event: ProviderEvent) -> None: ...


DummyAuthenticate = Callable[[str, bool], Awaitable[Intent]]
"""`DummyProvider.authenticate_secret`: the customer's 3-D Secure step (dummy provider only)."""


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class HttpServer:
    """`POST /webhooks/stripe`, `GET /metrics`, `GET /healthz`, `GET /readyz`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        webhook: WebhookHandler | None,
        ready: Callable[[], bool],
        metrics: Metrics,
        dummy_authenticate: DummyAuthenticate | None = None,
    ) -> None:
        self._host = host
        self._dummy_authenticate = dummy_authenticate
        self._port = port
        self._webhook = webhook
        self._ready = ready
        self._metrics = metrics
        self._runner: web.AppRunner | None = None
        self._accepting = False

    @property
    def port(self) -> int:
        """The bound port (the real one once started, also when asked for port 0)."""
        return self._port

    @property
    def accepting(self) -> bool:
        return self._accepting

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_WEBHOOK_BYTES)
        app.router.add_post("/webhooks/stripe", self._handle_webhook)
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/healthz", self._handle_healthz)
        app.router.add_get("/readyz", self._handle_readyz)
        if self._dummy_authenticate is not None:  # a simulated provider only: never with Stripe
            app.router.add_post("/dummy/authenticate", self._handle_dummy_authenticate)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self._app(), shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._accepting = True
        structlog.get_logger(__name__).info("http_listening", host=self._host, port=self._port)

    async def stop(self) -> None:
        self._accepting = False
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # --- handlers ----------------------------------------------------------------------------

    async def _handle_webhook(self, request: web.Request) -> web.Response:
        log = structlog.get_logger(__name__)
        if self._webhook is None:
            return _error(503, "webhooks_disabled", "STRIPE_WEBHOOK_SECRET is not configured")
        body = await request.read()  # aiohttp answers 413 itself beyond client_max_size
        try:
            event = self._webhook.verify(body, request.headers.get("Stripe-Signature"))
        except Rejected as exc:
            log.warning("webhook_rejected", code=exc.code, reason=type(exc).__name__)
            return _error(400, exc.code, str(exc))
        if event is None:
            return web.json_response({"received": True, "ignored": True})
        try:
            await self._webhook.deliver(event)
        except Retryable as exc:
            # Stripe retries a non-2xx delivery, which is exactly what a full mailbox needs.
            log.warning("webhook_deferred", event_id=event.event_id, code=exc.code)
            return _error(503, exc.code, "try again later")
        log.info("webhook_received", event_id=event.event_id, intent_id=event.intent_id)
        return web.json_response({"received": True})

    async def _handle_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _handle_healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _handle_readyz(self, _request: web.Request) -> web.Response:
        if self._ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not_ready"}, status=503)

    async def _handle_dummy_authenticate(self, request: web.Request) -> web.Response:
        """`POST /dummy/authenticate` {"client_secret": str, "success": bool}: the customer
        passes (or fails) 3-D Secure at the dummy provider, which then pushes the change like a
        webhook. Answers the intent's new status and `event_at`, the epoch time of the change
        (load tools measure from it how fast the status reaches the client)."""
        assert self._dummy_authenticate is not None  # the route exists only with it
        try:
            body = await request.json()
            secret, success = body["client_secret"], body.get("success", True)
        except (ValueError, KeyError, TypeError, AttributeError):
            secret = success = None
        if not isinstance(secret, str) or not isinstance(success, bool):
            message = "a JSON object with client_secret (string) and success (boolean)"
            return _error(400, "invalid_field", message)
        try:
            intent = await self._dummy_authenticate(secret, success)
        except ProviderRejected as exc:
            return _error(404 if "resource_missing" in str(exc) else 409, exc.code, str(exc))
        event_at = time.time()  # no await since the change: this is when it happened
        return web.json_response(
            {"intent_id": intent.intent_id, "status": intent.status, "event_at": event_at}
        )
