"""What a pending timer costs: runtime.scheduler next to the baselines it is built from.

    .venv/bin/python benchmarks/timer_bench.py [--timers 100000] [--threads 1000] [--repeat 3]

Cases, each run in a fresh interpreter so memory freed by one cannot flatter the next:

- scheduler:  `Scheduler.schedule_once` of N far-future timers, then `cancel()` of all of them
- heapq:      the floor under it, N bare `heapq.heappush` of (deadline, seq, message) tuples, then
              N `heappop` (the cheapest way to empty a heap)
- fire:       N already-due timers delivered to a counting target by the scheduler thread (timed
              from the moment it may start), next to a bare heappop-and-tell loop over as many
- thread:     the design this replaces, one `threading.Timer` per timer, M of them (M << N: each
              is an OS thread)

RSS is the resident set from /proc/self/statm after gc, divided by the number of timers. Rates are
the median of --repeat runs.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from runtime.scheduler import Scheduler, TimerHandle

PAGE = os.sysconf("SC_PAGE_SIZE")
FAR = 3600.0  # seconds: nothing fires while a case runs
WIDTH = 60  # label column of the report


class Counter:
    """A target that only counts, so firing cost is the scheduler's own."""

    def __init__(self, expected: int) -> None:
        self.count = 0
        self.expected = expected
        self.done = threading.Event()

    def tell(self, message: object) -> None:  # noqa: ARG002 - the Target protocol's signature
        self.count += 1
        if self.count == self.expected:
            self.done.set()

    def is_alive(self) -> bool:
        return True


def rss_bytes() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def far_delays(count: int) -> list[float]:
    rng = random.Random(42)  # the same spread of deadlines for every case
    return [FAR + rng.random() * FAR for _ in range(count)]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# --- cases (each runs in its own interpreter) ---------------------------------------------------


def case_scheduler(count: int) -> dict[str, float]:
    delays, target, message = far_delays(count), Counter(count), object()
    handles: list[TimerHandle] = []
    with Scheduler() as scheduler:
        before = rss_bytes()
        add_s = timed(
            lambda: handles.extend(scheduler.schedule_once(d, target, message) for d in delays)
        )
        per_timer = (rss_bytes() - before) / count
        cancel_s = timed(lambda: all(handle.cancel() for handle in handles))
        assert scheduler.pending() == 0
        return {
            "add_per_s": count / add_s,
            "remove_per_s": count / cancel_s,
            "rss_per_timer": per_timer,
            "heap_after": scheduler.heap_size(),
        }


def case_heapq(count: int) -> dict[str, float]:
    delays, message, sequence = far_delays(count), object(), itertools.count()
    heap: list[tuple[float, int, object]] = []

    def push_all() -> None:
        now = time.monotonic()
        for delay in delays:
            heapq.heappush(heap, (now + delay, next(sequence), message))

    before = rss_bytes()
    add_s = timed(push_all)
    per_entry = (rss_bytes() - before) / count
    pop_s = timed(lambda: [heapq.heappop(heap) for _ in range(count)])
    return {"add_per_s": count / add_s, "remove_per_s": count / pop_s, "rss_per_timer": per_entry}


def case_fire(count: int) -> dict[str, float]:
    target, message, release = Counter(count), object(), threading.Event()

    def hold_the_thread() -> None:
        release.wait(120)

    with Scheduler() as scheduler:
        # Hold the thread in a callback while the timers go in, so only delivery is timed.
        scheduler.call_later(0.0, hold_the_thread)
        for _ in range(count):
            scheduler.schedule_once(-1.0, target, message)  # all due at once
        start = time.perf_counter()
        release.set()
        assert target.done.wait(120)
        fire_s = time.perf_counter() - start
    return {"fire_per_s": count / fire_s, "bare_per_s": count / bare_fire(count, message)}


def bare_fire(count: int, message: object) -> float:
    target = Counter(count)
    heap = [(float(i), i, message) for i in range(count)]

    def pop_and_tell() -> None:
        while heap:
            target.tell(heapq.heappop(heap)[2])

    return timed(pop_and_tell)


def case_thread(count: int) -> dict[str, float]:
    timers = [threading.Timer(FAR, lambda: None) for _ in range(count)]

    def start_all() -> None:
        for timer in timers:
            timer.start()

    def cancel_all() -> None:
        for timer in timers:
            timer.cancel()
            timer.join()

    threads_before = threading.active_count()
    before = rss_bytes()
    add_s = timed(start_all)
    per_timer = (rss_bytes() - before) / count
    started = threading.active_count() - threads_before
    return {
        "add_per_s": count / add_s,
        "remove_per_s": count / timed(cancel_all),
        "rss_per_timer": per_timer,
        "threads": started,
    }


CASES: dict[str, Callable[[int], dict[str, float]]] = {
    "scheduler": case_scheduler,
    "heapq": case_heapq,
    "fire": case_fire,
    "thread": case_thread,
}


# --- driver -----------------------------------------------------------------------------------


def run_case(name: str, count: int, repeat: int) -> dict[str, float]:
    runs = [run_once(name, count) for _ in range(repeat)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def run_once(name: str, count: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--case", name, "--count", str(count)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(completed.stdout)
    return result


def report(timers: int, threads: int, repeat: int) -> None:
    sched = run_case("scheduler", timers, repeat)
    heap = run_case("heapq", timers, repeat)
    fire = run_case("fire", timers, repeat)
    thread = run_case("thread", threads, repeat)
    print(
        f"timer_bench: median of {repeat}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'case':<{WIDTH}}{'add/s':>12}{'remove/s':>12}{'RSS/timer':>12}")
    row("Scheduler.schedule_once + cancel", timers, sched)
    row("baseline: heapq.heappush + heappop of tuples", timers, heap)
    row("contrast: threading.Timer start + cancel/join", threads, thread)
    print(f"heap entries left after cancelling all {timers:,}: {sched['heap_after']:.0f}")
    print(f"threads started by {threads:,} threading.Timer: {thread['threads']:.0f}")
    print(
        f"firing {timers:,} due timers: {fire['fire_per_s']:,.0f}/s through the scheduler thread, "
        f"{fire['bare_per_s']:,.0f}/s for a bare heappop-and-tell loop"
    )


def row(label: str, count: int, figures: dict[str, float]) -> None:
    name = f"{label} (n={count:,})"
    print(
        f"{name:<{WIDTH}}{figures['add_per_s']:>12,.0f}{figures['remove_per_s']:>12,.0f}"
        f"{figures['rss_per_timer']:>10,.0f} B"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timers", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(CASES[args.case](args.count)))
    else:
        report(args.timers, args.threads, args.repeat)


if __name__ == "__main__":
    main()
