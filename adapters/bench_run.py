"""One measured load: start the load processes, release them together, follow them on a progress
bar while sampling the server's CPU and memory, and collect their samples.

The load processes are separate OS processes (multiprocessing, spawn), so the customers' work
runs on their own interpreters and never on the server's loop; on a 2-core machine they still
share the cores with the server, which is why the report shows where the CPU went.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait

from adapters.bench_load import DRAIN_S, LoadSpec, load_main
from adapters.bench_stats import Samples, merged
from adapters.bench_target import ProcessMeter, cpu_seconds, machine_busy_seconds

START_DELAY_S = 0.2  # the "go" reaches every load process before the common start time
# Load processes give up flows still in flight DRAIN_S after the deadline; this is their margin.
PARENT_MARGIN_S = 60.0
TICK_S = 0.25

Progress = Callable[[float, int, int], None]
"""progress(seconds since start, flows completed, flows failed), called about every TICK_S."""


@dataclass(slots=True, kw_only=True)
class LoadRun:
    samples: Samples
    started: float  # epoch seconds: when the measured window opened (after the warm-up)
    seconds: float  # its length (to the deadline, or to the last flow completed)
    server: ProcessMeter | None
    load_cpu_s: float = 0.0  # CPU the load processes used during the window
    machine_busy: float = 0.0  # share of the whole machine (all cores) that was busy, 0..1
    failures: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Worker:
    pipe: Connection
    process: multiprocessing.process.BaseProcess
    completed: int = 0
    errors: int = 0
    samples: Samples | None = None


def run_load(
    spec: LoadSpec,
    *,
    processes: int,
    duration: float | None,
    server_pid: int | None,
    progress: Progress,
    warmup: float = 0.0,
) -> LoadRun:
    """Drive `spec` (split over `processes`) for `duration` seconds, or until `spec.flows`;
    rates and CPU are measured from `warmup` seconds after the start."""
    workers = _start(spec, processes)
    try:
        _await_ready(workers)
        meter = ProcessMeter(server_pid) if server_pid is not None else None
        started = time.time() + START_DELAY_S
        deadline = started + duration if duration is not None else None
        for worker in workers:
            worker.pipe.send((started, deadline))
        time.sleep(START_DELAY_S)  # until the common start
        window = _Window(workers, meter, started + warmup)
        return _follow(workers, window, started, duration, progress)
    finally:
        for worker in workers:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()


def _start(spec: LoadSpec, processes: int) -> list[_Worker]:
    context = multiprocessing.get_context("spawn")
    workers = []
    for index in range(processes):
        clients = spec.clients // processes + (index < spec.clients % processes)
        flows = (
            None
            if spec.flows is None
            else spec.flows // processes + (index < spec.flows % processes)
        )
        mine, theirs = context.Pipe()
        share = replace(spec, clients=clients, flows=flows, seed=spec.seed + index)
        process = context.Process(target=load_main, args=(share, index, theirs), daemon=True)
        process.start()
        workers.append(_Worker(pipe=mine, process=process))
    return workers


def _await_ready(workers: list[_Worker]) -> None:
    for worker in workers:
        message = worker.pipe.recv()
        if message[0] != "ready":
            raise RuntimeError(str(message[1]))


class _Window:
    """CPU of the server, of the load processes and of the machine over the measured window,
    which opens `warmup` seconds after the start and closes at the deadline (or when the last
    flow is done)."""

    def __init__(self, workers: list[_Worker], meter: ProcessMeter | None, opens: float) -> None:
        self._workers, self.meter, self.opens = workers, meter, opens
        self._open = False
        self._load0 = self._busy0 = self._total0 = 0.0
        self.load_cpu = self.busy = self.total = 0.0

    def tick(self, closes: float | None) -> None:
        now = time.time()
        if now < self.opens or (closes is not None and now > closes):
            return
        if not self._open:
            self._open = True
            if self.meter is not None:
                self.meter.start()
            self._load0 = sum(_cpu(w) for w in self._workers)
            self._busy0, self._total0 = machine_busy_seconds()
        if self.meter is not None:
            self.meter.tick()
            self.meter.stop()  # CPU counted up to now: the last tick inside the window wins
        self.load_cpu = sum(_cpu(w) for w in self._workers) - self._load0
        busy, total = machine_busy_seconds()
        self.busy, self.total = busy - self._busy0, total - self._total0


def _follow(
    workers: list[_Worker],
    window: _Window,
    started: float,
    duration: float | None,
    progress: Progress,
) -> LoadRun:
    closes = None if duration is None else started + duration
    hard_stop = time.time() + (duration or 0) + DRAIN_S + PARENT_MARGIN_S + 600 * (duration is None)
    failures: list[str] = []
    while any(w.samples is None for w in workers) and time.time() < hard_stop:
        for pipe in wait([w.pipe for w in workers if w.samples is None], timeout=TICK_S):
            _receive(next(w for w in workers if w.pipe is pipe), failures)
        window.tick(closes)
        completed, failed = sum(w.completed for w in workers), sum(w.errors for w in workers)
        progress(time.time() - started, completed, failed)
    samples = merged(w.samples or Samples() for w in workers)
    seconds = (closes if closes is not None else _last(samples, window.opens)) - window.opens
    return LoadRun(
        samples=samples,
        started=window.opens,
        seconds=max(seconds, 1e-9),
        server=window.meter,
        load_cpu_s=window.load_cpu,
        machine_busy=window.busy / window.total if window.total else 0.0,
        failures=failures,
    )


def _receive(worker: _Worker, failures: list[str]) -> None:
    try:
        message = worker.pipe.recv()
    except EOFError:
        worker.samples = Samples()
        failures.append("a load process died")
        return
    if message[0] == "progress":
        worker.completed, worker.errors = message[1], message[2]
    elif message[0] == "done":
        worker.samples = message[1]
    else:
        worker.samples = Samples()
        failures.append(str(message[1]))


def _cpu(worker: _Worker) -> float:
    pid = worker.process.pid
    try:
        return cpu_seconds(pid) if pid is not None else 0.0
    except OSError:
        return 0.0


def _last(samples: Samples, opens: float) -> float:
    return max(samples.completed_at, default=opens)
