"""The composition root: settings in, a running payflowd out, and a clean exit on SIGTERM/SIGINT.

Order matters and is the contract's:
1. `adapters.daemon_main.preflight` checks what can be checked before anything exists (paths,
   ports, a live daemon on the control socket), so a bad value creates no file and no socket;
2. journal (file mode 0600) -> actor system -> provider -> domain -> socket manager -> app;
3. the bridge, HTTP and the control socket start; `/readyz` is true once all three accept;
   feeds connect and flows interrupted by the last stop resume;
4. on SIGTERM/SIGINT: stop accepting (bridge, HTTP, control, feeds), let the actors finish the
   messages they hold (appends, provider results) within a bound, close the provider and the
   journal, exit 0. Anything cut short was persisted before it was acted on and resumes at the
   next start with the same idempotency keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import structlog

from actors.flow_actor import Wake
from actors.socket_manager import SocketManager, SocketManagerActor
from adapters.app import App, MeteredPublisher
from adapters.bridge import Bridge
from adapters.codec import encode_status
from adapters.control_server import ControlServer
from adapters.domain import Domain, DomainSettings, build_domain
from adapters.dummy_provider import DummyProvider
from adapters.feeds import Feeds
from adapters.http_server import HttpServer
from adapters.logging_setup import configure_logging
from adapters.metrics import Metrics
from adapters.notifier import Notifier, Outbox
from adapters.operations import Operations
from adapters.stripe_provider import StripeProvider, StripeWebhooks
from runtime.config import Settings
from runtime.errors import ConfigError
from runtime.sqlite_journal import SQLiteJournal
from runtime.system import ActorSystem

EXIT_OK = 0
EXIT_FAILED = 1
_BRIDGE_DRAIN_S = 2.0
_ACTORS_STOP_S = 4.0
_METRICS_EVERY_S = 1.0
_NOTIFY_SINCE_KEY = "notify_since"  # journal meta: when --notify-url was first used
_RESTART_WAIT_S = 5.0  # how long `payflowctl restart` waits for a supervisor to answer
_LOG_BATCH_S = 0.005  # info log lines are written in batches this far apart (logging_setup)
# Cyclic GC. With CPython's defaults (700, 10, 10) a loaded daemon spent 13% of its CPU in
# collections, most in full ones walking every live flow (payflow-bench, 200 clients, 40 s:
# 5.6 s of 42.7 s, 13 full collections of up to 410 ms). These thresholds: 0.7 s, young
# generations still collected every second or so, and a full collection every ~100 young ones
# (about two minutes at that load), so cyclic garbage that outlived a young collection (stopped
# actors) is still returned and memory levels off (300 s soak, 100 clients: ~495 MiB).
_GC_THRESHOLDS = (20_000, 20, 5)


def _log() -> Any:
    return structlog.get_logger("payflowd.daemon")


# --- 2. and 3. the running daemon ----------------------------------------------------------------


class _LateDomain:
    """The socket manager's way to the flows, bound once the domain exists (it needs the socket
    manager first, as its status publisher)."""

    domain: Domain | None = None

    def send(self, flow_id: str, message: object) -> None:
        if self.domain is not None:
            self.domain.send(flow_id, message)


@dataclass(slots=True)
class _Servers:
    bridge: Bridge
    http: HttpServer
    control: ControlServer
    feeds: Feeds

    def ready(self) -> bool:
        return self.bridge.accepting and self.http.accepting and self.control.accepting


class Daemon:
    """One daemon run on the current asyncio loop: `await Daemon(settings).run()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._stop = asyncio.Event()
        self._exit = EXIT_OK
        self.notifier: Notifier | None = None

    async def run(self) -> int:
        self._announce()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        self.journal = SQLiteJournal(self.settings.db)
        self.system = ActorSystem(on_escalation=self._escalated)
        try:
            await self._run_parts(loop)
        finally:
            await asyncio.to_thread(self.system.shutdown, _ACTORS_STOP_S)
            self.journal.close()
        _log().info("daemon_stopped", exit_code=self._exit)
        return self._exit

    async def _run_parts(self, loop: asyncio.AbstractEventLoop) -> None:
        provider = self._provider()
        try:
            domain, app = self._wire(provider)
            servers = self._servers(app, provider)
            await self._start(servers, domain)
            if self.notifier is not None:
                await self._start_notifier(self.notifier)
            refresher = loop.create_task(self._refresh_metrics(servers))
            await self._stop.wait()
            refresher.cancel()
            await self._stop_servers(servers)
            # Actors first (they may still be appending), then the committer flushes.
            await asyncio.to_thread(self.system.stop_all, _ACTORS_STOP_S)
            await asyncio.to_thread(domain.close)
        finally:
            if self.notifier is not None:
                await self.notifier.close()
            await provider.close()

    def request_stop(self) -> None:
        _log().info("daemon_stopping")
        self._stop.set()

    def _escalated(self, error: BaseException) -> None:
        _log().critical("daemon_supervision_gave_up", error_type=type(error).__qualname__)
        self._exit = EXIT_FAILED
        with contextlib.suppress(RuntimeError):  # the loop is already closed: we are stopping
            self._loop.call_soon_threadsafe(self._stop.set)

    def _announce(self) -> None:
        self._loop = asyncio.get_running_loop()
        settings = self.settings
        _log().info(
            "daemon_starting",
            pid=os.getpid(),
            listen=str(settings.listen),
            http=str(settings.http),
            db=str(settings.db),
            control=str(settings.control),
            provider=settings.provider,
            feeds=list(settings.feeds),
        )
        if settings.api_key is None:
            _log().warning(
                "api_key_unset",
                detail="PAYFLOWD_API_KEY is not set: any connected client may create flows",
            )

    def _provider(self) -> DummyProvider | StripeProvider:
        settings = self.settings
        if settings.provider == "stripe":
            assert settings.stripe_api_key is not None  # load_settings requires it
            return StripeProvider(settings.stripe_api_key, api_base=settings.stripe_api_base)
        _log().warning(
            "provider_simulated",
            detail="dummy provider: payments are SIMULATED, no money moves",
        )
        return DummyProvider(latency=settings.dummy_latency)

    def _wire(self, provider: DummyProvider | StripeProvider) -> tuple[Domain, App]:
        """Domain, socket manager and app; the socket manager and the domain name each other,
        so the manager reaches the flows through a late-bound hop."""
        late = _LateDomain()
        self.notifier = self._notifier()
        sockets = SocketManager(
            self.system.spawn(SocketManagerActor, encode=encode_status, tell_flow=late.send)
        )
        domain = build_domain(
            self.journal,
            self.system,
            provider,
            self._loop,
            MeteredPublisher(sockets, self.metrics),
            self.notifier,
            DomainSettings.from_settings(self.settings),
            on_latency=self._provider_latency,
        )
        late.domain = domain
        app = App(
            journal=self.journal,
            domain=domain,
            sockets=sockets,
            system=self.system,
            metrics=self.metrics,
            token_secret=domain.token_secret,
            api_key=self.settings.api_key,
        )
        self.operations = Operations(
            journal=self.journal,
            system=self.system,
            sockets=sockets,
            metrics=self.metrics,
            start_draining=app.start_draining,
            restart_flow=lambda flow_id: _restart_flow(self.system, domain, flow_id),
        )
        self.feeds = self.operations.feeds = Feeds(
            self.settings.feeds,
            journal=self.journal,
            on_event=app.deliver_event,
            on_health=domain.set_push_health,
            ping_interval=self.settings.feed_ping_interval,
            ping_timeout=self.settings.feed_ping_timeout,
        )
        self.domain = domain
        return domain, app

    def _notifier(self) -> Notifier | None:
        """The booking backend's notifier; its outbox lives in the journal's file so that
        undelivered events are resent after a restart."""
        settings = self.settings
        if settings.notify_url is None:
            return None
        assert settings.notify_secret is not None  # load_settings requires it with notify_url
        return Notifier(
            settings.notify_url, settings.notify_secret, Outbox(settings.db), self._loop
        )

    async def _start_notifier(self, notifier: Notifier) -> None:
        """Resend what an earlier run left undelivered, then queue flows that finished without
        reaching the outbox (a crash in between), counting from when notifying was enabled."""
        notifier.start()
        since = float(self.journal.meta(_NOTIFY_SINCE_KEY, lambda: repr(time.time())))
        await asyncio.to_thread(notifier.reconcile, self.journal, since=since)

    def _provider_latency(self, op: str, seconds: float, outcome: str) -> None:
        self.metrics.provider_call(op, outcome, seconds)

    def _servers(self, app: App, provider: DummyProvider | StripeProvider) -> _Servers:
        settings = self.settings
        webhooks: StripeWebhooks | None = None
        secret = settings.stripe_webhook_secret
        if isinstance(provider, StripeProvider) and secret:
            webhooks = provider.webhooks(secret)
        elif secret and self.domain is not None:
            # With the dummy provider too: a site can test its signed Stripe webhooks (say, a
            # payment confirmed by Stripe.js) before it has keys.
            webhooks = StripeWebhooks(secret, self.domain.provider_event_sink)
        holder: list[_Servers] = []
        http = HttpServer(
            settings.http.host,
            settings.http.port,
            webhook=webhooks,
            ready=lambda: bool(holder) and holder[0].ready(),
            metrics=self.metrics,
            dummy_authenticate=(
                provider.authenticate_secret if isinstance(provider, DummyProvider) else None
            ),
        )
        servers = _Servers(
            bridge=Bridge(
                app,
                host=settings.listen.host,
                port=settings.listen.port,
                on_error=self.metrics.error,
            ),
            http=http,
            control=ControlServer(settings.control, self.operations),
            feeds=self.feeds,
        )
        holder.append(servers)
        return servers

    async def _start(self, servers: _Servers, domain: Domain) -> None:
        await servers.control.start()
        await servers.http.start()
        await servers.bridge.start()
        await asyncio.to_thread(domain.recover)
        servers.feeds.start()
        _log().info(
            "daemon_ready",
            listen_port=servers.bridge.port,
            http_port=servers.http.port,
            control=str(servers.control.path),
        )

    async def _stop_servers(self, servers: _Servers) -> None:
        await servers.bridge.stop(drain_timeout=_BRIDGE_DRAIN_S)
        await servers.feeds.stop()
        await servers.http.stop()
        await servers.control.stop()

    async def _refresh_metrics(self, servers: _Servers) -> None:
        """Gauges that are states, not events: flows by state, actors, socket health."""
        while True:
            counts = await asyncio.to_thread(self.operations.flow_counts)
            self.metrics.set_flows(counts)
            self.metrics.set_actors(len(self.system))
            feeds = servers.feeds.rows()
            sessions = servers.bridge.session_count
            self.metrics.socket_health(
                sessions + servers.feeds.healthy_count(), sessions + len(feeds)
            )
            await asyncio.sleep(_METRICS_EVERY_S)


def _restart_flow(system: ActorSystem, domain: Domain, flow_id: str) -> list[str]:
    """Restart the flow's live actors (flow, tracker) through their supervisors; a passivated
    flow is loaded instead. Runs on the control server's worker thread, so it may wait."""
    restarted = []
    for registry in (domain.flows, domain.trackers):
        ref = registry.get(flow_id)
        if ref is not None and system.restart(ref, timeout=_RESTART_WAIT_S):
            restarted.append(f"{registry.kind}/{flow_id}")
    if not restarted:
        domain.flows.tell(flow_id, Wake())
        restarted.append(f"{domain.flows.kind}/{flow_id} (loaded)")
    return restarted


def run(settings: Settings) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; returns the exit status."""
    configure_logging(settings.log_format, batch_s=_LOG_BATCH_S)
    _tune_gc()
    try:
        return asyncio.run(Daemon(settings).run())
    except ConfigError as exc:  # found only at start (e.g. another daemon took the socket)
        _log().error("daemon_start_refused", reason=str(exc))
        return 2


def _tune_gc() -> None:
    """Fewer collections, and none of them walking what was loaded at start (modules, code)."""
    gc.set_threshold(*_GC_THRESHOLDS)
    gc.freeze()
