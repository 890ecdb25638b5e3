"""The actor runtime next to raw pykka and plain asyncio, measured in one run.

    .venv/bin/python benchmarks/runtime_bench.py            # everything (~1-2 min, mostly pykka)
    .venv/bin/python benchmarks/runtime_bench.py --quick    # skip raw pykka's 10k threads

Each measurement runs in a fresh process: 10,000 exiting pykka threads or a 100k-actor heap would
otherwise tax whatever is measured next.

1. fan-in: ACTORS live actors x MESSAGES messages. The driver tells each actor MESSAGES messages
   (round robin), every actor forwards each one to ONE sink actor; timed until the sink has them
   all. (a) runtime.ActorSystem (1 and 2 dispatcher threads), (b) pykka.ThreadingActor (one thread
   per actor), (c) asyncio: one task + asyncio.Queue per actor, one wake-up per message.
2. start 100,000 live actors (on_start ran for all): time and RSS per idle actor.
3. ask round trip from a plain thread to one actor, p50 / p99: runtime vs pykka.
4. why the runtime keeps actors out of pykka's ActorRegistry: its unregister scans a list.

Goals (see DESIGN.md "Concurrency"): fan-in >= 50x pykka and >= 0.5x asyncio; 100k actors in
<= 10 s at <= 8 KiB each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.actor import Actor, Ref
from runtime.system import ActorSystem

ACTORS = 10_000
MESSAGES = 10
TOTAL = ACTORS * MESSAGES


# --- (a) this runtime -----------------------------------------------------------------------------


class Sink(Actor):
    mailbox_size = TOTAL  # every message may be queued here at once: the sink is the bottleneck

    def __init__(self, expected: int, done: threading.Event) -> None:
        super().__init__()
        self.left = expected
        self.done = done

    def on_receive(self, _message: Any) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


class Forwarder(Actor):
    def __init__(self, sink: Ref[Sink]) -> None:
        super().__init__()
        self.sink = sink

    def on_receive(self, message: Any) -> None:
        self.sink.tell(message)


def fan_in_runtime(threads: int) -> float:
    done = threading.Event()
    with ActorSystem(threads=threads) as system:
        sink = system.spawn(Sink, TOTAL, done)
        refs = [system.spawn(Forwarder, sink) for _ in range(ACTORS)]
        _ = [ref.ask("warm") for ref in refs[:1]]  # everyone started before the clock runs
        started = time.perf_counter()
        for i in range(MESSAGES):
            for ref in refs:
                ref.tell(i)
        done.wait(120)
        elapsed = time.perf_counter() - started
    return TOTAL / elapsed


# --- (b) raw pykka --------------------------------------------------------------------------------


class PykkaSink(pykka.ThreadingActor):
    def __init__(self, expected: int, done: threading.Event) -> None:
        super().__init__()
        self.left = expected
        self.done = done

    def on_receive(self, _message: Any) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


class PykkaForwarder(pykka.ThreadingActor):
    # Starting non-daemon threads is O(live threads) in CPython 3.11 (10k: ~2x slower to start);
    # daemon or not changes nothing in how messages flow.
    use_daemon_thread = True

    def __init__(self, sink: pykka.ActorRef[PykkaSink]) -> None:
        super().__init__()
        self.sink = sink

    def on_receive(self, message: Any) -> None:
        self.sink.tell(message)


def fan_in_pykka() -> float:
    done = threading.Event()
    sink = PykkaSink.start(TOTAL, done)
    refs = [PykkaForwarder.start(sink) for _ in range(ACTORS)]
    started = time.perf_counter()
    for i in range(MESSAGES):
        for ref in refs:
            ref.tell(i)
    done.wait(600)
    return TOTAL / (time.perf_counter() - started)


# --- (c) asyncio ----------------------------------------------------------------------------------


async def _fan_in_asyncio() -> float:
    sink: asyncio.Queue[int] = asyncio.Queue()
    queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(ACTORS)]

    async def forward(inbox: asyncio.Queue[int]) -> None:
        while True:
            sink.put_nowait(await inbox.get())

    async def drain() -> None:
        for _ in range(TOTAL):
            await sink.get()

    tasks = [asyncio.create_task(forward(q)) for q in queues]
    await asyncio.sleep(0)
    started = time.perf_counter()
    drained = asyncio.create_task(drain())
    for i in range(MESSAGES):
        for q in queues:
            q.put_nowait(i)
    await drained
    elapsed = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return TOTAL / elapsed


def fan_in_asyncio() -> float:
    return asyncio.run(_fan_in_asyncio())


# --- 100k live actors -----------------------------------------------------------------------------


class Idle(Actor):
    started = 0
    all_started = threading.Event()
    expected = 0

    def on_start(self) -> None:
        type(self).started += 1  # only dispatcher threads run on_start; with threads=1, no race
        if type(self).started == type(self).expected:
            type(self).all_started.set()


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def start_many(count: int) -> tuple[float, float, float]:
    with ActorSystem(threads=1) as system:
        Idle.expected = count
        gc.collect()
        before = _rss()
        began = time.perf_counter()
        refs = [system.spawn(Idle) for _ in range(count)]
        Idle.all_started.wait(120)
        elapsed = time.perf_counter() - began
        gc.collect()
        per_actor = (_rss() - before) / count
        stop_began = time.perf_counter()
        system.shutdown(120)
        stop_s = time.perf_counter() - stop_began
        del refs
    return elapsed, per_actor, stop_s


# --- ask round trip -------------------------------------------------------------------------------


class Echo(Actor):
    def on_receive(self, message: Any) -> Any:
        return message


class PykkaEcho(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return message


def _percentiles(ref: pykka.ActorRef[Any], n: int) -> tuple[float, float]:
    for _ in range(200):
        ref.ask(0)
    samples = []
    for i in range(n):
        began = time.perf_counter()
        ref.ask(i)
        samples.append(time.perf_counter() - began)
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49] * 1e6, cuts[98] * 1e6


def ask_runtime(n: int) -> tuple[float, float]:
    with ActorSystem(threads=1) as system:
        return _percentiles(system.spawn(Echo), n)


def ask_pykka(n: int) -> tuple[float, float]:
    ref = PykkaEcho.start()
    try:
        return _percentiles(ref, n)
    finally:
        ref.stop()


# --- pykka's registry, which this runtime stays out of ----------------------------------------


def pykka_registry(count: int) -> tuple[float, float]:
    """Seconds to register and then unregister `count` refs, in random order, in pykka's
    ActorRegistry (a list: unregister scans it) and in a dict as the runtime keeps them."""
    with ActorSystem(threads=1) as system:
        refs = [system.spawn(Echo) for _ in range(count)]
        order = random.Random(7).sample(refs, count)
        began = time.perf_counter()
        for ref in refs:
            pykka.ActorRegistry.register(ref)
        for ref in order:
            pykka.ActorRegistry.unregister(ref)
        listed = time.perf_counter() - began
        began = time.perf_counter()
        table: dict[Any, None] = {}
        for ref in refs:
            table[ref] = None
        for ref in order:
            del table[ref]
        return listed, time.perf_counter() - began


# --- driver: every measurement in a fresh process, so none inherits another's threads or heap ---

PARTS: dict[str, Callable[[], Any]] = {
    "runtime1": lambda: max(fan_in_runtime(threads=1) for _ in range(3)),
    "runtime2": lambda: max(fan_in_runtime(threads=2) for _ in range(3)),
    "asyncio": lambda: max(fan_in_asyncio() for _ in range(3)),
    "pykka": fan_in_pykka,
    "many": lambda: start_many(MANY),
    "ask": lambda: ask_runtime(ASKS),
    "ask_pykka": lambda: ask_pykka(ASKS),
    "registry": lambda: pykka_registry(REGISTERED),
}
MANY = 100_000
ASKS = 5_000
REGISTERED = 20_000


def measure(part: str) -> Any:
    """Run one part in a child process (this script with --part) and return its result."""
    child = subprocess.run(
        [sys.executable, __file__, "--part", part],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def report(*, with_pykka: bool) -> None:
    versions = f"python {sys.version.split()[0]}, pykka {importlib.metadata.version('pykka')}"
    print(f"{versions}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"\nfan-in: {ACTORS:,} actors x {MESSAGES} messages -> 1 sink (best of 3)")
    one, two, aio = measure("runtime1"), measure("runtime2"), measure("asyncio")
    print(f"  runtime, 1 thread     {one:>10,.0f} msg/s")
    print(f"  runtime, 2 threads    {two:>10,.0f} msg/s")
    print(f"  asyncio               {aio:>10,.0f} msg/s   runtime(1) / asyncio = {one / aio:.2f}x")
    if with_pykka:
        raw = measure("pykka")
        print(
            f"  pykka ThreadingActor  {raw:>10,.0f} msg/s   runtime(1) / pykka = {one / raw:.0f}x"
        )
    elapsed, per_actor, stop_s = measure("many")
    print(f"\nstart {MANY:,} live actors: {elapsed:.2f} s, RSS {per_actor / 1024:.2f} KiB each")
    print(f"  and shut them all down: {stop_s:.2f} s")
    print(f"\nask round trip from a plain thread ({ASKS:,} sequential asks)")
    p50, p99 = measure("ask")
    print(f"  runtime               p50 {p50:7.1f} us   p99 {p99:7.1f} us")
    if with_pykka:
        p50, p99 = measure("ask_pykka")
        print(f"  pykka ThreadingActor  p50 {p50:7.1f} us   p99 {p99:7.1f} us")
    listed, table = measure("registry")
    print(f"\nregister + unregister {REGISTERED:,} refs in random order")
    print(f"  pykka ActorRegistry (list)   {listed:8.3f} s")
    print(f"  dict, as the runtime does    {table:8.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip raw pykka's 10k threads")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
        print(json.dumps(PARTS[args.part]()), flush=True)
        os._exit(0)  # raw pykka's threads are not worth the wait of a clean exit
    report(with_pykka=not args.quick)


if __name__ == "__main__":
    main()
